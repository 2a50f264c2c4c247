"""SqueezeNet in Chainer 7.8.1 (:mod:`.network`; parameter paths ``conv1/W``,
``fire2/squeeze/W``, ..., as ``chainer.serializers.save_npz`` writes them).  ``load`` returns,
unless ``fast=False``, the same chain with forward-only shortcuts for inference
(:mod:`.fast`: fused conv + ReLU and a separable max pool, tested equal, about 2x faster on
a CPU); with backprop enabled it computes exactly the plain network.

    >>> from ports.chainer import SqueezeNet, load, predict
    >>> model = load("w.npz")                      # any supported format, or Weights
    >>> logits = predict(model, x)                 # [N,3,H,W] -> [N, classes] NumPy
"""

from __future__ import annotations

import chainer
import numpy as np

from .. import _api
from .._predict import as_input
from ..formats.canonical import Weights, check
from ..formats.chainer import key_table
from . import fast as _fast
from .network import Fire, SqueezeNet
from .trace import activations
from .train import dropout, loss_and_grads, train_steps

__all__ = ["SqueezeNet", "Fire", "load", "fill", "predict", "to_weights", "activations",
           "loss_and_grads", "train_steps", "dropout"]


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model from a weights file of any supported format, or :class:`Weights`.  ``variant``:
    needed for an ``.npz`` saved by Chainer itself, whose conv10 padding and identity bypass
    its shapes cannot tell (:mod:`ports.formats.chainer`)."""
    weights = _api.weights(source, variant)
    return fill((_fast.SqueezeNet if fast else SqueezeNet)(weights.variant, dtype=dtype), weights)


def fill(model: SqueezeNet, weights: Weights) -> SqueezeNet:
    """Copy canonical weights into ``model`` under its parameter paths (strict)."""
    check(weights, model.variant)
    params = {path.lstrip("/"): p for path, p in model.namedparams()}
    for name, key in key_table(model.variant).items():
        params[key].array[...] = weights.tensors[name]
    return model


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype."""
    x = as_input(x, model.variant)
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        return np.concatenate([model(np.ascontiguousarray(b, model.dtype)).array
                               for b in _api.batches(x, batch_size)])


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights."""
    params = dict(model.namedparams())
    tensors = {name: params["/" + key].array for name, key in key_table(model.variant).items()}
    return _api.to_weights(tensors, model.variant, "chainer", preprocessing=preprocessing,
                           source=source)
