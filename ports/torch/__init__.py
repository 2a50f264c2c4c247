"""SqueezeNet in PyTorch, built from :mod:`ports.spec`.

``state_dict()`` keys equal torchvision's (``features.0.weight``, ``features.3.squeeze.weight``,
..., ``classifier.1.weight``), so a torchvision checkpoint loads as it is.  NCHW, OIHW,
ceil-mode max pooling, ``final_conv_padding`` honoured, float32 or float64.

    >>> from ports.torch import SqueezeNet, load, predict
    >>> model = load("w.safetensors")               # architecture from the metadata
    >>> logits = predict(model, x)                  # [N,3,H,W] -> [N, classes] NumPy
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check
from ..errors import WeightsError
from ..formats.torch import key_table, sequential_groups

__all__ = ["SqueezeNet", "Fire", "load", "predict", "to_weights", "activations",
           "loss_and_grads", "train_steps", "dropout"]


def _conv(c: S.Conv) -> nn.Conv2d:
    return nn.Conv2d(c.in_channels, c.out_channels, c.kernel, stride=c.stride,
                     padding=c.padding)


class Fire(nn.Module):
    """squeeze -> ReLU -> [expand1x1 -> ReLU, expand3x3 -> ReLU] concatenated on channels,
    plus the optional bypass (identity or 1x1 conv), added after the concatenation."""

    def __init__(self, fire: S.Fire) -> None:
        super().__init__()
        self.squeeze = _conv(fire.squeeze)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = _conv(fire.expand1x1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = _conv(fire.expand3x3)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.identity_bypass = fire.bypass == "identity"
        if fire.bypass_conv is not None:
            self.bypass = _conv(fire.bypass_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N,C,H,W] -> [N,C',H,W]
        s = self.squeeze_activation(self.squeeze(x))
        out = torch.cat([self.expand1x1_activation(self.expand1x1(s)),
                         self.expand3x3_activation(self.expand3x3(s))], 1)
        if self.identity_bypass:
            out = out + x
        elif hasattr(self, "bypass"):
            out = out + self.bypass(x)
        return out


def _module(layer: S.Layer) -> nn.Module:
    if isinstance(layer, S.Conv):
        return _conv(layer)
    if isinstance(layer, S.ReLU):
        return nn.ReLU(inplace=True)
    if isinstance(layer, S.MaxPool):
        return nn.MaxPool2d(layer.kernel, layer.stride, ceil_mode=layer.ceil_mode)
    if isinstance(layer, S.Fire):
        return Fire(layer)
    if isinstance(layer, S.Dropout):
        return nn.Dropout(p=layer.rate)
    if isinstance(layer, S.GlobalAvgPool):
        return nn.AdaptiveAvgPool2d((1, 1))
    raise TypeError(f"unknown layer {layer!r}")  # pragma: no cover


class SqueezeNet(nn.Module):
    """torchvision-compatible SqueezeNet for any :class:`ports.spec.Variant`."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32") -> None:
        super().__init__()
        self.variant = _api.variant(version, num_classes, final_conv_padding, bypass)
        groups = sequential_groups(self.variant)
        self.features = nn.Sequential(*map(_module, groups["features"]))
        self.classifier = nn.Sequential(*map(_module, groups["classifier"]))
        self.to(getattr(torch, _api.dtype(dtype).name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N,3,H,W] -> [N, classes]
        return torch.flatten(self.classifier(self.features(x)), 1)

    def load_weights(self, weights: Weights) -> SqueezeNet:
        """Copy canonical weights in (strict: every name and shape checked first)."""
        check(weights, self.variant)
        table = key_table(self.variant)
        state = {table[k]: torch.from_numpy(np.array(v)) for k, v in weights.tensors.items()}
        ours = self.state_dict()
        if set(state) != set(ours):  # the key table and the module disagree: a bug
            raise WeightsError(f"torch keys differ: {sorted(set(state) ^ set(ours))}")
        self.load_state_dict({k: v.to(ours[k].dtype) for k, v in state.items()}, strict=True)
        return self


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights."""
    state = model.state_dict()
    tensors = {k: state[key].detach().cpu().float().numpy()
               for k, key in key_table(model.variant).items()}
    return _api.to_weights(tensors, model.variant, "torch", preprocessing=preprocessing,
                           source=source)


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model (eval mode) from a weights file of any supported format, or :class:`Weights`.
    (``fast`` changes nothing: the bench's faster torch modes wrap this same module.)"""
    return _api.load(lambda v, dt: SqueezeNet(v, dtype=dt), SqueezeNet.load_weights, source,
                     dtype, variant).eval()


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype."""
    x = as_input(x, model.variant)
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(b)).to(dtype))
                               .numpy() for b in _api.batches(x, batch_size)])


from .trace import activations  # noqa: E402  (the uniform API, re-exported)
from .train import dropout, loss_and_grads, train_steps  # noqa: E402
