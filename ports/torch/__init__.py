"""SqueezeNet in PyTorch (:mod:`.network`, torchvision's layout and keys).

    >>> from ports.torch import SqueezeNet, load, predict
    >>> model = load("w.safetensors")               # architecture from the metadata
    >>> logits = predict(model, x)                  # [N,3,H,W] -> [N, classes] NumPy
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _api
from .._predict import as_input
from ..formats.canonical import Weights, check
from ..formats.torch import key_table
from .network import Fire, SqueezeNet
from .trace import activations, to_numpy
from .train import dropout, loss_and_grads, train_steps

__all__ = ["SqueezeNet", "Fire", "load", "fill", "predict", "to_weights", "activations",
           "loss_and_grads", "train_steps", "dropout"]


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model (eval mode) from a weights file of any supported format, or :class:`Weights`.
    (``fast`` changes nothing: the bench's faster torch modes wrap this same module.)"""
    weights = _api.weights(source, variant)
    return fill(SqueezeNet(weights.variant, dtype=dtype), weights).eval()


def fill(model: SqueezeNet, weights: Weights) -> SqueezeNet:
    """Copy canonical weights into ``model`` under torchvision's keys (strict)."""
    check(weights, model.variant)
    table, dtype = key_table(model.variant), next(model.parameters()).dtype
    model.load_state_dict({table[k]: torch.from_numpy(np.array(v)).to(dtype)
                           for k, v in weights.tensors.items()}, strict=True)
    return model


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype
    (a bfloat16 model's as float32)."""
    x = as_input(x, model.variant)
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        return np.concatenate([to_numpy(model(torch.from_numpy(np.ascontiguousarray(b))
                                              .to(dtype)))
                               for b in _api.batches(x, batch_size)])


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights."""
    state = model.state_dict()
    tensors = {k: state[key].detach().cpu().float().numpy()
               for k, key in key_table(model.variant).items()}
    return _api.to_weights(tensors, model.variant, "torch", preprocessing=preprocessing,
                           source=source)
