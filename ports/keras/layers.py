"""The two layers :mod:`ports.keras` needs and Keras 3 lacks, written for their semantics.

* :class:`CeilMaxPooling2D`: Caffe's max pool, whose output size rounds up;
* :class:`ExactGlobalAveragePooling2D`: a global mean in the input's own dtype.

Both are registered with Keras under the package ``squeezenet_ports`` (``.keras`` files name
them ``squeezenet_ports>CeilMaxPooling2D``, ...), and re-exported by :mod:`ports.keras`.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from .. import spec as S

__all__ = ["CeilMaxPooling2D", "ExactGlobalAveragePooling2D"]
serializable = keras.saving.register_keras_serializable(package="squeezenet_ports")


@serializable
class CeilMaxPooling2D(layers.Layer):
    """Max pooling whose output size rounds up (Caffe, torch's ``ceil_mode=True``), NHWC: pads
    the bottom/right with the ``-inf`` a last, partial window needs (``stride - 1`` for an
    unknown size: same windows), then pools ``valid``.  With ``kernel >= stride`` no padded
    cell wins, even over the negative inputs complex-bypass pools see (unlike zeros)."""

    def __init__(self, pool_size: int = 3, strides: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 1 <= strides <= pool_size:
            raise ValueError(f"need 1 <= strides <= pool_size, got {strides}, {pool_size}")
        self.pool = S.MaxPool(self.name, int(pool_size), int(strides))

    def call(self, x):  # [N,H,W,C] -> [N,H',W',C]
        return ops.max_pool(self.pad(x), self.pool.kernel, self.pool.stride, padding="valid")

    def pad(self, x):  # [N,H,W,C] -> [N,H+eh,W+ew,C], -inf where a last window overhangs
        eh, ew = (self.pool.stride - 1 if d is None else self.pool.ceil_extra(d)
                  for d in x.shape[1:3])
        if eh or ew:
            x = ops.pad(x, [[0, 0], [0, eh], [0, ew], [0, 0]], constant_values=float("-inf"))
        return x

    def compute_output_shape(self, shape):  # the spec's ceil-mode size
        n, h, w, c = shape
        return n, *(None if d is None else self.pool.out_size(d) for d in (h, w)), c

    def get_config(self) -> dict:
        return {**super().get_config(), "pool_size": self.pool.kernel, "strides": self.pool.stride}


@serializable
class ExactGlobalAveragePooling2D(layers.Layer):
    """Mean over H and W in the input's dtype (Keras 3.15's ``GlobalAveragePooling2D``
    computes float64 means in float32 on JAX and PyTorch; a sum over the count does not)."""

    def call(self, x):  # [N,H,W,C] -> [N,C]
        shape = ops.shape(x)
        return ops.sum(x, axis=[1, 2]) / ops.cast(shape[1] * shape[2], x.dtype)

    def compute_output_shape(self, shape):
        return shape[0], shape[3]
