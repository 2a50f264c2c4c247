"""Activations of the Keras port, for the layer trace: the outputs of the model's own layers,
read from its functional graph.

    >>> from ports.keras import load, trace
    >>> acts = trace.activations(load("w.safetensors"), x)   # {name: NumPy array}, NCHW

A ``keras.Function`` from the model's input to the named layers' outputs runs the very layer
objects ``predict`` runs (a convolution's ReLU is its ``activation="relu"``).  Where the fast
model's ``call`` maps its head over the images (JAX/CPU), so does the trace: the head's
outputs come from that slice of the graph mapped over the images, the rest batched.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..layouts import nchw_to_nhwc, nhwc_to_nchw
from . import fast
from .network import SqueezeNet


def to_numpy(a) -> np.ndarray:
    """A backend tensor as NumPy in its dtype; bfloat16 (which NumPy lacks) widened to
    float32."""
    return _api.widened(ops.convert_to_numpy(a))


def feed(model: SqueezeNet, x_nhwc: np.ndarray) -> np.ndarray:
    """Float NHWC input in the model's dtype (bfloat16 through ml_dtypes, which Keras
    requires)."""
    dtype = model.inputs[0].dtype
    if dtype == "bfloat16":
        import ml_dtypes

        return x_nhwc.astype(ml_dtypes.bfloat16)
    return x_nhwc.astype(dtype)


def layer_names(variant: S.Variant) -> dict[str, str]:
    """Activation name -> the Keras layer whose output it is, in network order: a conv's
    ReLU (conv1 -> ``relu1``; fire convolutions: their own ``activation``), a Fire's sum or
    concatenation, and the global pool for ``logits``."""
    def layer(name: str) -> str:
        if name in ("conv1", "conv10"):
            return "relu" + name[4:]
        if name.startswith("fire") and "." not in name:  # a Fire module's output
            return name + ("_add" if S.bypass_of(int(name[4:]), variant.bypass) else "_concat")
        return "pool10" if name == "logits" else name.replace(".", "_")
    return {name: layer(name) for name in variant.activation_names()}


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype (bfloat16 widened to float32); NCHW, ``pool10``
    and ``logits`` ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    table = layer_names(model.variant)
    x = feed(model, nchw_to_nhwc(as_input(x, model.variant)))
    wanted = {n: model.get_layer(table[n]).output for n in names}
    cut = model.mapped_head(len(x)) if isinstance(model, fast.SqueezeNet) else None
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
        a = to_numpy(got[n])
        out[n] = nhwc_to_nchw(a) if a.ndim == 4 else a.copy()  # [N,H,W,C] -> [N,C,H,W]
    return out
