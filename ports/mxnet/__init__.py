"""SqueezeNet in MXNet Gluon (1.9.1), built from :mod:`ports.spec`.

A ``HybridBlock``, NCHW, OIHW kernels, float32 or float64 (``net.cast("float64")``),
``hybridize()``-able.  Its structural parameter names (what ``save_parameters`` writes)
equal the Gluon model zoo's ``SqueezeNet`` (``features.0.weight``, ``features.K.0.0.*``
squeeze, ``features.K.1.0.0.*`` expand1x1, ``features.K.1.1.0.*`` expand3x3,
``output.0.*`` conv10; see :mod:`ports.formats.mxnet`), so a zoo checkpoint loads with
``net.load_parameters(path)`` as it is.  A complex-bypass 1x1 conv, which the zoo lacks,
is ``features.K.bypass.*``.  The global names (``squeezenet0_conv<i>_weight``, used by
``export``) also follow the zoo: the convolutions are created in spec order.

Differences from the zoo's own network, which make this one compute the spec:

* global average pooling (the zoo's head is a fixed 13x13 ``AvgPool2D``, which truncates
  the 14x14 / 15x15 maps of 227 inputs and other sizes; at 224 the two agree);
* ``final_conv_padding`` (Caffe's v1.0 conv10 has padding 1) and the paper's bypasses.

Max pooling uses ``ceil_mode=True``, i.e. ``pooling_convention='full'``:
``1 + ceil((size - kernel) / stride)``.  Unlike Caffe and PyTorch, MXNet does not drop a
last window that would start outside the input, but with no padding and a kernel larger
than the stride (3 > 2 here) no window ever does, so the sizes equal
``ports.spec.MaxPool.out_size`` (checked in the conformance tests for sizes 1..400).

    >>> from ports.mxnet import SqueezeNet, load, predict
    >>> net = load("w.safetensors")                 # architecture from the metadata
    >>> logits = predict(net, x)                    # [N,3,H,W] -> [N, classes] NumPy
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn
from mxnet.gluon.contrib.nn import HybridConcurrent

from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check, make
from ..errors import WeightsError
from ..formats.mxnet import gluon_groups, key_table
from ..spec import Variant

__all__ = ["SqueezeNet", "Fire", "load", "predict", "to_weights"]

DTYPES = ("float32", "float64")


def _conv(c: S.Conv) -> nn.Conv2D:
    # in_channels given, so parameters have their shapes at once (no deferred init).
    return nn.Conv2D(c.out_channels, c.kernel, strides=c.stride, padding=c.padding,
                     in_channels=c.in_channels)


def _conv_relu(c: S.Conv) -> nn.HybridSequential:
    """The zoo's ``_make_fire_conv``: ``[Conv2D, relu]`` (names ``.0.weight``...)."""
    seq = nn.HybridSequential(prefix="")
    seq.add(_conv(c))
    seq.add(nn.Activation("relu"))
    return seq


class Fire(HybridBlock):
    """squeeze -> ReLU -> [expand1x1 -> ReLU, expand3x3 -> ReLU] concatenated on channels
    (expand1x1 first), plus the optional bypass (identity or 1x1 conv), added after the
    concatenation, no ReLU after the sum.

    Children are registered as ``"0"`` (``[squeeze, relu]``) and ``"1"`` (a
    ``HybridConcurrent`` of ``[expand1x1, relu]`` and ``[expand3x3, relu]``), the zoo's
    fire layout; the bypass conv is ``"bypass"``.  Created in its parent's name scope
    (``prefix=""``), so its convs are numbered in the parent's sequence as in the zoo.
    """

    def __init__(self, fire: S.Fire) -> None:
        super().__init__(prefix="")
        squeeze = _conv_relu(fire.squeeze)
        expand = HybridConcurrent(axis=1, prefix="")
        expand.add(_conv_relu(fire.expand1x1))
        expand.add(_conv_relu(fire.expand3x3))
        self.register_child(squeeze, "0")
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
        if layer.ceil_mode and layer.kernel <= layer.stride:
            # 'full' lacks Caffe's "last window starts inside the input" clip; it only
            # matters when kernel <= stride (see the module docstring).
            raise NotImplementedError(f"{layer.name}: ceil-mode pooling with kernel "
                                      f"{layer.kernel} <= stride {layer.stride}")
        return nn.MaxPool2D(pool_size=layer.kernel, strides=layer.stride,
                            ceil_mode=layer.ceil_mode)
    if isinstance(layer, S.Fire):
        return Fire(layer)
    if isinstance(layer, S.Dropout):
        return nn.Dropout(layer.rate)
    if isinstance(layer, S.GlobalAvgPool):
        return nn.GlobalAvgPool2D()
    raise TypeError(f"unknown layer {layer!r}")  # pragma: no cover


class SqueezeNet(HybridBlock):
    """Gluon-zoo-compatible SqueezeNet for any :class:`ports.spec.Variant`.

    Parameters are created uninitialised, as Gluon does: call ``initialize()``,
    ``load_parameters(path)`` (a zoo or :mod:`ports.formats.mxnet` file; for a float64
    net pass ``cast_dtype=True``) or :meth:`load_weights`.
    """

    def __init__(self, version: str = "1_1", num_classes: int = 1000,
                 final_conv_padding: int = 0, bypass: str = "none", **kwargs) -> None:
        super().__init__(**kwargs)
        self.variant = Variant(version, num_classes, final_conv_padding, bypass)
        groups = gluon_groups(self.variant)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            for layer in groups["features"]:
                self.features.add(_block(layer))
            self.output = nn.HybridSequential(prefix="")
            for layer in groups["output"]:
                self.output.add(_block(layer))
            self.output.add(nn.Flatten())

    def hybrid_forward(self, F, x):  # [N,3,H,W] -> [N, classes]
        return self.output(self.features(x))

    @property
    def dtype(self) -> np.dtype:
        """The parameters' dtype (``float32`` unless ``cast``)."""
        return np.dtype(next(iter(self.collect_params().values())).dtype)

    def structural_params(self) -> dict:
        """Gluon structural name (as in ``save_parameters``) -> ``Parameter``."""
        return self._collect_params_with_prefix()

    def load_weights(self, weights: Weights) -> SqueezeNet:
        """Copy canonical weights in (strict: every name and shape checked first), in the
        net's dtype; initialises parameters that are not yet."""
        check(weights, self.variant)
        table = key_table(self.variant)
        params = self.structural_params()
        if set(table.values()) != set(params):  # the key table and the block disagree: a bug
            raise WeightsError(f"gluon names differ: {sorted(set(table.values()) ^ set(params))}")
        ctx = mx.cpu()
        for canonical, key in table.items():
            param = params[key]
            if param._data is None:
                param.initialize(init=mx.init.Zero(), ctx=ctx)
            param.set_data(mx.nd.array(weights.tensors[canonical], ctx=ctx, dtype=param.dtype))
        return self


def to_weights(model: SqueezeNet, *, preprocessing: str = "torchvision",
               source: str = "ports.mxnet") -> Weights:
    """The net's parameters as canonical float32 weights."""
    params = model.structural_params()
    tensors = {k: params[key].data().asnumpy().astype(np.float32)
               for k, key in key_table(model.variant).items()}
    return make(tensors, model.variant, preprocessing=preprocessing, source=source)


def load(source, dtype: str = "float32", hybridize: bool = True) -> SqueezeNet:
    """Net from a weights file of any supported format, or :class:`Weights`; ``dtype``
    float32 or float64; hybridized unless ``hybridize=False``."""
    from ..formats import read

    dtype = np.dtype(dtype).name
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    weights = source if isinstance(source, Weights) else read(source)
    v = weights.variant
    net = SqueezeNet(v.version, v.num_classes, v.final_conv_padding, v.bypass)
    net.cast(dtype)
    net.load_weights(weights)
    if hybridize:
        net.hybridize()
    return net


def predict(model: SqueezeNet, x, batch_size: int = 32) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the net's dtype."""
    x = as_input(x, model.variant)
    dtype = model.dtype
    outs = []
    for i in range(0, len(x), batch_size):
        batch = mx.nd.array(np.ascontiguousarray(x[i:i + batch_size]), ctx=mx.cpu(), dtype=dtype)
        outs.append(model(batch).asnumpy())
    return np.concatenate(outs, axis=0)
