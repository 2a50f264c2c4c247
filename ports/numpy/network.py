"""SqueezeNet (Iandola et al. 2016) in float64 NumPy: the reference every port is held to.

Written for clarity, not speed.  NCHW activations, OIHW weights, ceil-mode max pooling.
One forward pass serves inference, the layer trace and training: each named activation
(``Variant.activation_names()``) goes through ``record(name, array)`` as it is computed, and
each ReLU's input through ``record(name + ":z", array)`` (training's kinks need it).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import _api
from .. import spec as S
from ..formats.canonical import Weights, check


class SqueezeNet:
    """A variant plus its parameters (canonical names, OIHW), float64 by default; built
    with zero parameters (copy real ones in with :meth:`load_weights` or use ``load``)."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float64") -> None:
        self.variant = _api.variant(version, num_classes, final_conv_padding, bypass)
        self.dtype = _api.dtype(dtype)
        self.params = {k: np.zeros(s, self.dtype) for k, s in self.variant.params().items()}

    def load_weights(self, weights: Weights) -> SqueezeNet:
        check(weights, self.variant)
        self.params = {k: v.astype(self.dtype) for k, v in weights.tensors.items()}
        return self


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


POOL = S.MaxPool("pool")  # every max pool of SqueezeNet: 3x3, stride 2, ceil mode


def max_pool_ceil(x: np.ndarray, pool: S.MaxPool = POOL) -> np.ndarray:
    """3x3 stride 2 max pool whose output size rounds **up** (Caffe): the last windows may
    overhang bottom/right, and overhanging cells never win (padded with -inf)."""
    extra = pool.ceil_extra(x.shape[2]), pool.ceil_extra(x.shape[3])
    x = np.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])), constant_values=-np.inf)
    windows = sliding_window_view(x, (pool.kernel, pool.kernel), axis=(2, 3))
    return windows[:, :, ::pool.stride, ::pool.stride].max(axis=(4, 5))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _keep(name: str, h: np.ndarray) -> np.ndarray:
    return h  # forward's default ``record``: keep nothing


def forward(model: SqueezeNet, x: np.ndarray, record=_keep) -> np.ndarray:
    """[N,3,H,W] -> logits [N, num_classes] (module docstring: ``record``)."""
    p, v = model.params, model.variant

    def conv(name: str, h, stride: int = 1, padding: int = 0) -> np.ndarray:
        return conv2d(h, p[f"{name}.weight"], p[f"{name}.bias"], stride, padding)

    def conv_relu(name: str, h, stride: int = 1, padding: int = 0) -> np.ndarray:
        return record(name, relu(record(f"{name}:z", conv(name, h, stride, padding))))

    def fire(n: int, h: np.ndarray) -> np.ndarray:  # squeeze, expand 1x1 | 3x3, bypass
        s = conv_relu(f"fire{n}.squeeze", h)
        out = np.concatenate([conv_relu(f"fire{n}.expand1x1", s),       # expand1x1 first
                              conv_relu(f"fire{n}.expand3x3", s, padding=1)], axis=1)
        if S.bypass_of(n, v.bypass) == "identity":  # no ReLU after either sum
            out = out + h
        elif S.bypass_of(n, v.bypass) == "conv":
            out = out + record(f"fire{n}.bypass", conv(f"fire{n}.bypass", h))
        return record(f"fire{n}", out)

    _, _, stride = S.STEM[v.version]  # conv1: 1_0 96 7x7, 1_1 64 3x3; stride 2
    h = conv_relu("conv1", x.astype(model.dtype), stride)
    h = record("pool1", max_pool_ceil(h))
    for n in range(2, 10):  # fire2 .. fire9, a max pool after those of POOL_AFTER
        h = fire(n, h)
        if f"fire{n}" in S.POOL_AFTER[v.version]:
            h = record(f"pool{n}", max_pool_ceil(h))
    # drop9: dropout, the identity at inference
    h = conv_relu("conv10", h, padding=v.final_conv_padding)  # Caffe's v1.0 pads 1
    return record("logits", record("pool10", h.mean(axis=(2, 3))))
