"""Forward-only shortcuts for Chainer inference on a CPU, and the chain that uses them.

:class:`SqueezeNet` here is :class:`ports.chainer.SqueezeNet` (the same links, the same
parameter paths) whose forward pass, where no graph is recorded on NumPy arrays
(``chainer.no_backprop_mode()``, as in :func:`ports.chainer.predict`), replaces two of
Chainer's CPU kernels, which copy every im2col matrix twice and compute an unused argmax:

* :class:`InferenceConv`: convolution + optional ReLU as ``W @ im2col(x)`` per image, bias
  and ReLU in place; equal to ``F.relu(F.convolution_2d(...))`` to rounding;
* :func:`max_pool`: the ceil-mode pool as elementwise maxima of strided views of the input
  padded with -inf, rows then columns; bit-identical to ``F.max_pooling_2d(cover_all=True)``.

Together about 2x faster than the plain network.  With backprop enabled (training), or on
another device, it is the plain network.  It is what :func:`ports.chainer.load` returns
unless ``fast=False``.  Chainer's own iDeep and cuDNN accelerations play no part on this
CPU (iDeep has no Python 3.11 build).
"""

from __future__ import annotations

import chainer
import chainer.functions as F
import numpy as np
from chainer.utils import conv as conv_utils

from .. import spec as S
from .network import SqueezeNet as Reference

__all__ = ["SqueezeNet", "InferenceConv", "conv", "max_pool"]


class InferenceConv(chainer.FunctionNode):
    """Forward-only 2-D convolution (+ optional ReLU) on NumPy arrays.

    ``y[n] = W[O, C*k*k] @ im2col(x)[n, C*k*k, H'*W'] + b``: one matrix product per image
    on Chainer's own ``im2col_cpu`` columns (none for a 1x1 conv), bias and ReLU applied in
    place.  ``F.convolution_2d`` on a CPU copies the columns once more into
    ``[N, H', W', C*k*k]`` order for ``tensordot`` and returns a strided NHWC view that
    slows every following layer.
    """

    def __init__(self, stride: tuple, pad: tuple, relu: bool) -> None:
        self.stride, self.pad, self.relu = tuple(stride), tuple(pad), relu

    def forward_cpu(self, inputs):
        x, w, b = inputs
        n, c, height, width = x.shape
        out_c, _, kh, kw = w.shape
        if (kh, kw) + self.stride + self.pad == (1, 1, 1, 1, 0, 0):
            out_h, out_w = height, width
            col = x.reshape(n, c, height * width)
        else:
            col = conv_utils.im2col_cpu(x, kh, kw, *self.stride, *self.pad)
            out_h, out_w = col.shape[4:]                    # [N, C, kh, kw, H', W']
            col = col.reshape(n, c * kh * kw, out_h * out_w)
        y = np.matmul(w.reshape(out_c, c * kh * kw), col)  # [N, O, H'*W']
        y += b.reshape(out_c, 1)
        if self.relu:
            np.maximum(y, 0, out=y)
        return y.reshape(n, out_c, out_h, out_w),

    def backward(self, indexes, grad_outputs):  # pragma: no cover
        raise NotImplementedError("InferenceConv is forward-only; enable backprop to train")


def conv(link: chainer.links.Convolution2D, h, relu: bool = False) -> chainer.Variable:
    """``link(h)``, then ReLU if ``relu``, as an :class:`InferenceConv`."""
    x = np.ascontiguousarray(chainer.as_array(h))
    (y,) = InferenceConv(link.stride, link.pad, relu).apply((x, link.W, link.b))
    return y


def max_pool(h, pool: S.MaxPool) -> chainer.Variable:
    """``[N,C,H,W]`` -> ``[N,C,H',W']``, ``H' = pool.out_size(H)``: the maxima taken
    separably, rows then columns, over strided window views of the input padded with -inf
    at the bottom/right (``pool.ceil_extra``) so that overhanging cells never win."""
    height, width = h.shape[2:]
    extra_h, extra_w = max(pool.ceil_extra(height), 0), max(pool.ceil_extra(width), 0)
    if extra_h or extra_w:
        h = F.pad(h, ((0, 0), (0, 0), (0, extra_h), (0, extra_w)), "constant",
                  constant_values=-np.inf)
    k, s = pool.kernel, pool.stride
    span_h = (pool.out_size(height) - 1) * s + 1
    span_w = (pool.out_size(width) - 1) * s + 1
    rows = h[:, :, 0:span_h:s]
    for i in range(1, k):
        rows = F.maximum(rows, h[:, :, i:i + span_h:s])        # [N, C, H', W + extra]
    out = rows[:, :, :, 0:span_w:s]
    for j in range(1, k):
        out = F.maximum(out, rows[:, :, :, j:j + span_w:s])    # [N, C, H', W']
    return out


class SqueezeNet(Reference):
    """:class:`ports.chainer.SqueezeNet` whose convolutions and pools are the shortcuts above
    where no graph is recorded on NumPy arrays on the CPU, and the plain ones elsewhere."""

    def conv(self, link: chainer.links.Convolution2D, h, relu: bool = False):
        return conv(link, h, relu) if _shortcut(h) else super().conv(link, h, relu)

    def pool(self, h):
        return max_pool(h, S.MaxPool("pool")) if _shortcut(h) else super().pool(h)


def _shortcut(h) -> bool:  # no graph recorded, a NumPy array (on the CPU)
    return not chainer.config.enable_backprop and isinstance(chainer.as_array(h), np.ndarray)
