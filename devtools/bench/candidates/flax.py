"""Flax NNX: the port's ``jax.jit``-compiled forward (:func:`ports.flax.jitted`, what
``predict`` runs) on an NHWC input already on the device (on CPU the fast model maps the
layers through the second pool over the images); in bfloat16 the bfloat16 model, its
input cast once."""

from __future__ import annotations

import jax.numpy as jnp

from ports.layouts import nchw_to_nhwc


def candidates(port: str, mod, weights, quick: bool, dtype: str = "float32") -> list:
    model = mod.load(weights, dtype)
    forward = mod.jitted(model)

    def flax_run(x):
        xj = jnp.asarray(nchw_to_nhwc(x).astype(model.dtype))
        return lambda: mod.to_numpy(forward(xj))
    return [("jax.jit forward", flax_run)]
