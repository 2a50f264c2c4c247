"""Chainer: ``using_config('train', False)`` + ``no_backprop_mode`` (the port's fused
forward-only layers apply there)."""

from __future__ import annotations

import chainer
import numpy as np


def candidates(port: str, mod, weights, quick: bool) -> list:
    model = mod.load(weights)

    def ch_run(x):
        x = np.ascontiguousarray(x)

        def run():
            with chainer.using_config("train", False), chainer.no_backprop_mode():
                return np.asarray(model(x).array)
        return run
    return [("no_backprop_mode, train=False", ch_run)]
