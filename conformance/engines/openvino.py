"""OpenVINO as an external engine: the project's own ONNX export, read by OpenVINO's ONNX
frontend and compiled for its CPU plugin.

    >>> model = load(weights_or_path)     # any weights file, or Weights
    >>> logits = predict(model, x)         # [N,3,H,W] float32 -> [N, classes]
    >>> precision(model)                   # what the CPU plugin computed in: "f32"

The graph is :func:`ports.formats.onnx.build`'s (never through a framework), handed to
``Core.read_model`` from memory.  On a CPU with AVX512-BF16 (or AMX) OpenVINO infers in
bfloat16 by default, silently; every float32 model here is compiled with
``INFERENCE_PRECISION_HINT=f32``, every ``dtype="bfloat16"`` one with ``bf16`` (the CPU
plugin's own bfloat16 mode: weights and activations rounded to bfloat16, oneDNN's kernels),
and the precision the compiled model reports is recorded with each result
(:func:`precision`), so a verdict is never given for work done in another precision (a CPU
without bfloat16 support reports ``f32`` for a bfloat16 model: an error, not a verdict).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import openvino as ov

from ports import _api
from ports._predict import as_input
from ports.formats import onnx as onnx_format
from ports.formats.onnx import activation_tensors
from ports.spec import Variant

__all__ = ["load", "predict", "precision", "activations", "compiled"]

PRECISION = {"float32": "f32", "bfloat16": "bf16"}  # INFERENCE_PRECISION_HINT per dtype


@dataclass
class OpenVinoModel:
    variant: Variant
    model: object      # ov.Model, as read from the ONNX bytes
    compiled: object   # ov.CompiledModel for the CPU plugin
    hint: str = "f32"  # its INFERENCE_PRECISION_HINT


def compiled(model, threads: int | None = None, hint: str = "f32"):
    """``model`` (an ``ov.Model``) compiled for the CPU in ``hint`` (``f32`` or ``bf16``);
    ``threads``: inference threads (default ``$OMP_NUM_THREADS`` or OpenVINO's choice)."""
    config = {"INFERENCE_PRECISION_HINT": hint}
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(model, "CPU", config)


def load(source, dtype: str = "float32", *, variant=None, fast: bool = True,
         threads: int | None = None) -> OpenVinoModel:
    """An OpenVINO model from a weights file of any supported format, or :class:`Weights`
    (``fast``: OpenVINO's own graph transformations are always on)."""
    name = _api.dtype_name(dtype)
    if name not in PRECISION:
        raise ValueError(f"openvino engine: dtype {name!r} not supported "
                         f"({', '.join(PRECISION)})")
    weights = _api.weights(source, variant)
    model = ov.Core().read_model(io.BytesIO(onnx_format.encode(weights)))
    hint = PRECISION[name]
    return OpenVinoModel(weights.variant, model, compiled(model, threads, hint), hint)


def precision(model: OpenVinoModel) -> str:
    """The inference precision the compiled model reports (``f32`` or ``bf16``: anything but
    its hint means the hint was ignored)."""
    return str(model.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())


def predict(model: OpenVinoModel, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> float32 logits ``[N, classes]``."""
    x = as_input(x, model.variant)
    request = model.compiled.create_infer_request()
    out = []
    for b in _api.batches(x, batch_size):
        request.infer({0: np.ascontiguousarray(b, dtype=np.float32)})
        out.append(np.array(request.get_output_tensor(0).data, dtype=np.float32))
    return np.concatenate(out)


def activations(model: OpenVinoModel, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` as OpenVINO computes them: the ONNX tensors of each activation
    (:func:`ports.formats.onnx.activation_tensors`) added as outputs of a
    copy of the model, compiled in the plain one's precision.  An added output keeps its
    producer from being fused away, so this is the unfused graph."""
    names = _api.activation_names(model.variant, layers)
    x = np.ascontiguousarray(as_input(x, model.variant), dtype=np.float32)
    tensors = activation_tensors(model.variant)
    marked = model.model.clone()
    wanted = list(dict.fromkeys(tensors[n] for n in names))
    marked.add_outputs(wanted)
    request = compiled(marked, hint=model.hint).create_infer_request()
    request.infer({0: x})
    values = {w: np.array(request.get_tensor(w).data, dtype=np.float32) for w in wanted}
    return {n: values[tensors[n]].reshape(len(x), -1) if n == "pool10" else values[tensors[n]]
            for n in names}
