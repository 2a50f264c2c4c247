"""ONNX Runtime as an external engine: the project's own ONNX export, run by ORT on the CPU.

    >>> model = load(weights_or_path)     # any weights file, or Weights
    >>> logits = predict(model, x)         # [N,3,H,W] float32 -> [N, classes]

The graph is built by :mod:`ports.formats.onnx` from the spec (never through a framework) and
handed to an ``InferenceSession`` as bytes, with every graph optimisation enabled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from ports._predict import as_input
from ports.canonical import Weights
from ports.formats import onnx as onnx_format
from ports.spec import Variant

__all__ = ["load", "predict", "session"]


@dataclass
class OrtModel:
    variant: Variant
    session: ort.InferenceSession
    input_name: str
    output_name: str


def session(onnx_bytes: bytes, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session with all graph optimisations; ``threads``: intra-op threads (default:
    ``$OMP_NUM_THREADS`` or ORT's choice)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, sess_options=opts,
                                providers=["CPUExecutionProvider"])


def load(source, dtype: str = "float32") -> OrtModel:
    """An ORT model from a weights file of any supported format, or :class:`Weights`."""
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"onnxruntime engine: dtype {dtype!r} not supported (float32 only)")
    from ports.formats import read

    weights = source if isinstance(source, Weights) else read(source)
    sess = session(onnx_format.encode(weights))
    return OrtModel(weights.variant, sess, sess.get_inputs()[0].name,
                    sess.get_outputs()[0].name)


def predict(model: OrtModel, x, batch_size: int = 32) -> np.ndarray:
    """Canonical NCHW input -> float32 logits ``[N, classes]``."""
    x = as_input(x, model.variant)
    outs = []
    for i in range(0, len(x), batch_size):
        chunk = np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)
        outs.append(model.session.run([model.output_name], {model.input_name: chunk})[0])
    return np.concatenate(outs, axis=0)
