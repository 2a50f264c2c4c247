"""SqueezeNet (Iandola et al. 2016) in Chainer 7.8.1: ``conv1``, ``fire2`` .. ``fire9`` (each a
:class:`Fire`), ``conv10``; parameter paths ``conv1/W``, ``fire2/squeeze/W``, ..., ``conv10/b``
(``chainer.serializers.save_npz`` files).  NCHW, OIHW, float32 or float64.

Max pools: ``F.max_pooling_2d(cover_all=True)`` is Caffe's ceil size (a 3x3 stride-2 pool
never starts a window outside the input, where the two would differ; tested).  Each named
activation passes through ``record(name, h)`` (the layer trace); :mod:`.fast` overrides
:meth:`SqueezeNet.conv` and :meth:`SqueezeNet.pool` with forward-only kernels.
"""

from __future__ import annotations

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import initializers

from .. import _api
from .. import spec as S


def _conv(in_c: int, out_c: int, kernel: int, dtype, stride: int = 1, pad: int = 0):
    return L.Convolution2D(in_c, out_c, kernel, stride=stride, pad=pad,
                           initialW=initializers.LeCunNormal(dtype=dtype),
                           initial_bias=initializers.Zero(dtype=dtype))


def _keep(name: str, h):
    return h  # forward's default ``record``: keep nothing


class Fire(chainer.Chain):
    """The links of a Fire module: ``squeeze`` 1x1, ``expand1x1``, ``expand3x3`` (padding 1)
    and, for a ``"conv"`` bypass, the 1x1 ``bypass`` (:meth:`SqueezeNet.fire` runs it)."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int,
                 bypass: str | None = None, dtype="float32") -> None:
        super().__init__()
        self.identity_bypass, self.conv_bypass = bypass == "identity", bypass == "conv"
        with self.init_scope():
            self.squeeze = _conv(inplanes, squeeze, 1, dtype)
            self.expand1x1 = _conv(squeeze, expand1x1, 1, dtype)
            self.expand3x3 = _conv(squeeze, expand3x3, 3, dtype, pad=1)
            if self.conv_bypass:
                self.bypass = _conv(inplanes, expand1x1 + expand3x3, 1, dtype)


class SqueezeNet(chainer.Chain):
    """SqueezeNet ``version`` "1_0" or "1_1", conv10 padded by ``final_conv_padding`` (Caffe's
    v1.0: 1), the paper's ``bypass`` ("none", "simple", "complex"); ``model.variant``."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32") -> None:
        super().__init__()
        self.variant = v = _api.variant(version, num_classes, final_conv_padding, bypass)
        self.dtype = dt = _api.dtype(dtype)
        filters, kernel, stride = S.STEM[v.version]  # 1_0: 96 7x7 /2, 1_1: 64 3x3 /2
        with self.init_scope():
            self.conv1 = _conv(3, filters, kernel, dt, stride=stride)
            inplanes = filters
            for n in range(2, 10):  # squeeze, expand1x1, expand3x3 of the paper's table
                squeeze, e1, e3 = S.FIRE_FILTERS[n]
                setattr(self, f"fire{n}", Fire(inplanes, squeeze, e1, e3,
                                               S.bypass_of(n, v.bypass), dt))
                inplanes = e1 + e3
            self.conv10 = _conv(512, v.num_classes, 1, dt, pad=v.final_conv_padding)

    def forward(self, x, record=_keep):  # [N,3,H,W] -> [N, classes]
        h = record("pool1", self.pool(record("conv1", self.conv(self.conv1, x, relu=True))))
        for n in range(2, 10):  # a max pool after the fires of POOL_AFTER
            h = record(f"fire{n}", self.fire(n, h, record))
            if f"fire{n}" in S.POOL_AFTER[self.variant.version]:
                h = record(f"pool{n}", self.pool(h))
        h = F.dropout(h, S.DROPOUT)  # drop9: the identity unless chainer.config.train
        h = record("conv10", self.conv(self.conv10, h, relu=True))
        return record("logits", record("pool10", F.average(h, axis=(2, 3))))

    def fire(self, n: int, x, record=_keep):  # squeeze, expand 1x1 | 3x3, bypass
        f, name = self[f"fire{n}"], f"fire{n}"
        s = record(f"{name}.squeeze", self.conv(f.squeeze, x, relu=True))
        out = F.concat((record(f"{name}.expand1x1", self.conv(f.expand1x1, s, relu=True)),
                        record(f"{name}.expand3x3", self.conv(f.expand3x3, s, relu=True))))
        if f.identity_bypass:  # no ReLU after either sum
            return out + x
        if f.conv_bypass:
            return out + record(f"{name}.bypass", self.conv(f.bypass, x))
        return out

    def conv(self, link: L.Convolution2D, h, relu: bool = False):
        return F.relu(link(h)) if relu else link(h)

    def pool(self, h):  # 3x3 stride 2, the output size rounded up (Caffe)
        return F.max_pooling_2d(h, 3, 2, cover_all=True)
