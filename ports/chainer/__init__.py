"""SqueezeNet in Chainer, built from :mod:`ports.spec`.

A ``chainer.Chain`` whose parameter paths are those of :mod:`ports.formats.chainer`
(``conv1/W``, ``fire2/squeeze/W``, ..., ``conv10/b``), so ``chainer.serializers.save_npz``
and ``load_npz`` exchange files with that codec.  NCHW, OIHW, ceil-mode max pooling
(``cover_all=True``), global average pooling, ``final_conv_padding`` and bypasses
honoured, float32 or float64.

    >>> from ports.chainer import SqueezeNet, load, predict
    >>> model = load("w.npz")                      # any supported format, or Weights
    >>> logits = predict(model, x)                 # [N,3,H,W] -> [N, classes] NumPy

Ceil-mode pooling: Chainer's ``cover_all=True`` output size is
``(size - k + s - 1) // s + 1 = ceil((size - k) / s) + 1``, Caffe's rule.  Caffe and
PyTorch also drop a last window that would start outside the input; with SqueezeNet's
3x3 stride-2 pools and no padding that never happens (``2 * ceil((size - 3) / 2) < size``),
and the overhanging cells are padded with -inf, so the two agree for every size (checked
against ``MaxPool.out_size`` for every input size ``predict`` sees, and in the tests).

Two paths, one function.  With backprop enabled (training, or calling ``model(x)``
directly) every layer is plain Chainer: ``L.Convolution2D``, ``F.relu``,
``F.max_pooling_2d(cover_all=True)``, ``F.concat``, ``F.average``.  Under
``chainer.no_backprop_mode()`` on NumPy arrays (what :func:`predict` uses, together with
``chainer.using_config('train', False)``) two forward-only shortcuts replace Chainer's CPU
kernels, which copy every im2col matrix twice and compute an unused argmax:
:class:`InferenceConv` (``W @ im2col(x)`` per image, bias and ReLU in place) and a
separable strided max for the pools.  The pools are bit-identical; the convolutions agree
to rounding (tested); together about 2x faster on a CPU.  Chainer's iDeep and cuDNN
accelerations play no part on this CPU (iDeep has no Python 3.11 build).
"""

from __future__ import annotations

from functools import lru_cache

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
from chainer import initializers
from chainer.utils import conv as conv_utils

from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check, make
from ..errors import WeightsError
from ..formats.chainer import key_table
from ..spec import Variant

__all__ = ["SqueezeNet", "Fire", "InferenceConv", "conv", "load", "max_pool", "pool_out_size",
           "predict", "to_weights"]


def pool_out_size(size: int, pool: S.MaxPool) -> int:
    """Output side of ``F.max_pooling_2d(..., cover_all=True)`` (Chainer's own formula)."""
    return conv_utils.get_conv_outsize(size, pool.kernel, pool.stride, 0, cover_all=True)


@lru_cache(maxsize=256)
def _check_pool_geometry(variant: Variant, size: int) -> None:
    """Every ``cover_all`` pool of ``variant`` on a ``size`` input gives the spec's side."""
    for layer in variant.layers():
        if isinstance(layer, S.MaxPool):
            ours, spec = pool_out_size(size, layer), layer.out_size(size)
            if ours != spec:  # pragma: no cover - impossible for 3x3 stride-2 pools
                raise RuntimeError(f"{layer.name}: Chainer cover_all gives {ours} on {size}, "
                                   f"the spec {spec}")
            size = spec
        elif isinstance(layer, S.Conv):
            size = layer.out_size(size)


def _inference() -> bool:
    """True where no graph is recorded (``chainer.no_backprop_mode()``, as in
    :func:`predict`): the forward-only fast paths below apply."""
    return not chainer.config.enable_backprop


def max_pool(h, pool: S.MaxPool):
    """``[N,C,H,W]`` -> ``[N,C,H',W']``, output size rounded up (``pool.ceil_mode``).

    With backprop enabled (training) this is ``F.max_pooling_2d(..., cover_all=True)``.
    For inference the same maxima are taken separably, rows then columns, as elementwise
    maxima of the strided window views of the input padded with -inf at the bottom/right
    (``pool.ceil_extra``): several times faster than Chainer's im2col + argmax on a CPU,
    and bit-identical (a max is exact; tested).
    """
    if not (_inference() and pool.ceil_mode):
        return F.max_pooling_2d(h, pool.kernel, pool.stride, pad=0, cover_all=pool.ceil_mode)
    height, width = h.shape[2:]
    extra_h, extra_w = pool.ceil_extra(height), pool.ceil_extra(width)
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


class InferenceConv(chainer.FunctionNode):
    """Forward-only 2-D convolution (+ optional ReLU) for inference on NumPy arrays.

    ``y[n] = W[O, C*k*k] @ im2col(x)[n, C*k*k, H'*W'] + b``: one matrix product per image
    on Chainer's own ``im2col_cpu`` columns (none for a 1x1 conv), bias and ReLU applied in
    place.  ``F.convolution_2d`` on a CPU copies the columns once more into
    ``[N, H', W', C*k*k]`` order for ``tensordot`` and returns a strided NHWC view that
    slows every following layer.  It has no backward: with backprop enabled :func:`conv`
    uses the link itself.
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


def conv(link: L.Convolution2D, h, relu: bool = False):
    """``link(h)``, then ReLU if ``relu``; for inference on NumPy arrays an
    :class:`InferenceConv` (the same convolution with fewer copies)."""
    x = h.array if isinstance(h, chainer.Variable) else h
    if _inference() and isinstance(x, np.ndarray) and isinstance(link.W.array, np.ndarray):
        (y,) = InferenceConv(link.stride, link.pad, relu).apply(
            (np.ascontiguousarray(x), link.W, link.b))
        return y
    y = link(h)
    return F.relu(y) if relu else y


def _conv(c: S.Conv, dtype) -> L.Convolution2D:
    return L.Convolution2D(c.in_channels, c.out_channels, c.kernel, stride=c.stride,
                           pad=c.padding, initialW=initializers.LeCunNormal(dtype=dtype),
                           initial_bias=initializers.Zero(dtype=dtype))


class Fire(chainer.Chain):
    """squeeze -> ReLU -> [expand1x1 -> ReLU, expand3x3 -> ReLU] concatenated on channels
    (expand1x1 first), plus the optional bypass (identity, or the 1x1 conv ``bypass``)
    added after the concatenation, with no ReLU after the sum."""

    def __init__(self, fire: S.Fire, dtype=np.float32) -> None:
        super().__init__()
        self.identity_bypass = fire.bypass == "identity"
        self.conv_bypass = fire.bypass_conv is not None
        with self.init_scope():
            self.squeeze = _conv(fire.squeeze, dtype)
            self.expand1x1 = _conv(fire.expand1x1, dtype)
            self.expand3x3 = _conv(fire.expand3x3, dtype)
            if self.conv_bypass:
                self.bypass = _conv(fire.bypass_conv, dtype)

    def forward(self, x):  # [N,C,H,W] -> [N,C',H,W]
        s = conv(self.squeeze, x, relu=True)
        out = F.concat((conv(self.expand1x1, s, relu=True), conv(self.expand3x3, s, relu=True)),
                       axis=1)
        if self.identity_bypass:
            out = out + x
        elif self.conv_bypass:
            out = out + conv(self.bypass, x)
        return out


class SqueezeNet(chainer.Chain):
    """SqueezeNet for any :class:`ports.spec.Variant`; children ``conv1``, ``fire2`` ..
    ``fire9``, ``conv10``; the forward pass interprets ``variant.layers()`` in order."""

    def __init__(self, version: str = "1_1", num_classes: int = 1000,
                 final_conv_padding: int = 0, bypass: str = "none",
                 dtype="float32") -> None:
        super().__init__()
        self.variant = Variant(version, num_classes, final_conv_padding, bypass)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected float32 or float64, got {self.dtype}")
        self._steps = []
        with self.init_scope():
            for layer in self.variant.layers():
                if isinstance(layer, S.Conv):
                    setattr(self, layer.name, _conv(layer, self.dtype))
                elif isinstance(layer, S.Fire):
                    setattr(self, layer.name, Fire(layer, self.dtype))
                self._steps.append(layer)

    def forward(self, x):  # [N,3,H,W] -> [N, classes]
        h, steps, i = x, self._steps, 0
        while i < len(steps):
            layer = steps[i]
            if isinstance(layer, S.Conv):
                # A ReLU right after a conv is applied with it (in place, for inference).
                relu = i + 1 < len(steps) and isinstance(steps[i + 1], S.ReLU)
                h = conv(getattr(self, layer.name), h, relu=relu)
                i += relu
            elif isinstance(layer, S.Fire):
                h = getattr(self, layer.name)(h)
            elif isinstance(layer, S.ReLU):
                h = F.relu(h)
            elif isinstance(layer, S.MaxPool):
                h = max_pool(h, layer)
            elif isinstance(layer, S.Dropout):
                h = F.dropout(h, layer.rate)  # identity unless chainer.config.train
            elif isinstance(layer, S.GlobalAvgPool):
                h = F.average(h, axis=(2, 3))
            else:  # pragma: no cover - the spec has no other layer kinds
                raise TypeError(f"unknown layer {layer!r}")
            i += 1
        return h

    def load_weights(self, weights: Weights) -> SqueezeNet:
        """Copy canonical weights in (strict: every name and shape checked first)."""
        check(weights, self.variant)
        table = key_table(self.variant)
        params = dict(self.namedparams())
        ours = {p.lstrip("/") for p in params}
        if set(table.values()) != ours:  # the key table and the chain disagree: a bug
            raise WeightsError(f"chainer keys differ: {sorted(set(table.values()) ^ ours)}")
        for name, key in table.items():
            param = params["/" + key]
            param.array[...] = weights.tensors[name].astype(self.dtype)
        return self


def to_weights(model: SqueezeNet, *, preprocessing: str | None = None,
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights; ``preprocessing`` and
    ``source`` default to those of the weights it was loaded from (else ``"none"`` and
    ``"ports.chainer"``)."""
    meta = getattr(model, "loaded_meta", {})
    params = dict(model.namedparams())
    tensors = {name: np.asarray(params["/" + key].array, dtype=np.float32)
               for name, key in key_table(model.variant).items()}
    return make(tensors, model.variant,
                preprocessing=preprocessing or meta.get("preprocessing", "none"),
                source=source or meta.get("source", "ports.chainer"))


def load(source, dtype: str = "float32", *, variant: Variant | None = None) -> SqueezeNet:
    """Model from a weights file of any supported format, or :class:`Weights`.

    ``variant``: the architecture a file must hold; needed for a Chainer ``.npz`` saved by
    Chainer itself (no metadata), whose conv10 padding and identity bypass cannot be told
    from its shapes (see :mod:`ports.formats.chainer`)."""
    from ..formats import read

    weights = source if isinstance(source, Weights) else read(source, variant=variant)
    v = weights.variant
    model = SqueezeNet(v.version, v.num_classes, v.final_conv_padding, v.bypass, dtype)
    model.load_weights(weights)
    model.loaded_meta = dict(weights.meta)
    return model


def predict(model: SqueezeNet, x, batch_size: int = 32) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype."""
    x = as_input(x, model.variant)
    outs = []
    for side in set(x.shape[2:]):
        _check_pool_geometry(model.variant, int(side))
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        for i in range(0, len(x), batch_size):
            batch = np.ascontiguousarray(x[i:i + batch_size], dtype=model.dtype)
            outs.append(np.asarray(model(batch).array))
    return np.concatenate(outs, axis=0)
