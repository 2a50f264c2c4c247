"""Activations of the Keras port, for the layer trace: the outputs of the model's own layers,
read from its functional graph.

    >>> from ports.keras import load, trace
    >>> acts = trace.activations(load("w.safetensors"), x)   # {name: NumPy array}, NCHW

A ``keras.Function`` from the model's input to the named layers' outputs runs the very layer
objects ``predict`` runs (the tuned ones of :mod:`ports.keras.fast` on the fast model; each
convolution's ReLU is its ``activation="relu"``, so ``fireN.squeeze`` etc. are after it).
Such a function is plain graph execution: it would skip what the fast model's own ``call``
adds on JAX/CPU, the layers through the second pool run image by image.  So the trace
follows the model where its ``call`` does: the head's outputs come from that same slice of
the graph mapped over the images, the rest from the batched tail.  Nothing is changed.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..formats.keras import layer_name
from ..layouts import nchw_to_nhwc, nhwc_to_nchw
from . import SqueezeNet, fast


def layer_names(variant: S.Variant) -> dict[str, str]:
    """Activation name -> the Keras layer whose output it is, in network order."""
    out: dict[str, str] = {}
    for layer in variant.layers():
        if isinstance(layer, S.ReLU):
            out[layer.of] = layer.name
        elif isinstance(layer, S.MaxPool):
            out[layer.name] = layer.name
        elif isinstance(layer, S.Fire):
            out |= {c.name: layer_name(c.name) for c in layer.convs()}
            out[layer.name] = f"{layer.name}_add" if layer.bypass else f"{layer.name}_concat"
        elif isinstance(layer, S.GlobalAvgPool):
            out |= {layer.name: layer.name, "logits": layer.name}  # the model's output
    return out


def _per_image_cut(model: SqueezeNet, n: int) -> str | None:
    """The last layer :meth:`ports.keras.fast.SqueezeNet.call` maps over the images for a
    batch of ``n`` (JAX on CPU), else ``None``: the whole graph runs batched."""
    if not (isinstance(model, fast.SqueezeNet) and fast.BACKEND == "jax" and n > 1
            and str(keras.distribution.list_devices()[0]).startswith("cpu")):
        return None
    return model.variant.layers()[fast.per_image_head(model.variant) - 1].name


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype; NCHW, ``pool10`` and ``logits`` ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    table = layer_names(model.variant)
    x = nchw_to_nhwc(as_input(x, model.variant)).astype(model.inputs[0].dtype)
    wanted = {n: model.get_layer(table[n]).output for n in names}
    cut = _per_image_cut(model, len(x))
    if cut is None:
        values = keras.Function(model.input, list(wanted.values()))(x)
        got = dict(zip(wanted, values))
    else:
        position = {layer.name: i for i, layer in enumerate(model.layers)}
        head = [n for n in names if position[table[n]] <= position[cut]]
        cut_out = model.get_layer(cut).output
        head_fn = keras.Function(model.input, [cut_out] + [wanted[n] for n in head])
        tail = [n for n in names if n not in head]
        per_image = ops.map(lambda xi: [h[0] for h in head_fn(xi[None])], x)  # as call does
        got = dict(zip(head, per_image[1:]))
        if tail:
            got |= zip(tail, keras.Function(cut_out, [wanted[n] for n in tail])(per_image[0]))
    out = {}
    for n in names:
        a = np.asarray(ops.convert_to_numpy(got[n]))
        out[n] = nhwc_to_nchw(a) if a.ndim == 4 else a.copy()  # [N,H,W,C] -> [N,C,H,W]
    return out
