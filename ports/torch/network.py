"""SqueezeNet (Iandola et al. 2016) in PyTorch as torchvision writes it: a Fire module, one
``features`` per version, a classifier; torchvision's ``state_dict()`` keys (``features.0.weight``,
``features.3.squeeze.weight``, ``classifier.1.weight``; a complex bypass: ``features.K.bypass``)."""

from __future__ import annotations

import torch
from torch import nn

from .. import _api
from .. import spec as S


class Fire(nn.Module):
    """squeeze 1x1 + ReLU -> [expand1x1 + ReLU, expand3x3 + ReLU] on channels, plus the
    optional bypass (``"identity"`` or a 1x1 ``"conv"``, no ReLU after the sum)."""

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int,
                 expand3x3_planes: int, bypass: str | None = None) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.identity_bypass = bypass == "identity"
        if bypass == "conv":
            self.bypass = nn.Conv2d(inplanes, expand1x1_planes + expand3x3_planes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N,C,H,W] -> [N,C',H,W]
        s = self.squeeze_activation(self.squeeze(x))
        out = torch.cat([self.expand1x1_activation(self.expand1x1(s)),
                         self.expand3x3_activation(self.expand3x3(s))], 1)
        if self.identity_bypass:
            out = out + x
        elif hasattr(self, "bypass"):
            out = out + self.bypass(x)
        return out


class SqueezeNet(nn.Module):
    """SqueezeNet ``version`` "1_0" or "1_1", conv10 padded by ``final_conv_padding`` (Caffe's
    v1.0: 1), the paper's ``bypass`` ("none", "simple", "complex"); ``model.variant``."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32") -> None:
        super().__init__()
        self.variant = v = _api.variant(version, num_classes, final_conv_padding, bypass)

        def fire(n: int, inplanes: int) -> Fire:  # squeeze, expand1x1, expand3x3 planes
            return Fire(inplanes, *S.FIRE_FILTERS[n], S.bypass_of(n, v.bypass))

        def pool() -> nn.MaxPool2d:  # 3x3 stride 2, the output size rounded up (Caffe)
            return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)

        if v.version == "1_0":
            self.features = nn.Sequential(
                nn.Conv2d(3, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True), pool(),
                fire(2, 96), fire(3, 128), fire(4, 128), pool(),
                fire(5, 256), fire(6, 256), fire(7, 384), fire(8, 384), pool(),
                fire(9, 512))
        else:
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True), pool(),
                fire(2, 64), fire(3, 128), pool(),
                fire(4, 128), fire(5, 256), pool(),
                fire(6, 256), fire(7, 384), fire(8, 384), fire(9, 512))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Conv2d(512, v.num_classes, kernel_size=1, padding=v.final_conv_padding),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)))
        self.to(getattr(torch, _api.dtype_name(dtype)))  # float32, float64, bfloat16

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N,3,H,W] -> [N, classes]
        return torch.flatten(self.classifier(self.features(x)), 1)
