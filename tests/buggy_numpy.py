"""Test-only ports with the mistakes people make porting SqueezeNet, built on the NumPy
reference's own layers (never on the shipped ports): each is the reference with one change.

``module(bug)`` returns a module with the port protocol's ``load``, ``predict`` and
``activations``; :data:`BUGS` maps each bug to a description.
"""

from __future__ import annotations

import types

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ports import _api
from ports import numpy as ref
from ports import spec as S
from ports._predict import as_input

BUGS = {
    "floor pooling": "every max pool rounds its output size down (Keras/Flax 'valid')",
    "expand3x3 first": "fire7 concatenates expand3x3 before expand1x1",
    "relu after the bypass": "fire4 rectifies the sum with its bypass",
}


def _floor_pool(x: np.ndarray, pool: S.MaxPool) -> np.ndarray:
    windows = sliding_window_view(x, (pool.kernel, pool.kernel), axis=(2, 3))
    return windows[:, :, ::pool.stride, ::pool.stride].max(axis=(4, 5))


def forward(model, x: np.ndarray, record, bug: str) -> np.ndarray:
    """:func:`ports.numpy.forward` with ``bug``."""
    p = model.params

    def conv(c, h):
        return ref.conv2d(h, p[f"{c.name}.weight"], p[f"{c.name}.bias"], c.stride, c.padding)

    h = x.astype(model.dtype)
    for layer in model.variant.layers():
        if isinstance(layer, S.Conv):
            h = conv(layer, h)
        elif isinstance(layer, S.ReLU):
            h = record(layer.of, ref.relu(h))
        elif isinstance(layer, S.MaxPool):
            pool = _floor_pool if bug == "floor pooling" else ref.max_pool_ceil
            h = record(layer.name, pool(h, layer))
        elif isinstance(layer, S.Fire):
            s = record(layer.squeeze.name, ref.relu(conv(layer.squeeze, h)))
            e1 = record(layer.expand1x1.name, ref.relu(conv(layer.expand1x1, s)))
            e3 = record(layer.expand3x3.name, ref.relu(conv(layer.expand3x3, s)))
            parts = [e3, e1] if bug == "expand3x3 first" and layer.name == "fire7" else [e1, e3]
            out = np.concatenate(parts, axis=1)
            if layer.bypass == "identity":
                out = out + h
            elif layer.bypass == "conv":
                out = out + record(layer.bypass_conv.name, conv(layer.bypass_conv, h))
            if bug == "relu after the bypass" and layer.name == "fire4":
                out = ref.relu(out)
            h = record(layer.name, out)
        elif isinstance(layer, S.GlobalAvgPool):
            h = record(layer.name, h.mean(axis=(2, 3)))
    return record("logits", h)


def module(bug: str) -> types.ModuleType:
    """A port module whose network has ``bug``."""
    if bug not in BUGS:
        raise KeyError(bug)
    mod = types.ModuleType(f"buggy_numpy[{bug}]")

    def load(source, dtype="float64", *, variant=None, fast=True):
        return ref.load(source, dtype, variant=variant)

    def activations(model, x, layers=None):
        names = _api.activation_names(model.variant, layers)
        out = {}

        def keep(name, h):
            out[name] = np.array(h, copy=True)
            return h

        forward(model, as_input(x, model.variant), keep, bug)
        return {n: out[n] for n in names}

    def predict(model, x, batch_size=_api.BATCH_SIZE):
        return activations(model, x, ["logits"])["logits"]

    mod.load, mod.activations, mod.predict = load, activations, predict
    return mod


def first_pool_that_floors(variant: S.Variant, size: int) -> str | None:
    """The first max pool whose floor-mode output is smaller than its ceil-mode one."""
    for layer in variant.layers():
        if isinstance(layer, S.MaxPool):
            floor = S.MaxPool(layer.name, layer.kernel, layer.stride, ceil_mode=False)
            if floor.out_size(size) != layer.out_size(size):
                return layer.name
            size = layer.out_size(size)
        elif isinstance(layer, S.Conv):
            size = layer.out_size(size)
    return None
