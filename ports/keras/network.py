"""SqueezeNet (Iandola et al. 2016) in Keras 3 (TensorFlow, JAX or PyTorch backend): a
functional ``keras.Model``, NHWC ``[N,H,W,3]`` -> ``[N, classes]``, HWIO kernels, float32 or
float64 (JAX: ``JAX_ENABLE_X64=1``).

Layer names: ``conv1``, ``relu1``, ``pool1``, ``fire2_squeeze`` (canonical ``fire2.squeeze``
with ``.`` -> ``_``), ``fire2_concat``, ``fire2_add``, ``fire2_bypass``, ..., ``drop9``,
``conv10_pad``, ``conv10``, ``relu10``, ``pool10``.  Keras files name weights by layer class
and rank (``layers/conv2d_<k>`` in ``model.layers`` order), so the order in which the layers
are made below is part of the ``.weights.h5`` format (:mod:`ports.formats.keras`).
"""

from __future__ import annotations

import keras
from keras import layers as K

from .. import _api
from .. import spec as S
from .layers import CeilMaxPooling2D, ExactGlobalAveragePooling2D

serializable = keras.saving.register_keras_serializable(package="squeezenet_ports")


@serializable
class SqueezeNet(keras.Model):
    """SqueezeNet ``version`` "1_0" or "1_1", conv10 padded by ``final_conv_padding`` (Caffe's
    v1.0: 1), the paper's ``bypass`` ("none", "simple", "complex"); ``model.variant``.
    ``random_init=False`` starts the kernels at zero instead of Keras's random draws, for
    weights copied in at once (``load``; on JAX the draws compile per kernel shape)."""

    __module__ = "ports.keras"  # its public home, which .keras files record as "module"

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32", random_init: bool = True) -> None:
        v = _api.variant(version, num_classes, final_conv_padding, bypass)
        dtype = _api.dtype_name(dtype)  # float32, float64, bfloat16
        init = "glorot_uniform" if random_init else "zeros"  # glorot: Keras's default

        def layer(cls, name: str, *args, **kwargs):  # every layer in the model's dtype
            return cls(*args, name=name, dtype=dtype, **kwargs)

        def conv(x, name: str, filters: int, kernel: int, stride: int = 1, padding="valid",
                 activation=None):
            return layer(K.Conv2D, name, filters, kernel, strides=stride, padding=padding,
                         activation=activation, kernel_initializer=init)(x)

        def pool(x, name: str):  # 3x3 stride 2, the output size rounded up (Caffe)
            return layer(CeilMaxPooling2D, name, 3, 2)(x)

        def fire(x, n: int):  # squeeze -> [expand1x1, expand3x3] on channels (+ bypass)
            name, (squeeze, e1, e3) = f"fire{n}", S.FIRE_FILTERS[n]
            s = conv(x, f"{name}_squeeze", squeeze, 1, activation="relu")
            out = layer(K.Concatenate, f"{name}_concat", axis=-1)(
                [conv(s, f"{name}_expand1x1", e1, 1, activation="relu"),
                 conv(s, f"{name}_expand3x3", e3, 3, padding="same", activation="relu")])
            bypass = S.bypass_of(n, v.bypass)  # None, "identity" or "conv"; no ReLU after
            if bypass == "conv":
                x = conv(x, f"{name}_bypass", e1 + e3, 1)
            return out if bypass is None else layer(K.Add, f"{name}_add")([out, x])

        x = inputs = keras.Input(shape=(None, None, 3), dtype=dtype, name="input")
        if v.version == "1_0":
            x = pool(layer(K.ReLU, "relu1")(conv(x, "conv1", 96, 7, stride=2)), "pool1")
            x = pool(fire(fire(fire(x, 2), 3), 4), "pool4")
            x = pool(fire(fire(fire(fire(x, 5), 6), 7), 8), "pool8")
            x = fire(x, 9)
        else:
            x = pool(layer(K.ReLU, "relu1")(conv(x, "conv1", 64, 3, stride=2)), "pool1")
            x = pool(fire(fire(x, 2), 3), "pool3")
            x = pool(fire(fire(x, 4), 5), "pool5")
            x = fire(fire(fire(fire(x, 6), 7), 8), 9)
        x = layer(K.Dropout, "drop9", S.DROPOUT)(x)
        if v.final_conv_padding:  # Caffe's v1.0 pads conv10 (a 1x1 convolution) by 1
            x = layer(K.ZeroPadding2D, "conv10_pad", v.final_conv_padding)(x)
        x = layer(K.ReLU, "relu10")(conv(x, "conv10", v.num_classes, 1))
        x = layer(ExactGlobalAveragePooling2D, "pool10")(x)  # the logits, [N, classes]
        super().__init__(inputs, x, name="squeezenet_" + v.id.replace("-", "_"))
        self.variant = v

    def get_config(self) -> dict:  # what keras.saving needs to rebuild it: the arguments
        return {**vars(self.variant), "dtype": self.inputs[0].dtype}
