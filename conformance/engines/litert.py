"""LiteRT (formerly TensorFlow Lite) as an external engine: the project's own ``.tflite``
export, run by the ``ai-edge-litert`` interpreter on the CPU.

    >>> model = load(weights_or_path)     # any weights file, or Weights
    >>> logits = predict(model, x)         # [N,3,H,W] float32 -> [N, classes]

The flatbuffer is :func:`ports.formats.tflite.encode`'s, written without TensorFlow; the
interpreter computes it with its own kernels (XNNPACK's where it applies them) in float32:
the file holds float32 tensors only, so there is no other precision to choose.  Its input is
NHWC ``[N, H, W, 3]``: this engine takes the canonical NCHW input and transposes it
(:func:`ports.layouts.nchw_to_nhwc`); the input is resized to each batch's shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from ports import _api
from ports._predict import as_input
from ports.formats import tflite
from ports.layouts import nchw_to_nhwc, nhwc_to_nchw
from ports.spec import Variant

__all__ = ["load", "predict", "precision", "activations", "interpreter"]


@dataclass
class LiteRtModel:
    variant: Variant
    flatbuffer: bytes
    interpreter: Interpreter
    shape: tuple = ()  # the input shape the interpreter is allocated for


def interpreter(flatbuffer: bytes, *, threads: int | None = None,
                keep_tensors: bool = False) -> Interpreter:
    """An interpreter of ``flatbuffer``; ``threads`` (default ``$OMP_NUM_THREADS`` or 1);
    ``keep_tensors``: every intermediate tensor stays readable after ``invoke`` (the trace)."""
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 1
    return Interpreter(model_content=flatbuffer, num_threads=threads,
                       experimental_preserve_all_tensors=keep_tensors)


def load(source, dtype: str = "float32", *, variant=None, fast: bool = True,
         threads: int | None = None) -> LiteRtModel:
    """A LiteRT model from a weights file of any supported format, or :class:`Weights`
    (``fast``: the interpreter applies its own delegate, always)."""
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"litert engine: dtype {dtype!r} not supported (float32 only)")
    weights = _api.weights(source, variant)
    flatbuffer = tflite.encode(weights)
    return LiteRtModel(weights.variant, flatbuffer, interpreter(flatbuffer, threads=threads))


def precision(model: LiteRtModel) -> str:
    """The types of the input and of every activation tensor the file computes
    (:func:`ports.formats.tflite.activation_tensors`; ``float32``): LiteRT computes each
    operator in its output tensor's type (the int32 constants of PAD and MEAN are operands,
    not activations), and a float32 model has no reduced-precision option on by default."""
    details = model.interpreter.get_tensor_details()
    computed = set(tflite.activation_tensors(model.variant).values()) | {tflite.INPUT}
    types = {np.dtype(t["dtype"]).name for t in details if t["name"] in computed}
    return "/".join(sorted(types))


def _invoke(interp: Interpreter, x_nhwc: np.ndarray, allocated: tuple = ()) -> tuple:
    """Run ``interp`` on ``x_nhwc``, its input resized first unless already ``allocated``
    for that shape; returns the shape it is allocated for now."""
    index = interp.get_input_details()[0]["index"]
    if tuple(allocated) != x_nhwc.shape:
        interp.resize_tensor_input(index, list(x_nhwc.shape), strict=False)
        interp.allocate_tensors()
    interp.set_tensor(index, x_nhwc)
    interp.invoke()
    return x_nhwc.shape


def predict(model: LiteRtModel, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input -> float32 logits ``[N, classes]``."""
    x = as_input(x, model.variant)
    interp, out = model.interpreter, []
    for b in _api.batches(x, batch_size):
        model.shape = _invoke(interp, np.ascontiguousarray(nchw_to_nhwc(b), np.float32),
                              model.shape)
        out.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    return np.concatenate(out)


def activations(model: LiteRtModel, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` as LiteRT computes them: a second interpreter of the same file that
    keeps every intermediate tensor (``experimental_preserve_all_tensors``), each read by the
    name :func:`ports.formats.tflite.activation_tensors` gives it, NHWC turned NCHW."""
    names = _api.activation_names(model.variant, layers)
    x = np.ascontiguousarray(nchw_to_nhwc(as_input(x, model.variant)), dtype=np.float32)
    interp = interpreter(model.flatbuffer, keep_tensors=True)
    _invoke(interp, x)
    by_name = {t["name"]: t["index"] for t in interp.get_tensor_details()}
    tensors = tflite.activation_tensors(model.variant)
    missing = sorted({tensors[n] for n in names} - set(by_name))
    if missing:  # the exporter and its table disagree: a bug, said plainly
        raise RuntimeError(f"the .tflite graph lacks the tensors {missing}")
    out = {}
    for n in names:
        value = np.array(interp.get_tensor(by_name[tensors[n]]), dtype=np.float32)
        out[n] = value.reshape(len(x), -1) if value.ndim != 4 else nhwc_to_nchw(value)
    return out
