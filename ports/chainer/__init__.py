"""SqueezeNet in Chainer (7.8.1), built from :mod:`ports.spec`.

A ``chainer.Chain`` with children ``conv1``, ``fire2`` .. ``fire9``, ``conv10``, whose
parameter paths are :mod:`ports.formats.chainer`'s (``conv1/W``, ``fire2/squeeze/W``, ...,
``conv10/b``), so ``chainer.serializers.save_npz`` and ``load_npz`` exchange files with that
codec.  NCHW, OIHW, float32 or float64, ``final_conv_padding`` and bypasses honoured.

Max pooling: ``F.max_pooling_2d(cover_all=True)`` gives ``ceil((size - k) / s) + 1``,
Caffe's size.  Caffe also drops a last window that would start outside the input; with
3x3 stride-2 pools and no padding none ever does, so the two agree for every size (tested).

    >>> from ports.chainer import SqueezeNet, load, predict
    >>> model = load("w.npz")                      # any supported format, or Weights
    >>> logits = predict(model, x)                 # [N,3,H,W] -> [N, classes] NumPy

This module is the plain network.  ``load`` returns, unless ``fast=False``, the same chain
with forward-only shortcuts for inference (:mod:`ports.chainer.fast`: fused conv + ReLU and
a separable max pool, tested equal to this network, about 2x faster on a CPU); with
backprop enabled it computes exactly this network.
"""

from __future__ import annotations

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np
from chainer import initializers

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check
from ..errors import WeightsError
from ..formats.chainer import key_table

__all__ = ["SqueezeNet", "Fire", "load", "predict", "to_weights", "activations",
           "loss_and_grads", "train_steps", "dropout"]


def _conv(c: S.Conv, dtype) -> L.Convolution2D:
    return L.Convolution2D(c.in_channels, c.out_channels, c.kernel, stride=c.stride,
                           pad=c.padding, initialW=initializers.LeCunNormal(dtype=dtype),
                           initial_bias=initializers.Zero(dtype=dtype))


class Fire(chainer.Chain):
    """squeeze -> ReLU -> [expand1x1 -> ReLU, expand3x3 -> ReLU] concatenated on channels
    (expand1x1 first), plus the optional bypass (identity, or the 1x1 conv ``bypass``)
    added after the concatenation, with no ReLU after the sum."""

    def __init__(self, fire: S.Fire, dtype) -> None:
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
        s = F.relu(self.squeeze(x))
        out = F.concat((F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))), axis=1)
        if self.identity_bypass:
            out = out + x
        elif self.conv_bypass:
            out = out + self.bypass(x)
        return out


class SqueezeNet(chainer.Chain):
    """SqueezeNet for any :class:`ports.spec.Variant`; the forward pass applies
    ``variant.layers()`` in order, one Chainer call each."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32") -> None:
        super().__init__()
        self.variant = _api.variant(version, num_classes, final_conv_padding, bypass)
        self.dtype = _api.dtype(dtype)
        with self.init_scope():
            for layer in self.variant.layers():
                if isinstance(layer, S.Conv):
                    setattr(self, layer.name, _conv(layer, self.dtype))
                elif isinstance(layer, S.Fire):
                    setattr(self, layer.name, Fire(layer, self.dtype))

    def forward(self, x):  # [N,3,H,W] -> [N, classes]
        h = x
        for layer in self.variant.layers():
            if isinstance(layer, (S.Conv, S.Fire)):
                h = self[layer.name](h)
            elif isinstance(layer, S.ReLU):
                h = F.relu(h)
            elif isinstance(layer, S.MaxPool):
                h = F.max_pooling_2d(h, layer.kernel, layer.stride, cover_all=layer.ceil_mode)
            elif isinstance(layer, S.Dropout):
                h = F.dropout(h, layer.rate)  # the identity unless chainer.config.train
            elif isinstance(layer, S.GlobalAvgPool):
                h = F.average(h, axis=(2, 3))
        return h

    def load_weights(self, weights: Weights) -> SqueezeNet:
        """Copy canonical weights in (strict: every name and shape checked first)."""
        check(weights, self.variant)
        params = {path.lstrip("/"): p for path, p in self.namedparams()}
        table = key_table(self.variant)
        if set(table.values()) != set(params):  # the key table and the chain disagree: a bug
            raise WeightsError(f"chainer keys differ: {sorted(set(table.values()) ^ set(params))}")
        for name, key in table.items():
            params[key].array[...] = weights.tensors[name]
        return self


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights."""
    params = dict(model.namedparams())
    tensors = {name: params["/" + key].array for name, key in key_table(model.variant).items()}
    return _api.to_weights(tensors, model.variant, "chainer", preprocessing=preprocessing,
                           source=source)


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model from a weights file of any supported format, or :class:`Weights`; ``fast``:
    :class:`ports.chainer.fast.SqueezeNet`, else this module's.  ``variant``: needed for an
    ``.npz`` saved by Chainer itself, whose conv10 padding and identity bypass its shapes
    cannot tell (:mod:`ports.formats.chainer`)."""
    from . import fast as tuned  # imported here: fast.py builds on this module

    build = tuned.SqueezeNet if fast else SqueezeNet
    return _api.load(lambda v, dt: build(v, dtype=dt), SqueezeNet.load_weights, source, dtype,
                     variant)


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype."""
    x = as_input(x, model.variant)
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        return np.concatenate([model(np.ascontiguousarray(b, model.dtype)).array
                               for b in _api.batches(x, batch_size)])


from .trace import activations  # noqa: E402  (the uniform API, re-exported)
from .train import dropout, loss_and_grads, train_steps  # noqa: E402
