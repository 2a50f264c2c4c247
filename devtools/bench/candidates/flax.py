"""Flax NNX: the port's ``jax.jit``-compiled forward (:func:`ports.flax.jitted`, what
``predict`` runs) on an NHWC input already on the device (on CPU the fast model maps the
layers through the second pool over the images)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ports.layouts import nchw_to_nhwc


def candidates(port: str, mod, weights, quick: bool) -> list:
    model = mod.load(weights)
    forward = mod.jitted(model)

    def flax_run(x):
        xj = jnp.asarray(nchw_to_nhwc(x))
        return lambda: np.asarray(forward(xj))
    return [("jax.jit forward", flax_run)]
