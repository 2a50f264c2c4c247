"""Tuned layers for the Flax port: the network of :mod:`ports.flax` with faster, equal
computations (``conformance/test_flax.py`` proves each equal to the plain one).  This is
what :func:`ports.flax.load` builds by default; ``load(..., fast=False)`` is the plain one.

* :class:`Conv`: a 1x1, stride-1, unpadded convolution as a matrix product.
* :func:`max_pool`: the ceil-mode pool as the maximum of strided views.
* :class:`SqueezeNet`: both of them, and on CPU the high-resolution layers run image by
  image (:func:`per_image_head`).

Parameters and NNX state paths are those of the plain network, so weights move freely
between the two (:func:`ports.flax.to_weights`, ``nnx.state``/``nnx.update``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from .. import spec as S
from . import SqueezeNet as Reference

__all__ = ["SqueezeNet", "Conv", "max_pool", "per_image_head"]


class Conv(nnx.Conv):
    """``nnx.Conv`` (same ``kernel`` [kh, kw, in, out] and ``bias`` parameters) whose 1x1,
    stride-1, unpadded case is the matrix product ``[N,H,W,in] @ [in,out]``: XLA:CPU runs
    that 2-8x faster than its own 1x1 convolution (measured for every SqueezeNet 1x1 shape,
    batch 32, 2 cores; ``conformance/bench.py``).  Every other case is ``nnx.Conv``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.pointwise:
            y = jnp.matmul(x, self.kernel[...][0, 0], precision=self.precision)
            return y + self.bias[...] if self.bias is not None else y
        return super().__call__(x)

    @property
    def pointwise(self) -> bool:
        """Whether this convolution is a per-pixel matrix product."""
        return (tuple(self.kernel_size) == (1, 1) and self.strides in (1, (1, 1))
                and self.padding in (((0, 0), (0, 0)), "VALID") and self.feature_group_count == 1
                and self.input_dilation in (1, (1, 1)) and self.kernel_dilation in (1, (1, 1)))


def max_pool(x: jax.Array, pool: S.MaxPool) -> jax.Array:  # [N,H,W,C] -> [N,H',W',C]
    """:func:`ports.flax.max_pool` (ceil mode, -inf padding) as the maximum over the
    ``k*k`` strided views of the window offsets, which XLA:CPU fuses into one pass (~3x
    faster than its ``lax.reduce_window``)."""
    eh, ew = pool.ceil_extra(x.shape[1]), pool.ceil_extra(x.shape[2])
    if eh or ew:
        x = jnp.pad(x, ((0, 0), (0, eh), (0, ew), (0, 0)), constant_values=-jnp.inf)
    k, s = pool.kernel, pool.stride
    ho, wo = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
    views = [x[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
             for i in range(k) for j in range(k)]
    return functools.reduce(jnp.maximum, views)


def per_image_head(layers: list[S.Layer]) -> int:
    """How many leading layers run image by image on CPU: through the second max pool.

    Those layers carry the large activations (conv1's output alone is 3 MB per image at
    224, 100 MB at batch 32).  Batched, XLA:CPU streams each of them through memory
    between its convolution, ReLU, pooling and concatenation kernels; mapped over the
    images (``lax.map``) they stay in cache.  Measured for 1_1 at batch 32 on 2 cores:
    302 -> 214 ms per batch; results are bit-identical.  Later layers run batched."""
    return S.through_pool(layers, 2)


class SqueezeNet(Reference):
    """:class:`ports.flax.SqueezeNet` built with :class:`Conv` and :func:`max_pool`, whose
    forward maps the :func:`per_image_head` layers over the images on CPU (elsewhere, and
    for a single image, it is the plain forward)."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32", rngs: nnx.Rngs | None = None) -> None:
        super().__init__(version, num_classes, final_conv_padding, bypass, dtype=dtype,
                         rngs=rngs, conv=Conv, pool=max_pool)

    def __call__(self, x: jax.Array) -> jax.Array:  # [N,H,W,3] -> [N, classes]
        h, layers = x.astype(self.dtype), self.variant.layers()
        head = per_image_head(layers) if len(h) > 1 and jax.default_backend() == "cpu" else 0
        if head:  # [N,H,W,3] -> [N,H',W',C], one image at a time
            h = jax.lax.map(lambda xi: self.run(layers[:head], xi[None])[0], h)
        return self.run(layers[head:], h)
