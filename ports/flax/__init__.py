"""SqueezeNet in Flax NNX (JAX) (:mod:`.network`; NNX state paths ``conv1/kernel``,
``fire2/squeeze/kernel``, ..., as :mod:`ports.formats.flax` writes them).  ``load`` returns,
unless ``fast=False``, the same network with tuned layers (:mod:`.fast`, tested equal).

    >>> from ports.flax import SqueezeNet, load, predict
    >>> model = load("w.safetensors")               # any supported format, or Weights
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
from ..formats.canonical import Weights, check
from ..formats.flax import from_state, to_state
from ..layouts import nchw_to_nhwc
from . import fast as _fast
from .network import Fire, SqueezeNet, jax_dtype, max_pool, to_numpy
from .trace import activations
from .train import dropout, loss_and_grads, train_steps

__all__ = ["SqueezeNet", "Fire", "max_pool", "load", "fill", "predict", "to_weights", "jitted",
           "activations", "loss_and_grads", "train_steps", "dropout"]


def load(source, dtype="float32", *, variant=None, fast: bool = True) -> SqueezeNet:
    """Model from any supported weights file or :class:`Weights` (``variant``: for a file
    whose shapes cannot tell conv10's padding or a simple bypass)."""
    weights = _api.weights(source, variant)
    return fill(nnx.merge(*_abstract(fast, weights.variant, jax_dtype(dtype))), weights)


@lru_cache(maxsize=32)
def _abstract(fast: bool, variant: S.Variant, dtype: np.dtype) -> tuple:
    """(graphdef, abstract state) of the module for ``variant``, built once per architecture
    by ``nnx.eval_shape`` (shapes only, no random draws; 0.3 s), merged into a new module per
    load and filled with the weights, as Flax restores checkpoints."""
    build = _fast.SqueezeNet if fast else SqueezeNet
    return nnx.split(nnx.eval_shape(lambda: build(variant, dtype=dtype)))


def fill(model: SqueezeNet, weights: Weights) -> SqueezeNet:
    """Copy canonical weights into ``model`` under its NNX state paths (strict: every name
    and shape checked first); ``conformance/test_flax.py`` holds the paths to the codec's."""
    check(weights, model.variant)
    nnx.update(model, to_state(weights, dtype=model.dtype))
    return model


def predict(model: SqueezeNet, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype (a
    bfloat16 model's as float32)."""
    x = nchw_to_nhwc(as_input(x, model.variant).astype(model.dtype, copy=False))
    run = jitted(model)
    return np.concatenate([to_numpy(run(jnp.asarray(b))) for b in _api.batches(x, batch_size)])


def to_weights(model: SqueezeNet, *, preprocessing: str = "none",
               source: str | None = None) -> Weights:
    """The model's parameters as canonical float32 weights."""
    state = jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return from_state(state, {**model.variant.to_meta(), "preprocessing": preprocessing,
                              "source": source or "ports.flax"})


@partial(jax.jit, static_argnums=0)  # cached per (graphdef: the architecture, avals)
def _forward(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(x)


def jitted(model: SqueezeNet) -> Callable[[jax.Array], jax.Array]:
    """``model`` as a ``jax.jit`` function of NHWC device arrays, shared by equal models."""
    return partial(_forward, *nnx.split(model))
