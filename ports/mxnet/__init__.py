"""SqueezeNet in MXNet Gluon (:mod:`.network`, the Gluon model zoo's layout and names).

    >>> from ports.mxnet import SqueezeNet, load, predict
    >>> net = load("w.safetensors")                 # hybridized; architecture from the file
    >>> logits = predict(net, x)                    # [N,3,H,W] -> [N, classes] NumPy
"""

from __future__ import annotations

import mxnet as mx
import numpy as np

from .. import _api
from .._predict import as_input
from ..formats.canonical import Weights, check
from ..formats.mxnet import key_table
from .network import Fire, SqueezeNet
from .trace import activations
from .train import dropout, loss_and_grads, train_steps

__all__ = ["SqueezeNet", "Fire", "load", "fill", "predict", "to_weights", "activations",
           "loss_and_grads", "train_steps", "dropout"]


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Hybridized net from a weights file of any supported format, or :class:`Weights`.
    (``fast`` changes nothing: the bench's MKLDNN mode is ``optimize_for`` on this net.)"""
    weights = _api.weights(source, variant)
    net = fill(SqueezeNet(weights.variant, dtype=dtype), weights)
    net.hybridize()
    return net


def fill(net: SqueezeNet, weights: Weights) -> SqueezeNet:
    """Copy canonical weights into ``net`` under the zoo's names, in its dtype (strict:
    every name and shape checked first); initialises it on the CPU if need be."""
    check(weights, net.variant)
    net.initialize(mx.init.Zero(), ctx=mx.cpu(), force_reinit=True)
    params = net.structural_params()
    for canonical, key in key_table(net.variant).items():
        params[key].set_data(mx.nd.array(weights.tensors[canonical], dtype=params[key].dtype))
    return net


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the net's dtype."""
    x = as_input(x, model.variant)
    return np.concatenate([model(mx.nd.array(b, dtype=model.dtype)).asnumpy()
                           for b in _api.batches(x, batch_size)])


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The net's parameters as canonical float32 weights."""
    params = model.structural_params()
    tensors = {k: params[key].data().asnumpy().astype(np.float32)
               for k, key in key_table(model.variant).items()}
    return _api.to_weights(tensors, model.variant, "mxnet", preprocessing=preprocessing,
                           source=source)
