"""Activations of the Chainer port, for the layer trace: what its own forward pass computes,
recorded as it passes (for :class:`ports.chainer.fast.SqueezeNet`, ``load``'s default, the
fused convolution + ReLU and the separable pool of :mod:`ports.chainer.fast`).

    >>> from ports.chainer import load, trace
    >>> acts = trace.activations(load("w.npz"), x)   # {name: NumPy array}, NCHW
"""

from __future__ import annotations

import chainer
import numpy as np

from .. import _api
from .._predict import as_input
from .network import SqueezeNet


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype; ``pool10`` and ``logits`` are ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    wanted, out = set(names), {}

    def keep(name: str, h):
        if name in wanted:
            out[name] = np.array(h.array, copy=True)
        return h

    x = chainer.Variable(np.ascontiguousarray(as_input(x, model.variant), model.dtype))
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        model.forward(x, keep)
    return {n: out[n] for n in names}
