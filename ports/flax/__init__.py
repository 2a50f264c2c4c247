"""SqueezeNet in Flax NNX (JAX), built from :mod:`ports.spec`.

NHWC, HWIO kernels, explicit padding on every convolution (Flax's default ``SAME`` would
change conv1's geometry), Caffe's ceil-mode max pool (``-inf`` padding: pool inputs can be
negative after a complex bypass), float32 or float64 (``JAX_ENABLE_X64=1``).  NNX state paths
are the codec's: ``fire2/squeeze/kernel`` is canonical ``fire2.squeeze.weight`` (HWIO).
``conv``/``pool`` are parameters, as in Flax's ImageNet example: :mod:`.fast` passes its own.

    >>> from ports.flax import SqueezeNet, load, predict
    >>> model = load("w.safetensors")               # architecture from the metadata
    >>> logits = predict(model, x)                  # [N,3,H,W] NCHW -> [N, classes] NumPy
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check
from ..errors import WeightsError
from ..formats.flax import from_state, to_state
from ..layouts import nchw_to_nhwc

__all__ = ["SqueezeNet", "Fire", "max_pool", "load", "predict", "to_weights", "jitted",
           "activations", "loss_and_grads", "train_steps", "dropout"]

PRECISION = jax.lax.Precision.HIGHEST  # no reduced-precision (TF32/bf16) passes on GPU/TPU


def max_pool(x: jax.Array, pool: S.MaxPool) -> jax.Array:  # [N,H,W,C] -> [N,H',W',C]
    """Max pool, output size rounded up (Caffe): the bottom/right edge is padded where the
    last window needs it, with -inf (``nnx.max_pool``'s initial value), which never wins."""
    pad = ((0, pool.ceil_extra(x.shape[1])), (0, pool.ceil_extra(x.shape[2])))
    return nnx.max_pool(x, (pool.kernel,) * 2, strides=(pool.stride,) * 2, padding=pad)


class Fire(nnx.Module):
    """squeeze+ReLU -> concat(expand1x1+ReLU, expand3x3+ReLU), + optional bypass (no ReLU)."""

    def __init__(self, fire: S.Fire, conv: Callable[[S.Conv], nnx.Conv]) -> None:
        self.squeeze = conv(fire.squeeze)
        self.expand1x1 = conv(fire.expand1x1)
        self.expand3x3 = conv(fire.expand3x3)
        self.identity_bypass = fire.bypass == "identity"
        self.bypass = conv(fire.bypass_conv) if fire.bypass_conv is not None else None

    def __call__(self, x: jax.Array) -> jax.Array:  # [N,H,W,C] -> [N,H,W,C']
        s = nnx.relu(self.squeeze(x))
        out = jnp.concatenate([nnx.relu(self.expand1x1(s)), nnx.relu(self.expand3x3(s))], -1)
        if self.identity_bypass:
            out = out + x
        elif self.bypass is not None:
            out = out + self.bypass(x)
        return out


class SqueezeNet(nnx.Module):
    """SqueezeNet for any :class:`ports.spec.Variant`, interpreting ``Variant.layers()``;
    submodules are named after the spec's layers (``conv1``, ``fire2`` ... ``conv10``).
    Parameters start as Flax's defaults drawn from ``rngs`` (default ``nnx.Rngs(0)``)."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32", rngs: nnx.Rngs | None = None,
                 conv: Callable[..., nnx.Conv] = nnx.Conv, pool: Callable = max_pool) -> None:
        self.variant = _api.variant(version, num_classes, final_conv_padding, bypass)
        self.dtype = _api.dtype(dtype)
        if self.dtype == np.float64 and not jax.config.jax_enable_x64:
            raise RuntimeError("float64 in JAX needs JAX_ENABLE_X64=1 (before importing jax)")
        rngs = rngs if rngs is not None else nnx.Rngs(0)

        def spec_conv(c: S.Conv) -> nnx.Conv:  # HWIO kernel [k, k, in, out], explicit padding
            return conv(c.in_channels, c.out_channels, (c.kernel, c.kernel), (c.stride, c.stride),
                        padding=((c.padding, c.padding),) * 2, dtype=self.dtype,
                        param_dtype=self.dtype, precision=PRECISION, rngs=rngs)

        self.pool = pool
        for layer in self.variant.layers():
            if isinstance(layer, S.Conv):
                setattr(self, layer.name, spec_conv(layer))
            elif isinstance(layer, S.Fire):
                setattr(self, layer.name, Fire(layer, spec_conv))
            elif isinstance(layer, S.Dropout):  # no state; the identity unless asked (train.py)
                setattr(self, layer.name, nnx.Dropout(layer.rate, deterministic=True))

    def __call__(self, x: jax.Array) -> jax.Array:  # [N,H,W,3] -> [N, classes]
        return self.run(self.variant.layers(), x.astype(self.dtype))

    def run(self, layers: list[S.Layer], h: jax.Array) -> jax.Array:
        """Apply ``layers`` (consecutive ones of ``Variant.layers()``) to NHWC ``h``."""
        for layer in layers:
            if isinstance(layer, (S.Conv, S.Fire, S.Dropout)):
                h = getattr(self, layer.name)(h)
            elif isinstance(layer, S.ReLU):
                h = nnx.relu(h)
            elif isinstance(layer, S.MaxPool):
                h = self.pool(h, layer)
            elif isinstance(layer, S.GlobalAvgPool):
                h = jnp.mean(h, axis=(1, 2))  # [N,H,W,C] -> [N,C]
        return h

    def load_weights(self, weights: Weights) -> SqueezeNet:
        """Copy canonical weights in (strict: every name and shape checked first)."""
        check(weights, self.variant)
        state = to_state(weights, dtype=self.dtype)
        paths = set(nnx.traversals.flatten_mapping(state))
        ours = set(nnx.traversals.flatten_mapping(nnx.to_pure_dict(nnx.state(self, nnx.Param))))
        if paths != ours:  # the codec's key table and the module disagree: a bug
            raise WeightsError(f"flax paths differ: {sorted(map('/'.join, paths ^ ours))}")
        nnx.update(self, state)
        return self


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights."""
    state = jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return _api.to_weights(from_state(state, model.variant.to_meta()).tensors, model.variant,
                           "flax", preprocessing=preprocessing, source=source)


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model from any supported weights file or :class:`Weights`; ``fast``: :mod:`.fast`.
    The module is built abstractly (``nnx.eval_shape``: shapes only, no random draws) and
    then filled with the weights, as Flax restores checkpoints."""
    return _api.load(lambda v, dt: nnx.merge(*_abstract(fast, v, dt)),
                     SqueezeNet.load_weights, source, dtype, variant)


@lru_cache(maxsize=32)
def _abstract(fast: bool, variant: S.Variant, dtype: np.dtype) -> tuple:
    """(graphdef, abstract state) of the module for ``variant``: traced once per
    architecture (0.3 s: 26 ``nnx.Conv`` constructors), merged into a new module per load."""
    from . import fast as tuned

    build = tuned.SqueezeNet if fast else SqueezeNet
    return nnx.split(nnx.eval_shape(lambda: build(variant, dtype=dtype)))


@partial(jax.jit, static_argnums=0)  # cached per (graphdef: the architecture, avals)
def _forward(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(x)


def jitted(model: SqueezeNet) -> Callable[[jax.Array], jax.Array]:
    """``model`` as a ``jax.jit`` function of NHWC device arrays, shared by equal models."""
    return partial(_forward, *nnx.split(model))


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype."""
    x = nchw_to_nhwc(as_input(x, model.variant).astype(model.dtype, copy=False))
    run = jitted(model)
    return np.concatenate([np.asarray(run(jnp.asarray(b))) for b in _api.batches(x, batch_size)])


from .trace import activations  # noqa: E402  (the uniform API, re-exported)
from .train import dropout, loss_and_grads, train_steps  # noqa: E402
