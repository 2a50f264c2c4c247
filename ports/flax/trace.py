"""Activations of the Flax NNX port, for the layer trace: what the model's own forward
computes, recorded as it passes (for :class:`ports.flax.fast.SqueezeNet`, ``load``'s
default, its tuned layers and, on CPU, its image-by-image head).

    >>> from ports.flax import load, trace
    >>> acts = trace.activations(load("w.safetensors"), x)   # {name: NumPy array}, NCHW
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _api
from .._predict import as_input
from ..layouts import nchw_to_nhwc, nhwc_to_nchw
from .network import SqueezeNet, to_numpy


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype (bfloat16 widened to float32), NCHW; ``pool10``
    and ``logits`` are ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    out: dict[str, jax.Array] = {}

    def keep(name: str, h: jax.Array) -> jax.Array:
        out[name] = h
        return h

    model(jnp.asarray(nchw_to_nhwc(as_input(x, model.variant).astype(model.dtype))), keep)
    return {n: (nhwc_to_nchw if out[n].ndim == 4 else np.array)(to_numpy(out[n]))
            for n in names}
