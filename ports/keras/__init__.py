"""SqueezeNet in Keras 3 (TensorFlow, JAX or PyTorch backend), built from :mod:`ports.spec`.

A functional ``keras.Model``, NHWC, HWIO kernels, float32 or float64 (JAX: set
``JAX_ENABLE_X64=1``).  Layer names: the canonical ones with ``.`` -> ``_``, plus
``fireN_concat``, ``fireN_add`` and ``conv10_pad`` (:mod:`ports.formats.keras` lists them).
``load`` builds it with the tuned layers of :mod:`ports.keras.fast` unless ``fast=False``;
the two layers Keras lacks are in :mod:`ports.keras.layers`, the layer trace and training in
:mod:`ports.keras.trace` and :mod:`ports.keras.train`.

    >>> from ports.keras import load, predict
    >>> logits = predict(load("w.safetensors"), x)      # NCHW [N,3,H,W] -> [N, classes]
"""

from __future__ import annotations

import keras
import numpy as np

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check
from ..formats.keras import conv_layer_names, layer_name, model_name
from ..layouts import hwio_to_oihw, nchw_to_nhwc, oihw_to_hwio
from .layers import CeilMaxPooling2D, ExactGlobalAveragePooling2D

__all__ = ["SqueezeNet", "CeilMaxPooling2D", "ExactGlobalAveragePooling2D", "load", "predict",
           "to_weights", "activations", "loss_and_grads", "train_steps", "dropout"]
serializable = keras.saving.register_keras_serializable(package="squeezenet_ports")


@serializable
class SqueezeNet(keras.Model):
    """The functional model for a :class:`~ports.spec.Variant`, built by interpreting
    ``Variant.layers()``: NHWC ``[N,H,W,3]`` -> ``[N, classes]``; ``model.variant``.
    ``random_init=False`` starts the kernels at zero instead of Keras's random draws, for
    weights copied in at once (:func:`load`; on JAX the draws compile per kernel shape: 6 s
    for the first network of a run)."""

    conv = keras.layers.Conv2D      # the layer classes; ports.keras.fast swaps in its own
    ceil_max_pool = CeilMaxPooling2D

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32", random_init: bool = True) -> None:
        variant = _api.variant(version, num_classes, final_conv_padding, bypass)
        dtype = _api.dtype(dtype).name
        init = {} if random_init else {"kernel_initializer": "zeros"}  # load: no draws

        def layer(cls, name, *args, **kwargs):
            return cls(*args, name=name, dtype=dtype, **kwargs)

        def conv(c: S.Conv, x, activation=None):  # [ZeroPadding2D] + Conv2D (HWIO kernel)
            name, padding = layer_name(c.name), "valid"
            if c.padding and c.stride == 1 and 2 * c.padding == c.kernel - 1:
                padding = "same"
            elif c.padding:
                x = layer(keras.layers.ZeroPadding2D, f"{name}_pad", c.padding)(x)
            return layer(self.conv, name, c.out_channels, c.kernel, strides=c.stride,
                         padding=padding, activation=activation, **init)(x)

        def fire(f: S.Fire, x):  # squeeze -> [expand1x1, expand3x3] concatenated -> + bypass
            s = conv(f.squeeze, x, "relu")
            out = layer(keras.layers.Concatenate, f"{f.name}_concat", axis=-1)(
                [conv(f.expand1x1, s, "relu"), conv(f.expand3x3, s, "relu")])
            if f.bypass is not None:
                bypass = x if f.bypass == "identity" else conv(f.bypass_conv, x)
                out = layer(keras.layers.Add, f"{f.name}_add")([out, bypass])
            return out

        x = inputs = keras.Input(shape=(None, None, 3), dtype=dtype, name="input")
        for op in variant.layers():
            if isinstance(op, S.Conv):
                x = conv(op, x)
            elif isinstance(op, S.ReLU):
                x = layer(keras.layers.ReLU, op.name)(x)
            elif isinstance(op, S.MaxPool):
                pool = self.ceil_max_pool if op.ceil_mode else keras.layers.MaxPooling2D
                x = layer(pool, op.name, op.kernel, op.stride)(x)
            elif isinstance(op, S.Fire):
                x = fire(op, x)
            elif isinstance(op, S.Dropout):
                x = layer(keras.layers.Dropout, op.name, op.rate)(x)
            elif isinstance(op, S.GlobalAvgPool):
                x = layer(ExactGlobalAveragePooling2D, op.name)(x)
            else:  # pragma: no cover - the spec has no other layer kinds
                raise TypeError(f"unknown layer {op!r}")
        super().__init__(inputs, x, name=model_name(variant))
        self.variant = variant

    def get_config(self) -> dict:  # what keras.saving needs to rebuild it: the arguments
        return {**vars(self.variant), "dtype": self.inputs[0].dtype}


def _fill(model: SqueezeNet, weights: Weights) -> SqueezeNet:
    """Copy canonical weights in (strict: every name and shape checked first)."""
    check(weights, model.variant)
    for canonical, name in conv_layer_names(model.variant).items():  # cast to the layer's dtype
        model.get_layer(name).set_weights([oihw_to_hwio(weights[f"{canonical}.weight"]),
                                           weights[f"{canonical}.bias"]])
    return model


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights (OIHW)."""
    tensors = {}  # canonical name -> OIHW weight or bias (made float32 by _api.to_weights)
    for canonical, name in conv_layer_names(model.variant).items():
        kernel, bias = model.get_layer(name).get_weights()  # [kh,kw,in,out], [out]
        tensors |= {f"{canonical}.weight": hwio_to_oihw(kernel), f"{canonical}.bias": bias}
    return _api.to_weights(tensors, model.variant, "keras", preprocessing=preprocessing,
                           source=source)


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model from a weights file of any supported format (``.weights.h5`` included) or
    :class:`Weights`; ``fast``: :class:`ports.keras.fast.SqueezeNet`, else this module's."""
    cls = _fast.SqueezeNet if fast else SqueezeNet
    return _api.load(lambda v, dt: cls(v, dtype=dt, random_init=False), _fill, source, dtype,
                     variant)


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype.
    ``predict_on_batch``: inference mode (dropout off), compiled by the backend."""
    x = as_input(x, model.variant)
    return np.concatenate([  # [N,3,H,W] -> [N,H,W,3] -> [N, classes]
        np.asarray(model.predict_on_batch(nchw_to_nhwc(b).astype(model.inputs[0].dtype)))
        for b in _api.batches(x, batch_size)])


from . import fast as _fast  # noqa: E402  (imports this module; registers its layers too)
from .trace import activations  # noqa: E402  (the uniform API, re-exported)
from .train import dropout, loss_and_grads, train_steps  # noqa: E402
