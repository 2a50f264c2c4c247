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

from ports import _api
from ports._predict import as_input
from ports.formats import onnx as onnx_format
from ports.spec import Variant

__all__ = ["load", "predict", "session", "activations", "marking_effect", "activation_tensors"]


@dataclass
class OrtModel:
    variant: Variant
    session: ort.InferenceSession
    input_name: str
    output_name: str
    proto: object = None  # the onnx.ModelProto the session runs


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


def load(source, dtype: str = "float32", *, variant=None, fast: bool = True) -> OrtModel:
    """An ORT model from a weights file of any supported format, or :class:`Weights`
    (``fast``: ORT's graph optimisations are always on)."""
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"onnxruntime engine: dtype {dtype!r} not supported (float32 only)")
    weights = _api.weights(source, variant)
    model = onnx_format.build(weights)
    sess = session(model.SerializeToString())
    return OrtModel(weights.variant, sess, sess.get_inputs()[0].name,
                    sess.get_outputs()[0].name, model)


def predict(model: OrtModel, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> float32 logits ``[N, classes]``."""
    x = as_input(x, model.variant)
    return np.concatenate([
        model.session.run([model.output_name],
                          {model.input_name: np.ascontiguousarray(b, dtype=np.float32)})[0]
        for b in _api.batches(x, batch_size)])


# --- the layer trace ------------------------------------------------------------------------
activation_tensors = onnx_format.activation_tensors


def _marked(model: OrtModel, names: list[str]) -> ort.InferenceSession:
    """A session on a copy of the graph whose intermediate tensors are graph outputs too.
    ORT cannot fuse a node whose output leaves the graph, so this runs the unfused graph."""
    from onnx import TensorProto, helper

    proto = type(model.proto)()
    proto.CopyFrom(model.proto)
    tensors = activation_tensors(model.variant)
    present = {o for node in proto.graph.node for o in node.output}
    missing = [n for n in names if tensors[n] not in present]
    if missing:  # the exporter and this table disagree: a bug, said plainly
        raise RuntimeError(f"ONNX graph lacks the tensors of {missing}")
    outputs = {o.name for o in proto.graph.output}
    for name in names:
        if tensors[name] not in outputs:
            proto.graph.output.append(
                helper.make_tensor_value_info(tensors[name], TensorProto.FLOAT, None))
            outputs.add(tensors[name])
    return session(proto.SerializeToString())


def activations(model: OrtModel, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` as ORT computes them, the intermediate tensors marked as outputs
    (see :func:`_marked`: the unfused graph)."""
    names = _api.activation_names(model.variant, layers)
    x = np.ascontiguousarray(as_input(x, model.variant), dtype=np.float32)
    tensors = activation_tensors(model.variant)
    sess = _marked(model, names)
    wanted = list(dict.fromkeys(tensors[n] for n in names))
    values = dict(zip(wanted, sess.run(wanted, {model.input_name: x})))
    return {n: values[tensors[n]].reshape(len(x), -1) if n == "pool10" else values[tensors[n]]
            for n in names}


def marking_effect(model: OrtModel, x) -> dict:
    """How far the logits move when every intermediate tensor is marked as an output."""
    x = np.ascontiguousarray(as_input(x, model.variant), dtype=np.float32)
    sess = _marked(model, model.variant.activation_names())
    marked = sess.run([model.output_name], {model.input_name: x})[0]
    plain = model.session.run([model.output_name], {model.input_name: x})[0]
    return {"note": "intermediate tensors marked as graph outputs: ORT runs the unfused graph",
            "marked_logits_max_abs": float(np.abs(marked - plain).max())}
