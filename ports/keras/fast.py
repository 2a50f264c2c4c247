"""Tuned layers for :mod:`ports.keras`: each backend's fast road, same network.

:class:`SqueezeNet` is the network of :mod:`.network` whose layers then take these classes
(same names, config, weights and files) and the same logits (tested against the plain model
and Keras' own layers, in float64); ``ports.keras.load`` builds it unless ``fast=False``.
Measured with ``tools/bench`` (``docs/performance.md``):

* torch: Keras copies each NHWC input to NCHW and back before every ``conv2d``; here torch
  gets an NCHW *view* with channels-last strides, as oneDNN takes it (62 -> 141 img/s).
* JAX: XLA:CPU runs a 1x1 convolution 2-8x slower than the same matrix product, and its
  ``reduce_window`` max pool ~3x slower than the maximum of the k*k strided views; on CPU
  the layers through the second pool run image by image (:meth:`SqueezeNet.call`).
* TensorFlow: Keras' own layers are the fastest; nothing changes."""

from __future__ import annotations

import keras
from keras import layers, ops

from .. import spec as S
from . import layers as plain
from . import network

__all__ = ["SqueezeNet", "Conv2D", "CeilMaxPooling2D"]
serializable = keras.saving.register_keras_serializable(package="squeezenet_ports.fast")
BACKEND = keras.backend.backend()


@serializable
class Conv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` whose convolution takes the backend's fast road.  Same
    kernel ``[kh, kw, in, out]``, config and ``.weights.h5`` paths (Keras names weight
    groups after the class, and the class name is the same)."""

    def convolution_op(self, inputs, kernel):
        if self.data_format == "channels_last" and self.groups == 1:
            if BACKEND == "torch":  # NCHW view with channels-last strides: no copies
                y = ops.conv(ops.transpose(inputs, (0, 3, 1, 2)), kernel,
                             strides=list(self.strides), padding=self.padding,
                             dilation_rate=self.dilation_rate, data_format="channels_first")
                return ops.transpose(y, (0, 2, 3, 1))
            if (BACKEND == "jax" and tuple(self.kernel_size) == (1, 1)
                    and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1)):
                return ops.matmul(inputs, kernel[0, 0])  # [N,H,W,in] @ [in,out]
        return super().convolution_op(inputs, kernel)


@serializable
class CeilMaxPooling2D(plain.CeilMaxPooling2D):
    """:class:`ports.keras.CeilMaxPooling2D` (same padding, same windows), pooled on torch
    in an NCHW view and on JAX as the maximum of ``k*k`` strided views."""

    def call(self, x):  # [N,H,W,C] -> [N,H',W',C]
        k, s = self.pool.kernel, self.pool.stride
        if BACKEND == "torch":
            y = ops.max_pool(ops.transpose(self.pad(x), (0, 3, 1, 2)), k, s, padding="valid",
                             data_format="channels_first")
            return ops.transpose(y, (0, 2, 3, 1))
        if BACKEND == "jax":
            x = self.pad(x)
            ho, wo = ((d - k) // s + 1 for d in x.shape[1:3])  # padded: floor is the ceil size
            views = [x[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
                     for i in range(k) for j in range(k)]
            out = views[0]
            for v in views[1:]:
                out = ops.maximum(out, v)
            return out
        return super().call(x)


@serializable
class SqueezeNet(network.SqueezeNet):
    """:class:`ports.keras.SqueezeNet`, each of its ``Conv2D`` and ``CeilMaxPooling2D``
    layers then given the class above of the same name (only methods change)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        tuned = {layers.Conv2D: Conv2D, plain.CeilMaxPooling2D: CeilMaxPooling2D}
        for layer in self.layers:
            layer.__class__ = tuned.get(type(layer), type(layer))

    def mapped_head(self, n: int) -> str | None:
        """The last layer :meth:`call` maps over a batch of ``n`` images on JAX/CPU (else
        ``None``): the second max pool.  The activations before it are large (conv1's: 3 MB
        per image at 224, 100 MB at batch 32); batched, XLA:CPU streams each through memory
        between its convolution, ReLU, pooling and concatenation kernels, one image at a
        time they stay in cache (1_1, batch 32, 2 cores: 94 -> 127 img/s)."""
        if BACKEND == "jax" and n > 1 and str(keras.distribution.list_devices()[0]) \
                .startswith("cpu"):
            return self.variant.layers()[S.through_pool(self.variant.layers(), 2) - 1].name
        return None

    def call(self, inputs, training=None, mask=None, per_image=True, **kwargs):
        """Keras' own graph run, except for inference on a batch with JAX on CPU: the layers
        through :meth:`mapped_head` image by image (``ops.map``), then the rest batched.
        ``per_image=False`` runs every layer batched (what training does: differentiated,
        the map is slower, see :mod:`ports.keras.train`)."""
        cut = (per_image and not training and mask is None and not kwargs and
               len(getattr(inputs, "shape", ())) == 4 and self.mapped_head(inputs.shape[0] or 1))
        if not cut:
            return super().call(inputs, training=training, mask=mask, **kwargs)
        cut = self.get_layer(cut)
        head = keras.Function(self.input, cut.output)  # graph slices over the same layers
        tail = keras.Function(cut.output, self.output)
        return tail(ops.map(lambda xi: head(xi[None])[0], inputs))
