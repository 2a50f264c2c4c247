"""SqueezeNet (Iandola et al. 2016) in MXNet Gluon 1.9.1 as the Gluon model zoo's
``squeezenet.py`` writes it: ``features`` (conv1, ReLU, pools, fire2 .. fire9, dropout), then
``output`` (conv10, ReLU, pool, Flatten); NCHW, OIHW, float32 or float64.  Its
``save_parameters`` names are the zoo's (``features.0`` conv1, ``features.K.0.0`` squeeze,
``features.K.1.0.0`` / ``.1.1.0`` expand1x1 / 3x3, ``output.0`` conv10, a bypass conv
``features.K.bypass``: :mod:`ports.formats.mxnet`), as are its global names in ``export``
(``squeezenet0_conv<i>_weight``, by creation order).  Unlike the zoo's: a global average pool
(the zoo's 13x13 one truncates a 227 input's 14x14 map), Caffe's ``final_conv_padding``, the
paper's bypasses.  ``ceil_mode=True`` lacks Caffe's "last window starts inside" clip, which
a 3x3 stride-2 pool without padding never needs (tested)."""

from __future__ import annotations

import numpy as np
from mxnet.gluon import HybridBlock, nn
from mxnet.gluon.contrib.nn import HybridConcurrent

from .. import _api
from .. import spec as S


def _fire_conv(inplanes: int, planes: int, kernel: int, padding: int = 0):
    """The zoo's ``_make_fire_conv``: ``[Conv2D, relu]`` (sized now: ``in_channels``)."""
    out = nn.HybridSequential(prefix="")
    out.add(nn.Conv2D(planes, kernel, padding=padding, in_channels=inplanes),
            nn.Activation("relu"))
    return out


class Fire(nn.HybridSequential):
    """The zoo's ``_make_fire``: ``[squeeze, HybridConcurrent(expand1x1, expand3x3)]`` (children
    "0" and "1", concatenated on channels), plus the paper's optional bypass: ``"identity"``
    or a 1x1 ``"conv"`` (child ``bypass``), added after the ReLUs."""

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int,
                 expand3x3_planes: int, bypass: str | None = None) -> None:
        super().__init__(prefix="")
        squeeze = _fire_conv(inplanes, squeeze_planes, 1)
        expand = HybridConcurrent(axis=1, prefix="")
        expand.add(_fire_conv(squeeze_planes, expand1x1_planes, 1),
                   _fire_conv(squeeze_planes, expand3x3_planes, 3, padding=1))
        self.add(squeeze, expand)
        self.identity_bypass = bypass == "identity"
        if bypass == "conv":
            self.bypass = nn.Conv2D(expand1x1_planes + expand3x3_planes, 1,
                                    in_channels=inplanes)

    def hybrid_forward(self, F, x):  # [N,C,H,W] -> [N,C',H,W]
        out = self[1](self[0](x))
        if self.identity_bypass:
            out = out + x
        elif hasattr(self, "bypass"):
            out = out + self.bypass(x)
        return out


class SqueezeNet(HybridBlock):
    """SqueezeNet ``version`` "1_0" or "1_1", conv10 padded by ``final_conv_padding`` (Caffe's
    v1.0: 1), the paper's ``bypass`` ("none", "simple", "complex"); ``net.variant``.
    Uninitialised, as in Gluon: ``initialize()``, ``load_parameters`` (into float64:
    ``cast_dtype=True``) or :func:`ports.mxnet.fill`."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32") -> None:
        super().__init__()
        self.variant = v = _api.variant(version, num_classes, final_conv_padding, bypass)

        def fire(n: int, inplanes: int) -> Fire:  # squeeze, expand1x1, expand3x3 planes
            return Fire(inplanes, *S.FIRE_FILTERS[n], S.bypass_of(n, v.bypass))

        def pool() -> nn.MaxPool2D:  # 3x3 stride 2, the output size rounded up (Caffe)
            return nn.MaxPool2D(3, 2, ceil_mode=True)

        with self.name_scope():  # blocks made in this order: conv<i> counts conv1 .. conv10
            self.features = nn.HybridSequential(prefix="")
            if v.version == "1_0":
                self.features.add(
                    nn.Conv2D(96, 7, strides=2, in_channels=3), nn.Activation("relu"), pool(),
                    fire(2, 96), fire(3, 128), fire(4, 128), pool(),
                    fire(5, 256), fire(6, 256), fire(7, 384), fire(8, 384), pool(),
                    fire(9, 512))
            else:
                self.features.add(
                    nn.Conv2D(64, 3, strides=2, in_channels=3), nn.Activation("relu"), pool(),
                    fire(2, 64), fire(3, 128), pool(),
                    fire(4, 128), fire(5, 256), pool(),
                    fire(6, 256), fire(7, 384), fire(8, 384), fire(9, 512))
            self.features.add(nn.Dropout(0.5))
            self.output = nn.HybridSequential(prefix="")
            self.output.add(
                nn.Conv2D(v.num_classes, 1, padding=v.final_conv_padding, in_channels=512),
                nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Flatten())
        self.cast(_api.dtype(dtype).name)

    def hybrid_forward(self, F, x):  # [N,3,H,W] -> [N, classes]
        return self.output(self.features(x))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(next(iter(self.collect_params().values())).dtype)

    def structural_params(self) -> dict:  # name as in save_parameters -> Parameter
        return self._collect_params_with_prefix()
