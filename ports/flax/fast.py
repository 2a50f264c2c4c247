"""Tuned layers for the Flax port: :class:`SqueezeNet` is the network of :mod:`.network`
with faster, equal computations (``conformance/test_flax.py`` proves each equal to the plain
one), what :func:`ports.flax.load` builds unless ``fast=False``.  Same parameters and NNX
state paths, so weights move freely between the two.

* :class:`Conv`: a 1x1, stride-1, unpadded convolution as a matrix product.
* :func:`max_pool`: the ceil-mode pool as the maximum of strided views.
* on CPU the high-resolution layers run image by image (:class:`SqueezeNet`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from .. import spec as S
from .network import POOL, _keep
from .network import SqueezeNet as Reference

__all__ = ["SqueezeNet", "Conv", "max_pool", "HEAD"]


class Conv(nnx.Conv):
    """``nnx.Conv`` (same ``kernel`` [kh, kw, in, out] and ``bias`` parameters) whose 1x1,
    stride-1, unpadded case is the matrix product ``[N,H,W,in] @ [in,out]``: XLA:CPU runs
    that 2-8x faster than its own 1x1 convolution (measured for every SqueezeNet 1x1 shape,
    batch 32, 2 cores; ``devtools/bench.py``).  Every other case is ``nnx.Conv``."""

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


def max_pool(x: jax.Array, pool: S.MaxPool = POOL) -> jax.Array:  # [N,H,W,C] -> [N,H',W',C]
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


HEAD = {"1_0": range(2, 5), "1_1": range(2, 4)}  # the fires before the second max pool


class SqueezeNet(Reference):
    """:class:`ports.flax.SqueezeNet` with :class:`Conv` and :func:`max_pool`.  On CPU its
    forward maps the stem and the :data:`HEAD` fires over the images (``lax.map``): their large
    maps (conv1's: 3 MB per image at 224) then stay in cache instead of streaming through
    memory between XLA:CPU's kernels (1_1, batch 32, 2 cores: 302 -> 214 ms per batch)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for _, module in nnx.iter_modules(self):
            if type(module) is nnx.Conv:
                module.__class__ = Conv

    def __call__(self, x: jax.Array, record=_keep) -> jax.Array:  # [N,H,W,3] -> [N, classes]
        if len(x) == 1 or jax.default_backend() != "cpu":
            return super().__call__(x, record)
        head = HEAD[self.variant.version]

        def image(xi: jax.Array) -> tuple:  # [H,W,3] -> [H',W',C], its recorded activations
            kept: dict[str, jax.Array] = {}
            keep = _keep if record is _keep else lambda name, h: kept.setdefault(name, h)
            return self.fires(head, self.stem(xi[None], keep), keep)[0], kept

        h, kept = jax.lax.map(image, x.astype(self.dtype))
        for name, a in kept.items():  # [N, 1, ...] -> [N, ...]
            record(name, a[:, 0])
        return self.classifier(self.fires(range(head[-1] + 1, 10), h, record), record)

    def pool(self, h: jax.Array) -> jax.Array:
        return max_pool(h)
