"""OpenVINO: our ONNX export compiled for the CPU plugin in float32 (``f32`` hint) or, as
``openvino@bfloat16``, in its bfloat16 mode (``bf16`` hint), one infer request reused; and the
same with the ``LATENCY`` performance hint."""

from __future__ import annotations

import numpy as np


def candidates(port: str, mod, weights, quick: bool, dtype: str = "float32") -> list:
    model = mod.load(weights, dtype)

    def request_of(compiled):
        def make(x):
            request, x = compiled.create_infer_request(), np.ascontiguousarray(x, np.float32)

            def run():
                request.infer({0: x})
                return np.array(request.get_output_tensor(0).data)
            return run
        return make

    modes = [(f"CompiledModel {model.hint}, one infer request", request_of(model.compiled))]
    if not quick:
        import openvino as ov

        latency = ov.Core().compile_model(model.model, "CPU", {
            "INFERENCE_PRECISION_HINT": model.hint, "PERFORMANCE_HINT": "LATENCY",
            **({"INFERENCE_NUM_THREADS": t} if (t := _threads()) else {})})
        modes.append((f"CompiledModel {model.hint}, LATENCY hint", request_of(latency)))
    return modes


def _threads() -> int:
    import os

    return int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
