"""ONNX Runtime int8: post-training static quantization of our float ONNX export with ORT's
own ``quantize_static``, and the quantized model's int8 activations read back.

    >>> quantize("f.onnx", "q.onnx", calibration)        # [1,3,H,W] float32 inputs, NCHW
    >>> model = load("q.onnx", variant, threads=2)
    >>> logits = predict(model, x)                        # dequantized float32 [N, classes]
    >>> run = int8_run(model, x)                          # conformance.quantized.QuantizedRun

The format is QDQ (``QuantizeLinear``/``DequantizeLinear`` pairs around float operators, which
ORT fuses into int8 kernels: ``QLinearConv``, ...), int8 activations (asymmetric, per tensor,
MinMax calibration) and int8 weights, **per channel** (symmetric, one scale per output
channel): what the quantization white paper (Krishnamoorthi 2018) recommends for
convolutional networks and what ai-edge-quantizer's full-integer recipe does; ORT's own
default, ``per_channel=False``, gives one scale per tensor.  Bias is int32 at scale
``input_scale * weight_scale``.  The quantizer keeps the tensor names of the float graph
(:func:`ports.formats.onnx.activation_tensors`; ``relu1`` is the output of a ``Conv`` whose
``Relu`` the quantizer removed, folded into the asymmetric range): each activation ``t`` is
quantized by a ``QuantizeLinear`` reading ``t`` (or, for ``logits``, produces the int8 tensor
a ``DequantizeLinear`` turns into ``t``).

Which kernels run: on ORT 1.31.1 (x86-64, AVX512-VNNI) the session fuses only 2 of the 26
convolutions of the int8-activation (S8S8) model into ``QLinearConv`` (conv1 and conv10);
the 24 Fire convolutions stay float ``Conv`` between ``DequantizeLinear`` and
``QuantizeLinear`` (the same numbers, computed in float32 on dequantized values, and
slower than the float model).  With uint8 activations (U8S8, ``activations="uint8"``) all 26
become ``QLinearConv`` (``tools/int8`` measures both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from conformance.engines.onnxruntime import session  # ORT_ENABLE_ALL fuses QDQ pairs
from conformance.quantized import QuantizedRun
from ports.formats import onnx as onnx_format
from ports.spec import Variant

__all__ = ["quantize", "load", "predict", "int8_run", "session", "SETTINGS"]

SETTINGS = {"format": "QDQ", "activations": "int8 (or uint8) asymmetric per tensor",
            "weights": "int8 symmetric per channel", "calibration": "MinMax",
            "tool": f"onnxruntime.quantization.quantize_static ({ort.__version__})"}


class _Reader(CalibrationDataReader):
    def __init__(self, inputs, name: str):
        self._it = iter(inputs)
        self._name = name

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {self._name: np.ascontiguousarray(x, np.float32)}


def quantize(float_onnx, out_path, calibration, *, per_channel: bool = True,
             activations: str = "int8") -> None:
    """``float_onnx`` (our export) -> ``out_path``, int8 QDQ, calibrated on ``calibration``
    (an iterable of ``[1, 3, H, W]`` float32 arrays, Caffe preprocessing).  ``activations``:
    ``int8`` (S8S8, the default here and ORT's) or ``uint8`` (U8S8: see the module
    docstring)."""
    kinds = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if activations not in kinds:
        raise ValueError(f"activations {activations!r}: expected one of {sorted(kinds)}")
    name = onnx.load(str(float_onnx), load_external_data=False).graph.input[0].name
    quantize_static(str(float_onnx), str(out_path), _Reader(calibration, name),
                    quant_format=QuantFormat.QDQ, activation_type=kinds[activations],
                    weight_type=QuantType.QInt8, per_channel=per_channel,
                    calibrate_method=CalibrationMethod.MinMax)


@dataclass
class Int8OrtModel:
    variant: Variant
    proto: onnx.ModelProto
    session: ort.InferenceSession
    threads: int | None = None


def load(path, variant: Variant, threads: int | None = None) -> Int8OrtModel:
    """The quantized model at ``path`` (written by :func:`quantize`) in a session."""
    proto = onnx.load(str(path))
    return Int8OrtModel(variant, proto, session(proto.SerializeToString(), threads), threads)


def predict(model: Int8OrtModel, x) -> np.ndarray:
    """NCHW float32 input -> dequantized logits ``[N, classes]`` float32, one image at a
    time (the quantized graph is calibrated for batch 1 and run so)."""
    sess = model.session
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: np.ascontiguousarray(b[None], np.float32)})[0]
                           for b in np.asarray(x)])


def _int8_tensors(proto: onnx.ModelProto, variant: Variant) -> dict[str, tuple[str, str, str]]:
    """``{activation or "input": (int8 tensor, scale initializer, zero point initializer)}``."""
    tensors = dict(onnx_format.activation_tensors(variant), input=proto.graph.input[0].name)
    quantizers = {n.input[0]: n for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    dequantizers = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for name, tensor in tensors.items():
        if tensor in quantizers:
            q = quantizers[tensor]
            out[name] = (q.output[0], q.input[1], q.input[2])
        elif tensor in dequantizers:
            d = dequantizers[tensor]
            out[name] = (d.input[0], d.input[1], d.input[2])
        else:
            raise RuntimeError(f"quantized ONNX graph: activation {name!r} (tensor {tensor!r}) "
                               f"has no QuantizeLinear or DequantizeLinear")
    return out


def _constant(proto: onnx.ModelProto, tensor: str, cache: dict) -> np.ndarray:
    """An initializer, or a ``DequantizeLinear`` of initializers evaluated (float64)."""
    if tensor not in cache:
        inits = {i.name: i for i in proto.graph.initializer}
        if tensor in inits:
            cache[tensor] = numpy_helper.to_array(inits[tensor])
        else:
            node = next((n for n in proto.graph.node if n.op_type == "DequantizeLinear"
                         and n.output[0] == tensor), None)
            if node is None:
                raise RuntimeError(f"quantized ONNX graph: {tensor!r} is not a constant")
            q, s, z = (_constant(proto, t, cache) for t in node.input[:3])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if s.ndim:  # per channel along ``axis``
                shape[axis] = -1
            cache[tensor] = (q.astype(np.float64) - z.astype(np.float64).reshape(shape)) * \
                s.astype(np.float64).reshape(shape)
    return cache[tensor]


def conv_weights(model: Int8OrtModel) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{conv name: (weight OIHW, bias)}`` dequantized from the graph, float64; each conv is
    found by the activation its output tensor holds."""
    proto, cache = model.proto, {}
    producer = {n.output[0]: n for n in proto.graph.node if n.op_type == "Conv"}
    tensors = onnx_format.activation_tensors(model.variant)
    out = {}
    for conv in model.variant.convs():
        node = producer.get(tensors[conv.name])
        if node is None:
            raise RuntimeError(f"quantized ONNX graph: no Conv writes {tensors[conv.name]!r} "
                               f"({conv.name})")
        out[conv.name] = (_constant(proto, node.input[1], cache),
                          _constant(proto, node.input[2], cache))
    return out


def int8_run(model: Int8OrtModel, x) -> QuantizedRun:
    """The int8 codes of every activation (and the quantized input) on ``x`` (one image
    ``[1, 3, H, W]``), read by marking each int8 tensor as a graph output; codes NCHW,
    ``[N, C]`` after the global pool; with scales, zero points and the dequantized weights."""
    from onnx import TensorProto, helper

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    where = _int8_tensors(proto, model.variant)
    present = {o.name for o in proto.graph.output}
    kinds = {i.name: i.data_type for i in proto.graph.initializer}
    for tensor, _, zp in where.values():
        if tensor not in present:
            proto.graph.output.append(helper.make_tensor_value_info(
                tensor, kinds.get(zp, TensorProto.INT8), None))
            present.add(tensor)
    sess = session(proto.SerializeToString(), model.threads)
    wanted = list(dict.fromkeys(t for t, _, _ in where.values()))
    x = np.ascontiguousarray(x, np.float32)
    values = dict(zip(wanted, sess.run(wanted, {sess.get_inputs()[0].name: x})))
    cache: dict = {}
    codes, params = {}, {}
    for name, (tensor, scale, zp) in where.items():
        v = values[tensor]
        codes[name] = v.reshape(len(x), -1) if name == "pool10" else v
        params[name] = (float(_constant(proto, scale, cache)), int(_constant(proto, zp, cache)))
    unsigned = values[where["input"][0]].dtype == np.uint8
    return QuantizedRun(codes, params, conv_weights(model), (0, 255) if unsigned else (-128, 127))
