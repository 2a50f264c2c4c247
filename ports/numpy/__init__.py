"""The float64 NumPy reference: the oracle every other port is compared to.

Written for clarity, not speed.  NCHW activations, OIHW weights, ceil-mode max pooling.

    >>> from ports import numpy as ref
    >>> model = ref.load("w.safetensors")
    >>> logits = ref.predict(model, x)            # x: [N, 3, H, W] -> [N, num_classes]
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check

__all__ = ["SqueezeNet", "load", "predict", "to_weights", "forward", "activations",
           "loss_and_grads", "train_steps", "dropout"]


class SqueezeNet:
    """A variant plus its parameters (canonical names, OIHW), float64 by default; built
    with zero parameters (copy real ones in with :meth:`load_weights` or use :func:`load`)."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float64") -> None:
        self.variant = _api.variant(version, num_classes, final_conv_padding, bypass)
        self.dtype = _api.dtype(dtype)
        self.params = {k: np.zeros(s, self.dtype) for k, s in self.variant.params().items()}

    def load_weights(self, weights: Weights) -> SqueezeNet:
        check(weights, self.variant)
        self.params = {k: v.astype(self.dtype) for k, v in weights.tensors.items()}
        return self


def load(source, dtype="float64", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model from a weights file (any supported format) or :class:`Weights` (the oracle has
    one path: ``fast`` changes nothing)."""
    return _api.load(lambda v, dt: SqueezeNet(v, dtype=dt), SqueezeNet.load_weights, source,
                     dtype, variant)


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights."""
    return _api.to_weights(model.params, model.variant, "numpy",
                           preprocessing=preprocessing, source=source)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """[N,C,H,W] (*) [O,C,k,k] + [O] -> [N,O,H',W'] by explicit im2col and one matmul."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k = w.shape[-1]
    windows = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, ho, wo = windows.shape[:4]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(n, ho, wo, -1).transpose(0, 3, 1, 2)


def max_pool_ceil(x: np.ndarray, pool: S.MaxPool) -> np.ndarray:
    """Max pool whose output size rounds up: the last windows may overhang bottom/right,
    and overhanging cells never win (padded with -inf)."""
    extra = pool.ceil_extra(x.shape[2]), pool.ceil_extra(x.shape[3])
    x = np.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])), constant_values=-np.inf)
    windows = sliding_window_view(x, (pool.kernel, pool.kernel), axis=(2, 3))
    return windows[:, :, ::pool.stride, ::pool.stride].max(axis=(4, 5))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _keep(name: str, h: np.ndarray) -> np.ndarray:
    return h  # forward's default ``record``: keep nothing


def forward(model: SqueezeNet, x: np.ndarray, record=_keep) -> np.ndarray:
    """[N,3,H,W] -> logits [N, num_classes] (ReLU'd conv10 scores, averaged).  Each named
    output of ``Variant.activation_names()`` passes through ``record(name, array)`` as it is
    computed (what :func:`ports.numpy.trace.activations` collects)."""
    p = model.params

    def conv(c: S.Conv, h: np.ndarray) -> np.ndarray:
        return conv2d(h, p[f"{c.name}.weight"], p[f"{c.name}.bias"], c.stride, c.padding)

    def conv_relu(c: S.Conv, h: np.ndarray) -> np.ndarray:
        return record(c.name, relu(conv(c, h)))

    h = x.astype(model.dtype)
    for layer in model.variant.layers():
        if isinstance(layer, S.Conv):
            h = conv(layer, h)
        elif isinstance(layer, S.ReLU):
            h = record(layer.of, relu(h))
        elif isinstance(layer, S.MaxPool):
            h = record(layer.name, max_pool_ceil(h, layer))
        elif isinstance(layer, S.Fire):
            s = conv_relu(layer.squeeze, h)
            out = np.concatenate([conv_relu(layer.expand1x1, s),
                                  conv_relu(layer.expand3x3, s)], axis=1)
            if layer.bypass == "identity":
                out = out + h
            elif layer.bypass == "conv":
                out = out + record(layer.bypass_conv.name, conv(layer.bypass_conv, h))
            h = record(layer.name, out)
        elif isinstance(layer, S.Dropout):
            pass
        elif isinstance(layer, S.GlobalAvgPool):
            h = record(layer.name, h.mean(axis=(2, 3)))
        else:  # pragma: no cover - the spec has no other layer kinds
            raise TypeError(f"unknown layer {layer!r}")
    return record("logits", h)


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits [N, num_classes] as ``model.dtype``."""
    x = as_input(x, model.variant)
    return np.concatenate([forward(model, b) for b in _api.batches(x, batch_size)])


from .trace import activations  # noqa: E402  (the uniform API, re-exported)
from .train import dropout, loss_and_grads, train_steps  # noqa: E402
