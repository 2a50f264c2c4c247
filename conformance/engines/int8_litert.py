"""LiteRT int8: full-integer post-training static quantization of our float ``.tflite`` with
``ai-edge-quantizer`` (Google's quantizer for LiteRT models, no TensorFlow), run by the
``ai-edge-litert`` interpreter.

    >>> quantize(float_tflite_bytes, "q.tflite", calibration)   # [1,3,H,W] float32, NCHW
    >>> model = load("q.tflite", variant, threads=2)
    >>> logits = predict(model, x)                    # NCHW float32 -> dequantized [N, classes]
    >>> run = int8_run(model, x)                      # conformance.quantized.QuantizedRun

Recipe ``static_wi8_ai8`` (the quantizer's default full-integer recipe): int8 activations
(asymmetric, per tensor, min/max of the calibration), int8 weights (symmetric, per output
channel), int32 bias, every operator computed in int8 (``compute_precision: INTEGER``);
the model's input and output are int8 too (this module quantizes the float input with the
input tensor's scale and zero point and dequantizes the logits).  The quantized file keeps
our tensor names (:func:`ports.formats.tflite.activation_tensors`), NHWC.

Calibration statistic: the quantizer's ``calibrate`` keeps a *moving average* of each
tensor's min and max over the calibration inputs (``new = 0.95 old + 0.05 this``), which
weights the first inputs most and clips what later, larger ones reach: with it, the logits'
range was 12.1 where the calibration views reach 20.6 (measured on the quick set), and 26
logits of coffee saturated at code 127.  :func:`quantize` calibrates each input alone and
merges the ranges with the quantizer's own ``qsv_utils.min_max_update`` (the minimum of
the minima, the maximum of the maxima): the statistic of ORT's ``MinMax``, so the two
runtimes are compared on equal terms; ``statistic="moving_average"`` gives the default.

One workaround, numbers unchanged: ai-edge-quantizer 0.10.0 gives the constant ``-inf`` of
our ``PADV2`` (the pad of Caffe's ceil-mode pools) the pad output's quantization parameters
with the rank of the calibrated min/max ``[1, 1, 1, 1]`` and then refuses them (``Ranks of
scales (5) and zps (5) must be the same as the tensor rank (1)``); :func:`quantize` hands it
those tensors' min and max reshaped to ``[1]``, the same values.  The pad value becomes the
lowest code (-128, the zero point: 0.0 after a ReLU), exact for a max pool of ReLU outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from ai_edge_quantizer import quantizer, recipe
from ai_edge_quantizer.utils import qsv_utils

from conformance.engines import litert
from conformance.quantized import QuantizedRun
from ports.formats import tflite
from ports.layouts import nchw_to_nhwc, nhwc_to_nchw, ohwi_to_oihw
from ports.spec import Variant

__all__ = ["quantize", "load", "predict", "int8_run", "interpreter", "SETTINGS"]

SIGNATURE = "serving_default"
SETTINGS = {"format": "full integer (int8 input, output and every operator)",
            "activations": "int8 asymmetric per tensor",
            "weights": "int8 symmetric per channel",
            "calibration": "min/max over every view (qsv_utils.min_max_update)",
            "tool": "ai-edge-quantizer 0.10.0, recipe static_wi8_ai8"}


def quantize(float_tflite: bytes, out_path, calibration, *,
             statistic: str = "min_max") -> None:
    """``float_tflite`` (our export's bytes) -> ``out_path``, full-integer int8, calibrated on
    ``calibration`` (an iterable of ``[1, 3, H, W]`` float32 arrays, NCHW; given to the
    model NHWC).  ``statistic``: ``min_max`` (the range of every view, as ORT's MinMax) or
    ``moving_average`` (the quantizer's default, see the module docstring)."""
    q = quantizer.Quantizer(float_tflite)
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    data = [{tflite.INPUT: np.ascontiguousarray(nchw_to_nhwc(x), np.float32)}
            for x in calibration]
    if statistic == "moving_average":  # the quantizer's default
        ranges = q.calibrate({SIGNATURE: data})
    elif statistic == "min_max":  # each view alone, merged by the quantizer's own rule
        ranges = {}
        for one in data:
            for name, qsv in q.calibrate({SIGNATURE: [one]}).items():
                ranges[name] = qsv_utils.min_max_update(ranges.get(name, {}), qsv)
    else:
        raise ValueError(f"calibration statistic {statistic!r}: expected 'min_max' or "
                         f"'moving_average'")
    for name, qsv in ranges.items():  # the PADV2 workaround of the module docstring
        if name.endswith(".pad"):
            ranges[name] = {k: (np.reshape(v, (1,)) if k in ("min", "max") else v)
                            for k, v in qsv.items()}
    q.quantize(ranges).export_model(str(out_path), overwrite=True)


def interpreter(path, *, threads: int | None = None, keep_tensors: bool = False):
    """An interpreter of the file at ``path`` (``threads``: default ``$OMP_NUM_THREADS`` or
    1; ``keep_tensors``: every intermediate tensor stays readable, the trace)."""
    interp = litert.interpreter(Path(path).read_bytes(), threads=threads,
                                keep_tensors=keep_tensors)
    interp.allocate_tensors()
    return interp


@dataclass
class Int8LiteRtModel:
    variant: Variant
    path: str
    interpreter: Interpreter
    threads: int | None = None


def load(path, variant: Variant, threads: int | None = None) -> Int8LiteRtModel:
    """The quantized file at ``path`` in an interpreter allocated for ``[1, H, W, 3]``."""
    return Int8LiteRtModel(variant, str(path), interpreter(path, threads=threads), threads)


def _quantized_input(interp: Interpreter, x_nchw: np.ndarray) -> np.ndarray:
    """One ``[1, 3, H, W]`` float image -> the int8 NHWC input the model takes."""
    detail = interp.get_input_details()[0]
    scale, zp = detail["quantization"]
    if detail["dtype"] != np.int8 or not scale:
        raise RuntimeError(f"int8 .tflite: input {detail['name']!r} is "
                           f"{np.dtype(detail['dtype']).name} with scale {scale}, expected int8")
    q = np.clip(np.rint(nchw_to_nhwc(np.asarray(x_nchw, np.float64)) / scale) + zp, -128, 127)
    return q.astype(np.int8)


def _invoke(interp: Interpreter, x_nchw: np.ndarray) -> None:
    detail = interp.get_input_details()[0]
    q = _quantized_input(interp, x_nchw)
    if tuple(detail["shape"]) != q.shape:
        interp.resize_tensor_input(detail["index"], list(q.shape), strict=False)
        interp.allocate_tensors()
    interp.set_tensor(detail["index"], q)
    interp.invoke()


def predict(model: Int8LiteRtModel, x) -> np.ndarray:
    """NCHW float input -> dequantized logits ``[N, classes]`` float32, one image at a
    time."""
    interp, out = model.interpreter, []
    detail = interp.get_output_details()[0]
    for b in np.asarray(x):
        _invoke(interp, b[None])
        scale, zp = detail["quantization"]
        out.append((interp.get_tensor(detail["index"]).astype(np.float32) - zp) * scale)
    return np.concatenate(out).astype(np.float32)


def _params(detail: dict) -> tuple[np.ndarray, np.ndarray, int]:
    p = detail["quantization_parameters"]
    return p["scales"].astype(np.float64), p["zero_points"], int(p["quantized_dimension"])


def conv_weights(model: Int8LiteRtModel, interp: Interpreter | None = None
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{conv name: (weight OIHW, bias)}`` dequantized from the file (per-channel scales),
    float64; each ``CONV_2D`` found by the name of its output tensor."""
    interp = interp or interpreter(model.path, keep_tensors=True)
    details = {t["index"]: t for t in interp.get_tensor_details()}
    tensors = tflite.activation_tensors(model.variant)
    by_output = {details[o["outputs"][0]]["name"]: o for o in interp._get_ops_details()
                 if o["op_name"] == "CONV_2D"}
    out = {}
    for conv in model.variant.convs():
        op = by_output.get(tensors[conv.name])
        if op is None:
            raise RuntimeError(f"int8 .tflite: no CONV_2D writes {tensors[conv.name]!r} "
                               f"({conv.name})")
        deq = []
        for index in op["inputs"][1:3]:
            scales, zps, axis = _params(details[index])
            value = interp.get_tensor(index).astype(np.float64)
            shape = [1] * value.ndim
            shape[axis] = -1
            deq.append((value - zps.reshape(shape)) * scales.reshape(shape))
        out[conv.name] = (ohwi_to_oihw(deq[0]), deq[1])
    return out


def int8_run(model: Int8LiteRtModel, x) -> QuantizedRun:
    """The int8 codes of every activation (and of the quantized input) on ``x`` (one image
    ``[1, 3, H, W]``): a second interpreter that keeps every tensor, each read by its name,
    NHWC turned NCHW; with scales, zero points and the dequantized weights."""
    interp = interpreter(model.path, threads=model.threads, keep_tensors=True)
    _invoke(interp, np.asarray(x))
    details = {t["name"]: t for t in interp.get_tensor_details()}
    tensors = dict(tflite.activation_tensors(model.variant), input=tflite.INPUT)
    codes, params = {}, {}
    for name, tensor in tensors.items():
        detail = details.get(tensor)
        if detail is None or detail["dtype"] != np.int8:
            raise RuntimeError(f"int8 .tflite: activation {name!r} (tensor {tensor!r}) is "
                               f"{'absent' if detail is None else np.dtype(detail['dtype'])}"
                               f", expected int8")
        scales, zps, _ = _params(detail)
        value = np.array(interp.get_tensor(detail["index"]))
        codes[name] = value if value.ndim != 4 else nhwc_to_nchw(value)
        params[name] = (float(scales[0]), int(zps[0]))
    return QuantizedRun(codes, params, conv_weights(model, interp))
