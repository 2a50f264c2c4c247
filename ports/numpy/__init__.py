"""The float64 NumPy reference: the oracle every other port is compared to.  The network
is :mod:`.network`; :mod:`.trace` and :mod:`.train` run its one forward pass.

    >>> from ports import numpy as ref
    >>> model = ref.load("w.safetensors")
    >>> logits = ref.predict(model, x)            # x: [N, 3, H, W] -> [N, num_classes]
"""

from __future__ import annotations

import numpy as np

from .. import _api
from .._predict import as_input
from ..formats.canonical import Weights
from .network import SqueezeNet, conv2d, forward, max_pool_ceil, relu
from .trace import activations
from .train import dropout, loss_and_grads, train_steps

__all__ = ["SqueezeNet", "load", "predict", "to_weights", "forward", "activations",
           "loss_and_grads", "train_steps", "dropout", "conv2d", "max_pool_ceil", "relu"]


def load(source, dtype="float64", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model from a weights file (any supported format) or :class:`Weights` (the oracle has
    one path: ``fast`` changes nothing)."""
    weights = _api.weights(source, variant)
    return SqueezeNet(weights.variant, dtype=dtype).load_weights(weights)


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits [N, num_classes] as ``model.dtype``."""
    x = as_input(x, model.variant)
    return np.concatenate([forward(model, b) for b in _api.batches(x, batch_size)])


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights."""
    return _api.to_weights(model.params, model.variant, "numpy",
                           preprocessing=preprocessing, source=source)
