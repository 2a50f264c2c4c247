"""SqueezeNet in Flax NNX (JAX), built from :mod:`ports.spec`.

NHWC activations, HWIO kernels, explicit padding on every convolution (Flax's default is
``SAME``, which would change conv1's geometry), Caffe's ceil-mode max pooling done exactly
(bottom/right padded with ``-inf``, then a ``VALID`` window: pool inputs can be negative
after a complex bypass, so zero padding would not do), ``final_conv_padding`` and bypass
variants honoured, float32 or float64 (float64 needs ``JAX_ENABLE_X64=1``).

The NNX state's paths are the codec's key paths (:mod:`ports.formats.flax`): e.g.
``fire2/squeeze/kernel`` is canonical ``fire2.squeeze.weight`` in HWIO.

    >>> from ports.flax import SqueezeNet, load, predict
    >>> model = load("w.safetensors")               # architecture from the metadata
    >>> logits = predict(model, x)                  # [N,3,H,W] NCHW -> [N, classes] NumPy

``predict`` runs one ``jax.jit``-compiled pure function of (graph definition, state,
input); it is traced once per (architecture, dtype, batch shape) and reused afterwards,
for every model of that architecture.  :func:`trace_count` says how often it was traced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check, make
from ..errors import WeightsError
from ..formats.flax import from_state, key_table, to_state
from ..layouts import nchw_to_nhwc
from ..spec import Variant

__all__ = ["SqueezeNet", "Fire", "Conv", "load", "predict", "to_weights", "trace_count",
           "max_pool_ceil", "key_table"]

_PRECISION = jax.lax.Precision.HIGHEST  # no reduced-precision (TF32/bf16) passes on GPU/TPU


def _dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dt}")
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 in JAX needs 64-bit mode: set JAX_ENABLE_X64=1 before "
                           "importing jax (or jax.config.update('jax_enable_x64', True))")
    return dt


class Conv(nnx.Conv):
    """``nnx.Conv`` (same ``kernel`` [kh, kw, in, out] and ``bias`` parameters) whose 1x1,
    stride-1, unpadded case is the matrix product ``[N,H,W,in] @ [in,out]``: XLA:CPU runs
    that 2-8x faster than its own 1x1 convolution (measured for every SqueezeNet 1x1 shape,
    batch 32, 2 cores; ``conformance/bench.py``).  Every other case is ``nnx.Conv``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        if self._pointwise:
            y = jnp.matmul(x, self.kernel[...][0, 0], precision=_PRECISION)
            return y + self.bias[...] if self.bias is not None else y
        return super().__call__(x)

    @property
    def _pointwise(self) -> bool:
        return (tuple(self.kernel_size) == (1, 1) and self.strides in (1, (1, 1))
                and self.padding in (((0, 0), (0, 0)), "VALID") and self.feature_group_count == 1
                and self.input_dilation in (1, (1, 1)) and self.kernel_dilation in (1, (1, 1)))


def _conv(c: S.Conv, dtype: np.dtype, rngs: nnx.Rngs) -> Conv:
    """A spec convolution as :class:`Conv`: HWIO kernel [k, k, in, out], explicit padding."""
    pad = (c.padding, c.padding)
    return Conv(c.in_channels, c.out_channels, kernel_size=(c.kernel, c.kernel),
                strides=(c.stride, c.stride), padding=(pad, pad), dtype=dtype,
                param_dtype=dtype, precision=_PRECISION, rngs=rngs)


def _relu(x: jax.Array) -> jax.Array:
    return jnp.maximum(x, 0)


def max_pool_ceil(x: jax.Array, pool: S.MaxPool) -> jax.Array:
    """[N,H,W,C] -> [N,H',W',C] with H' = ``pool.out_size(H)`` (rounded up, Caffe).

    The bottom/right edge is padded with -inf where the last window needs it (v1.1 at
    224 never does; at 227 every pool does), so padded cells never win, whatever the
    sign of the input; the maximum is then taken over the ``k*k`` strided views of the
    window offsets, which XLA:CPU fuses into one pass (~3x faster than its
    ``lax.reduce_window``)."""
    eh, ew = pool.ceil_extra(x.shape[1]), pool.ceil_extra(x.shape[2])
    if eh or ew:
        x = jnp.pad(x, ((0, 0), (0, eh), (0, ew), (0, 0)), constant_values=-jnp.inf)
    k, s = pool.kernel, pool.stride
    ho, wo = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
    views = [x[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
             for i in range(k) for j in range(k)]
    return functools.reduce(jnp.maximum, views)


class Fire(nnx.Module):
    """squeeze -> ReLU -> [expand1x1 -> ReLU, expand3x3 -> ReLU] concatenated on channels
    (expand1x1 first), plus the optional bypass (identity or 1x1 conv), added after the
    concatenation with no ReLU after the sum."""

    def __init__(self, fire: S.Fire, *, dtype: np.dtype, rngs: nnx.Rngs) -> None:
        self.squeeze = _conv(fire.squeeze, dtype, rngs)
        self.expand1x1 = _conv(fire.expand1x1, dtype, rngs)
        self.expand3x3 = _conv(fire.expand3x3, dtype, rngs)
        self.identity_bypass = fire.bypass == "identity"
        if fire.bypass_conv is not None:
            self.bypass = _conv(fire.bypass_conv, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # [N,H,W,C] -> [N,H,W,C']
        s = _relu(self.squeeze(x))
        out = jnp.concatenate([_relu(self.expand1x1(s)), _relu(self.expand3x3(s))], axis=-1)
        if self.identity_bypass:
            out = out + x
        elif hasattr(self, "bypass"):
            out = out + self.bypass(x)
        return out


def _per_image_head(layers) -> int:
    """How many leading layers run image by image on CPU: through the second max pool.

    Those layers carry the large activations (conv1's output alone is 3 MB per image at
    224, 100 MB at batch 32).  Batched, XLA:CPU streams each of them through memory
    between its convolution, ReLU, pooling and concatenation kernels; mapped over the
    images (``lax.map``) they stay in cache.  Measured for 1_1 at batch 32 on 2 cores:
    302 -> 214 ms per batch; results are bit-identical.  Later layers run batched."""
    return S.through_pool(layers, 2)


class SqueezeNet(nnx.Module):
    """SqueezeNet for any :class:`ports.spec.Variant`, interpreting ``Variant.layers()``.

    Submodules are named after the spec's layers (``conv1``, ``fire2`` ... ``fire9``,
    ``conv10``); ``__call__`` takes NHWC input and returns logits ``[N, classes]``.
    Parameters are initialised with Flax's defaults (``rngs``, default ``nnx.Rngs(0)``);
    load real ones with :meth:`load_weights` or :func:`load`."""

    def __init__(self, version: str = "1_1", num_classes: int = 1000,
                 final_conv_padding: int = 0, bypass: str = "none", *,
                 dtype="float32", rngs: nnx.Rngs | None = None) -> None:
        self.variant = Variant(version, num_classes, final_conv_padding, bypass)
        self.dtype = _dtype(dtype)
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        for layer in self.variant.layers():
            if isinstance(layer, S.Conv):
                setattr(self, layer.name, _conv(layer, self.dtype, rngs))
            elif isinstance(layer, S.Fire):
                setattr(self, layer.name, Fire(layer, dtype=self.dtype, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:  # [N,H,W,3] -> [N, classes]
        h = x.astype(self.dtype)
        layers = self.variant.layers()
        head = _per_image_head(layers) if h.shape[0] > 1 and jax.default_backend() == "cpu" else 0
        if head:  # [N,H,W,3] -> [N,H',W',C], one image at a time
            h = jax.lax.map(lambda xi: self._layers(layers[:head], xi[None])[0], h)
        return self._layers(layers[head:], h)

    def _layers(self, layers, h: jax.Array) -> jax.Array:
        for layer in layers:
            if isinstance(layer, (S.Conv, S.Fire)):
                h = getattr(self, layer.name)(h)
            elif isinstance(layer, S.ReLU):
                h = _relu(h)
            elif isinstance(layer, S.MaxPool):
                h = max_pool_ceil(h, layer)
            elif isinstance(layer, S.Dropout):
                pass  # identity at inference
            elif isinstance(layer, S.GlobalAvgPool):
                h = jnp.mean(h, axis=(1, 2))
            else:  # pragma: no cover - the spec has no other layer kinds
                raise TypeError(f"unknown layer {layer!r}")
        return h

    def load_weights(self, weights: Weights) -> SqueezeNet:
        """Copy canonical weights in (strict: every name and shape checked first)."""
        check(weights, self.variant)
        state = to_state(weights, dtype=self.dtype)
        ours = nnx.to_pure_dict(nnx.state(self, nnx.Param))
        if _paths(state) != _paths(ours):  # the key table and the module disagree: a bug
            raise WeightsError(f"flax paths differ: {sorted(_paths(state) ^ _paths(ours))}")
        nnx.update(self, state)
        return self


def _paths(tree: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in tree.items():
        p = f"{prefix}/{k}" if prefix else str(k)
        out |= _paths(v, p) if isinstance(v, dict) else {p}
    return out


def to_weights(model: SqueezeNet, *, preprocessing: str = "torchvision",
               source: str = "ports.flax") -> Weights:
    """The model's parameters as canonical float32 weights."""
    state = jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    tensors = from_state(state, model.variant.to_meta()).tensors
    return make(tensors, model.variant, preprocessing=preprocessing, source=source)


def load(source, dtype: str = "float32") -> SqueezeNet:
    """Model from a weights file of any supported format, or :class:`Weights`."""
    from ..formats import read

    weights = source if isinstance(source, Weights) else read(source)
    v = weights.variant
    model = SqueezeNet(v.version, v.num_classes, v.final_conv_padding, v.bypass, dtype=dtype)
    return model.load_weights(weights)


# --- jit-compiled inference -------------------------------------------------------------------
_traces = {"forward": 0}


def trace_count() -> int:
    """How many times the jitted forward has been traced (compiled) in this process."""
    return _traces["forward"]


def _apply(graphdef, state, x: jax.Array) -> jax.Array:
    _traces["forward"] += 1  # Python side effect: runs only while tracing
    return nnx.merge(graphdef, state)(x)


# One compiled function per (graph definition, state shapes/dtypes, input shape/dtype):
# jax.jit's cache keys on the hashable graphdef (equal for equal architectures) and avals.
_forward = jax.jit(_apply, static_argnums=0)


def predict(model: SqueezeNet, x, batch_size: int = 32) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype."""
    x = as_input(x, model.variant)
    x = nchw_to_nhwc(x.astype(model.dtype, copy=False))  # [N,3,H,W] -> [N,H,W,3]
    graphdef, state = nnx.split(model)
    outs = [np.asarray(_forward(graphdef, state, jnp.asarray(x[i:i + batch_size])))
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0)

