"""SqueezeNet in MXNet Gluon (1.9.1), built from :mod:`ports.spec`.

A ``HybridBlock``, NCHW, OIHW, float32 or float64.  Its structural parameter names (what
``save_parameters`` writes) are the Gluon model zoo's (``features.0.*`` conv1,
``features.K.0.0.*`` squeeze, ``features.K.1.0.0.*`` / ``features.K.1.1.0.*`` expand1x1 /
expand3x3, ``output.0.*`` conv10; a complex-bypass conv is ``features.K.bypass.*``; see
:mod:`ports.formats.mxnet`), and so are its global names (``squeezenet0_conv<i>_weight``,
used by ``export``): zoo checkpoints load as they are.  Unlike the zoo's net it has a
global average pool (the zoo's fixed 13x13 pool truncates a 227 input's 14x14 map),
Caffe's ``final_conv_padding`` and the paper's bypasses.  ``ceil_mode=True`` pooling does
not drop a last window starting outside the input, as Caffe does, but with kernel 3 >
stride 2 and no padding none ever does (tested).

    >>> from ports.mxnet import SqueezeNet, load, predict
    >>> net = load("w.safetensors")                 # hybridized; architecture from the file
    >>> logits = predict(net, x)                    # [N,3,H,W] -> [N, classes] NumPy

``load(..., fast=...)`` changes nothing: this port has no tuned layers (the bench's MKLDNN
mode is ``net.optimize_for(x, backend="MKLDNN")`` on this same net).
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn
from mxnet.gluon.contrib.nn import HybridConcurrent

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check
from ..formats.mxnet import gluon_groups, key_table

__all__ = ["SqueezeNet", "Fire", "load", "predict", "to_weights", "activations",
           "loss_and_grads", "train_steps", "dropout"]


def _conv(c: S.Conv) -> nn.Conv2D:
    # in_channels given, so parameters have their shapes at once (no deferred init).
    return nn.Conv2D(c.out_channels, c.kernel, strides=c.stride, padding=c.padding,
                     in_channels=c.in_channels)


def _conv_relu(c: S.Conv) -> nn.HybridSequential:
    """The zoo's ``_make_fire_conv``: ``[Conv2D, relu]`` (names ``.0.weight``, ...)."""
    seq = nn.HybridSequential(prefix="")
    seq.add(_conv(c), nn.Activation("relu"))
    return seq


class Fire(HybridBlock):
    """squeeze -> ReLU -> [expand1x1 -> ReLU, expand3x3 -> ReLU] concatenated on channels,
    + the optional bypass (identity or 1x1 conv); children "0" and "1" as in the zoo."""

    def __init__(self, fire: S.Fire) -> None:
        super().__init__(prefix="")
        self.register_child(_conv_relu(fire.squeeze), "0")  # convs created in spec order
        expand = HybridConcurrent(axis=1, prefix="")
        expand.add(_conv_relu(fire.expand1x1), _conv_relu(fire.expand3x3))
        self.register_child(expand, "1")
        self.identity_bypass = fire.bypass == "identity"
        if fire.bypass_conv is not None:
            self.bypass = _conv(fire.bypass_conv)

    def hybrid_forward(self, F, x):  # [N,C,H,W] -> [N,C',H,W]
        out = self._children["1"](self._children["0"](x))
        if self.identity_bypass:
            out = out + x
        elif "bypass" in self._children:
            out = out + self._children["bypass"](x)
        return out


def _block(layer: S.Layer) -> HybridBlock:
    if isinstance(layer, S.Conv):
        return _conv(layer)
    if isinstance(layer, S.ReLU):
        return nn.Activation("relu")
    if isinstance(layer, S.MaxPool):
        return nn.MaxPool2D(layer.kernel, layer.stride, ceil_mode=layer.ceil_mode)
    if isinstance(layer, S.Fire):
        return Fire(layer)
    if isinstance(layer, S.Dropout):
        return nn.Dropout(layer.rate)
    if isinstance(layer, S.GlobalAvgPool):
        return nn.GlobalAvgPool2D()
    raise TypeError(f"unknown layer {layer!r}")  # pragma: no cover


class SqueezeNet(HybridBlock):
    """SqueezeNet for any :class:`ports.spec.Variant`, uninitialised as in Gluon: ``initialize()``,
    ``load_parameters`` (into float64: ``cast_dtype=True``) or :meth:`load_weights`."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32") -> None:
        super().__init__()
        self.variant = _api.variant(version, num_classes, final_conv_padding, bypass)
        groups = gluon_groups(self.variant)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(*map(_block, groups["features"]))
            self.output = nn.HybridSequential(prefix="")
            self.output.add(*map(_block, groups["output"]), nn.Flatten())
        self.cast(_api.dtype(dtype).name)

    def hybrid_forward(self, F, x):  # [N,3,H,W] -> [N, classes]
        return self.output(self.features(x))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(next(iter(self.collect_params().values())).dtype)

    def structural_params(self) -> dict:  # name as in save_parameters -> Parameter
        return self._collect_params_with_prefix()

    def load_weights(self, weights: Weights) -> SqueezeNet:
        """Copy canonical weights in (every name and shape checked first), in the net's dtype."""
        check(weights, self.variant)
        params = self.structural_params()
        for canonical, key in key_table(self.variant).items():
            param = params[key]
            if param._data is None:
                param.initialize(init=mx.init.Zero(), ctx=mx.cpu())
            param.set_data(mx.nd.array(weights.tensors[canonical], dtype=param.dtype))
        return self


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The net's parameters as canonical float32 weights."""
    params = model.structural_params()
    tensors = {k: params[key].data().asnumpy().astype(np.float32)
               for k, key in key_table(model.variant).items()}
    return _api.to_weights(tensors, model.variant, "mxnet", preprocessing=preprocessing,
                           source=source)


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Hybridized net from a weights file of any supported format, or :class:`Weights`."""
    net = _api.load(lambda v, dt: SqueezeNet(v, dtype=dt), SqueezeNet.load_weights, source,
                    dtype, variant)
    net.hybridize()
    return net


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the net's dtype."""
    x = as_input(x, model.variant)
    return np.concatenate([model(mx.nd.array(b, dtype=model.dtype)).asnumpy()
                           for b in _api.batches(x, batch_size)])


from .trace import activations  # noqa: E402  (the uniform API, re-exported)
from .train import dropout, loss_and_grads, train_steps  # noqa: E402
