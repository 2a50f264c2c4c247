"""Activations of the Flax NNX port, for the layer trace: the model's own layers, applied
one spec layer at a time with the method its forward uses (``SqueezeNet.run``).

    >>> from ports.flax import load, trace
    >>> acts = trace.activations(load("w.safetensors"), x)   # {name: NumPy array}, NCHW

Inside each Fire the values of its own convolutions are kept, applied in the order its
``__call__`` applies them (squeeze + ReLU, then expand1x1 / expand3x3 + ReLU, the bypass
conv without one); the Fire's output is what the Fire itself returns.  On CPU the fast
model maps its first layers over the images (:func:`ports.flax.fast.per_image_head`), and so
does the trace.  Nothing is stored on the model: ``predict`` is unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..layouts import nchw_to_nhwc, nhwc_to_nchw
from . import SqueezeNet


def _fire(fire: nnx.Module, layer: S.Fire, h: jax.Array) -> dict[str, jax.Array]:
    """The Fire's inner activations, by its own convolutions (NHWC)."""
    s = nnx.relu(fire.squeeze(h))
    out = {layer.squeeze.name: s, layer.expand1x1.name: nnx.relu(fire.expand1x1(s)),
           layer.expand3x3.name: nnx.relu(fire.expand3x3(s))}
    if layer.bypass_conv is not None:
        out[layer.bypass_conv.name] = fire.bypass(h)
    return out


def _record(model: SqueezeNet, layers: list[S.Layer],
            h: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``layers`` applied to NHWC ``h`` by ``model.run``, one at a time: (output, {name:
    activation}) for every activation they produce."""
    out: dict[str, jax.Array] = {}
    for layer in layers:
        if isinstance(layer, S.Fire):
            out.update(_fire(getattr(model, layer.name), layer, h))
        h = model.run([layer], h)
        if isinstance(layer, S.ReLU):
            out[layer.of] = h
        elif isinstance(layer, (S.MaxPool, S.Fire, S.GlobalAvgPool)):
            out[layer.name] = h
    return h, out


def _mapped_head(model: SqueezeNet, n: int) -> int:
    """How many leading layers the model's own forward maps over ``n`` images (the fast
    model on CPU; see :class:`ports.flax.fast.SqueezeNet`), else 0."""
    from . import fast

    if isinstance(model, fast.SqueezeNet) and n > 1 and jax.default_backend() == "cpu":
        return fast.per_image_head(model.variant.layers())
    return 0


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype, NCHW; ``pool10`` and ``logits`` are ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    x = nchw_to_nhwc(as_input(x, model.variant).astype(model.dtype, copy=False))
    h, spec_layers = jnp.asarray(x), model.variant.layers()
    head = _mapped_head(model, len(h))
    acts: dict[str, jax.Array] = {}
    if head:  # image by image, as the model's forward: [N, 1, ...] stacked, then [N, ...]
        h, mapped = jax.lax.map(lambda xi: _record(model, spec_layers[:head], xi[None]), h)
        h = h[:, 0]
        acts.update({k: v[:, 0] for k, v in mapped.items()})
    h, rest = _record(model, spec_layers[head:], h)
    acts.update(rest, logits=h)
    return {n: (nhwc_to_nchw if acts[n].ndim == 4 else np.array)(np.asarray(acts[n]))
            for n in names}
