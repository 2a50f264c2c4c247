"""SqueezeNet (Iandola et al. 2016) in Flax NNX: ``conv1``, ``fire2`` .. ``fire9`` (each a
:class:`Fire`), ``drop9``, ``conv10``; NNX state paths ``conv1/kernel``, ``fire2/squeeze/bias``,
..., ``conv10/bias``.  NHWC activations, HWIO kernels, explicit padding (Flax's default
``"SAME"`` would change conv1's size), products at ``Precision.HIGHEST`` (no TF32/bf16),
float32 or float64 (``JAX_ENABLE_X64=1``), or bfloat16 (parameters and
activations).  Each named activation passes through
``record(name, h)`` (the layer trace); :mod:`.fast` subclasses :class:`SqueezeNet`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import _api
from .. import spec as S

POOL = S.MaxPool("pool")  # every max pool of SqueezeNet: 3x3, stride 2, ceil mode


def max_pool(x: jax.Array, pool: S.MaxPool = POOL) -> jax.Array:  # [N,H,W,C] -> [N,H',W',C]
    """Caffe's max pool, the output size rounded up: the last window may overhang the
    bottom/right edge, padded with -inf (``nnx.max_pool``'s initial value), which never wins."""
    pad = ((0, pool.ceil_extra(x.shape[1])), (0, pool.ceil_extra(x.shape[2])))
    return nnx.max_pool(x, (pool.kernel,) * 2, strides=(pool.stride,) * 2, padding=pad)


def jax_dtype(dtype) -> np.dtype:
    """float32, float64 or bfloat16 (``jnp.bfloat16``, ml_dtypes' NumPy dtype) as a NumPy
    dtype; anything else: ``ValueError``."""
    name = _api.dtype_name(dtype)
    return np.dtype(jnp.bfloat16) if name == "bfloat16" else np.dtype(name)


def to_numpy(a) -> np.ndarray:
    """A JAX array as NumPy in its dtype; bfloat16 widened to float32 (the port protocol)."""
    return _api.widened(a)


def _conv(in_c: int, out_c: int, kernel: int, dtype, rngs: nnx.Rngs, stride: int = 1,
          pad: int = 0) -> nnx.Conv:  # kernel HWIO [k, k, in, out], bias [out]
    return nnx.Conv(in_c, out_c, (kernel, kernel), (stride, stride), padding=((pad, pad),) * 2,
                    dtype=dtype, param_dtype=dtype, precision=jax.lax.Precision.HIGHEST,
                    rngs=rngs)


def _keep(name: str, h: jax.Array) -> jax.Array:
    return h  # the forward's default ``record``: keep nothing


class Fire(nnx.Module):
    """squeeze 1x1 + ReLU -> [expand1x1 + ReLU, expand3x3 + ReLU] on channels, plus the
    optional bypass (``"identity"`` or a 1x1 ``"conv"``, no ReLU after the sum)."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int,
                 bypass: str | None, dtype, rngs: nnx.Rngs) -> None:
        self.squeeze = _conv(inplanes, squeeze, 1, dtype, rngs)
        self.expand1x1 = _conv(squeeze, expand1x1, 1, dtype, rngs)
        self.expand3x3 = _conv(squeeze, expand3x3, 3, dtype, rngs, pad=1)
        self.identity_bypass = bypass == "identity"
        self.bypass = _conv(inplanes, expand1x1 + expand3x3, 1, dtype, rngs) \
            if bypass == "conv" else None

    def __call__(self, x: jax.Array, name: str, record=_keep) -> jax.Array:
        """[N,H,W,C] -> [N,H,W,C'], recording ``{name}.squeeze`` ... ``{name}.bypass``."""
        s = record(f"{name}.squeeze", nnx.relu(self.squeeze(x)))
        out = jnp.concatenate([record(f"{name}.expand1x1", nnx.relu(self.expand1x1(s))),
                               record(f"{name}.expand3x3", nnx.relu(self.expand3x3(s)))], -1)
        if self.identity_bypass:  # no ReLU after either sum
            return out + x
        if self.bypass is not None:
            return out + record(f"{name}.bypass", self.bypass(x))
        return out


class SqueezeNet(nnx.Module):
    """SqueezeNet ``version`` "1_0" or "1_1", conv10 padded by ``final_conv_padding`` (Caffe's
    v1.0: 1), the paper's ``bypass`` ("none", "simple", "complex"); ``model.variant``.
    Parameters start as Flax's defaults drawn from ``rngs`` (default ``nnx.Rngs(0)``)."""

    def __init__(self, version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
                 bypass: str = "none", *, dtype="float32", rngs: nnx.Rngs | None = None) -> None:
        self.variant = v = _api.variant(version, num_classes, final_conv_padding, bypass)
        self.dtype = dt = jax_dtype(dtype)
        if dt == np.float64 and not jax.config.jax_enable_x64:
            raise RuntimeError("float64 in JAX needs JAX_ENABLE_X64=1 (before importing jax)")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        filters, kernel, stride = S.STEM[v.version]  # 1_0: 96 7x7 /2, 1_1: 64 3x3 /2
        self.conv1 = _conv(3, filters, kernel, dt, rngs, stride=stride)
        inplanes = filters
        for n in range(2, 10):  # squeeze, expand1x1, expand3x3 of the paper's table
            squeeze, e1, e3 = S.FIRE_FILTERS[n]
            setattr(self, f"fire{n}", Fire(inplanes, squeeze, e1, e3,
                                           S.bypass_of(n, v.bypass), dt, rngs))
            inplanes = e1 + e3
        self.drop9 = nnx.Dropout(S.DROPOUT, deterministic=True)  # no state; train.dropout
        self.conv10 = _conv(512, v.num_classes, 1, dt, rngs, pad=v.final_conv_padding)

    def __call__(self, x: jax.Array, record=_keep) -> jax.Array:  # [N,H,W,3] -> [N, classes]
        h = self.stem(x.astype(self.dtype), record)
        return self.classifier(self.fires(range(2, 10), h, record), record)

    def stem(self, x: jax.Array, record=_keep) -> jax.Array:  # conv1, ReLU, pool1: [N,H',W',C]
        return record("pool1", self.pool(record("conv1", nnx.relu(self.conv1(x)))))

    def fires(self, ns: range, h: jax.Array, record=_keep) -> jax.Array:
        """Fire ``n`` for ``n`` in ``ns``, a max pool after those of ``S.POOL_AFTER``."""
        for n in ns:
            h = record(f"fire{n}", getattr(self, f"fire{n}")(h, f"fire{n}", record))
            if f"fire{n}" in S.POOL_AFTER[self.variant.version]:  # 1_0: 4, 8; 1_1: 3, 5
                h = record(f"pool{n}", self.pool(h))
        return h

    def classifier(self, h: jax.Array, record=_keep) -> jax.Array:  # [N,H,W,512] -> [N,C]
        h = self.drop9(h)  # the identity: deterministic
        h = record("conv10", nnx.relu(self.conv10(h)))  # Caffe's v1.0 pads by 1
        return record("logits", record("pool10", jnp.mean(h, axis=(1, 2))))  # global average

    def pool(self, h: jax.Array) -> jax.Array:
        return max_pool(h)
