"""ONNX Runtime (the reference): our ONNX export in an ``InferenceSession`` with
``ORT_ENABLE_ALL``."""

from __future__ import annotations

import numpy as np


def candidates(port: str, mod, weights, quick: bool) -> list:
    model = mod.load(weights)

    def ort_run(x):
        feed = {model.input_name: np.ascontiguousarray(x)}
        return lambda: model.session.run([model.output_name], feed)[0]
    return [("InferenceSession ORT_ENABLE_ALL", ort_run)]
