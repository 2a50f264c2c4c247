"""SqueezeNet in Keras 3 (:mod:`.network`; TensorFlow, JAX or PyTorch backend), NHWC, HWIO.

``load`` builds it with the tuned layers of :mod:`.fast` unless ``fast=False``; the two
layers Keras lacks are in :mod:`.layers`; :mod:`.trace` and :mod:`.train` as in every port.

    >>> from ports.keras import load, predict
    >>> logits = predict(load("w.safetensors"), x)      # NCHW [N,3,H,W] -> [N, classes]
"""

from __future__ import annotations

import numpy as np

from .. import _api
from .._predict import as_input
from ..formats.canonical import Weights, check
from ..formats.keras import conv_layer_names
from ..layouts import hwio_to_oihw, nchw_to_nhwc, oihw_to_hwio
from . import fast as _fast
from .layers import CeilMaxPooling2D, ExactGlobalAveragePooling2D
from .network import SqueezeNet
from .trace import activations, feed, to_numpy
from .train import dropout, loss_and_grads, train_steps

__all__ = ["SqueezeNet", "CeilMaxPooling2D", "ExactGlobalAveragePooling2D", "load", "fill",
           "predict", "to_weights", "activations", "loss_and_grads", "train_steps", "dropout"]


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model from a weights file of any supported format (``.weights.h5`` included) or
    :class:`Weights`; ``fast``: :class:`ports.keras.fast.SqueezeNet`, else the plain one."""
    weights = _api.weights(source, variant)
    build = _fast.SqueezeNet if fast else SqueezeNet
    return fill(build(weights.variant, dtype=dtype, random_init=False), weights)


def fill(model: SqueezeNet, weights: Weights) -> SqueezeNet:
    """Copy canonical weights in (strict), cast to each layer's dtype; OIHW -> HWIO."""
    check(weights, model.variant)
    for canonical, name in conv_layer_names(model.variant).items():
        model.get_layer(name).set_weights([oihw_to_hwio(weights[f"{canonical}.weight"]),
                                           weights[f"{canonical}.bias"]])
    return model


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights (OIHW)."""
    tensors = {}  # canonical name -> OIHW weight or bias (made float32 by _api.to_weights)
    for canonical, name in conv_layer_names(model.variant).items():
        kernel, bias = model.get_layer(name).get_weights()  # [kh,kw,in,out], [out]
        tensors |= {f"{canonical}.weight": hwio_to_oihw(kernel), f"{canonical}.bias": bias}
    return _api.to_weights(tensors, model.variant, "keras", preprocessing=preprocessing,
                           source=source)


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype (a
    bfloat16 model's as float32).  ``predict_on_batch``: inference mode (dropout off),
    compiled by the backend."""
    x = as_input(x, model.variant)
    return np.concatenate([  # [N,3,H,W] -> [N,H,W,3] -> [N, classes]
        to_numpy(model.predict_on_batch(feed(model, nchw_to_nhwc(b))))
        for b in _api.batches(x, batch_size)])
