"""Activations of the NumPy reference, for the layer trace: the values its own
:func:`~ports.numpy.forward` computes, recorded as they pass.

    >>> from ports.numpy import load, trace
    >>> acts = trace.activations(load("w.safetensors"), x)   # {name: array}, network order
    >>> acts["fire2.squeeze"].shape                          # NCHW, [N, C] after pool10
"""

from __future__ import annotations

import numpy as np

from .. import _api
from .._predict import as_input
from .network import SqueezeNet, forward


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for every name of ``model.variant.activation_names()`` (or those in
    ``layers``), in network order, in the model's dtype."""
    names = _api.activation_names(model.variant, layers)
    wanted, out = set(names), {}

    def record(name: str, h: np.ndarray) -> np.ndarray:
        if name in wanted:
            out[name] = np.array(h, copy=True)
        return h

    forward(model, as_input(x, model.variant), record)
    return {n: out[n] for n in names}
