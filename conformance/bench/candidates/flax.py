"""Flax NNX: the port's ``jax.jit``-compiled forward on an NHWC input already on the device
(on CPU it maps the layers through the second pool over the images)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ports.layouts import nchw_to_nhwc


def candidates(port: str, mod, weights, quick: bool) -> list:
    model = mod.load(weights)
    graphdef, state = nnx.split(model)

    def flax_run(x):
        xj = jnp.asarray(nchw_to_nhwc(x))
        return lambda: np.asarray(mod._forward(graphdef, state, xj))
    return [("jax.jit forward", flax_run)]
