"""LiteRT: our ``.tflite`` export in the ``ai-edge-litert`` interpreter (its default CPU
delegate), the input tensor allocated once per batch shape."""

from __future__ import annotations

import numpy as np

from ports.layouts import nchw_to_nhwc


def candidates(port: str, mod, weights, quick: bool) -> list:
    model = mod.load(weights)

    def make(x):
        interp = mod.interpreter(model.flatbuffer)
        x = np.ascontiguousarray(nchw_to_nhwc(x), np.float32)
        index = interp.get_input_details()[0]["index"]
        interp.resize_tensor_input(index, list(x.shape), strict=False)
        interp.allocate_tensors()
        out = interp.get_output_details()[0]["index"]

        def run():
            interp.set_tensor(index, x)
            interp.invoke()
            return interp.get_tensor(out).copy()
        return run
    return [("Interpreter, default delegate", make)]
