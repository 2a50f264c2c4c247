"""LiteRT (TensorFlow Lite): export canonical weights as a complete SqueezeNet ``.tflite``
model, import weights from ``.tflite`` files written by anyone.  Needs the ``flatbuffers``
package only (its ``Builder`` writes; reading is a bounded parser of this module's own),
never TensorFlow or the LiteRT runtime.

Export (:func:`encode`, :func:`write`) interprets :meth:`ports.spec.Variant.layers` as one
subgraph, activations NHWC, every operator float32::

    input  "input"  float32 [1, H, W, 3], shape_signature [-1, -1, -1, 3]
    CONV_2D (filter OHWI [out, kH, kW, in], bias [out], fused RELU): conv1 VALID, 1x1
            convs VALID, 3x3 expand convs stride 1 SAME (== pad 1); conv10 with
            final_conv_padding=1 is PAD (zeros, 1 on each side of H and W) -> CONV_2D VALID
    max pool 3x3/2, Caffe's ceil mode: PADV2 (-inf, one row/column at the bottom/right)
            -> MAX_POOL_2D VALID.  Exact at every input size: a floor-mode pool of H + 1
            gives floor((H - 2) / 2) + 1 == ceil((H - 3) / 2) + 1 windows, the ceil-mode
            count, and no window is ever only padding (kernel 3 >= stride 2)
    Fire = squeeze CONV_2D+RELU -> CONCATENATION(expand1x1, expand3x3; axis 3)
           [-> ADD(the Fire's input), simple bypass; ADD(1x1 bypass CONV_2D, no
           activation, of the Fire's input), complex bypass; no activation after the sum]
    dropout: nothing (the identity at inference)
    MEAN over axes [1, 2], keep_dims false
    output "logits" float32 [1, num_classes], shape_signature [-1, num_classes]

H = W = the input size of the weights' preprocessing mode (227 for ``caffe``, else 224);
the batch and the spatial size are dynamic (``Interpreter.resize_tensor_input``).  Every
variant of the spec (versions 1_0 and 1_1, any ``num_classes``, ``final_conv_padding`` 0
or 1, bypass none / simple / complex) is expressible.  Tensors are named by canonical
names (``conv1.weight`` [O,H,W,I], ``fire2.squeeze.bias`` ...) and activations as in
:func:`activation_tensors`.  The canonical metadata is stored as model metadata
``squeezenet_ports`` (a buffer of UTF-8 JSON), the model description is ``SqueezeNet
<variant id>: <source>``, and a ``serving_default`` signature maps ``input`` -> ``logits``.
Buffer 0 is the empty sentinel; each constant has its own buffer, 16-byte aligned.  Schema
version 3, file identifier ``TFL3``; the same weights always give the same bytes.

Import (:func:`read`, :func:`decode`) parses the flatbuffer with :class:`_Reader`, which
checks every offset, vtable and vector length against the blob before reading it (a
corrupt file is a :class:`WeightsError` saying what lies where, never an ``IndexError``),
and refuses files larger than :data:`MAX_BYTES` and more tensors or operators than
SqueezeNet could need.  Like :mod:`ports.formats.onnx` it does not trust names: it walks
the ``CONV_2D`` operators of the first subgraph in execution order, cuts them into the
spec's groups (conv1, each Fire's 3 or 4 convs, conv10) and matches each conv of a group
by its filter shape, stride and padding; filters and biases may be FLOAT32 constants or
FLOAT16 constants behind a ``DEQUANTIZE``.  The variant comes from the graph: conv1's
shape gives the version, conv10's filters ``num_classes``, a zero ``PAD`` (or ``PADV2``)
before conv10 ``final_conv_padding``; 30 convs mean the complex bypass, an ``ADD`` of two
computed tensors in a 26-conv graph the simple bypass.  ``squeezenet_ports`` metadata,
where present, supplies the preprocessing mode and source and must name the variant the
graph is.  A Fire whose ``CONCATENATION`` puts expand3x3 first is refused.  What Keras 3's
``model.export(path, format="litert")`` writes of :mod:`ports.keras` (TensorFlow's converter:
fused ``CONV_2D``, ``PADV2`` + ``MAX_POOL_2D``, ``PAD`` before conv10, the global mean as
``SUM`` / ``DIV``, every tensor with an empty quantization table) reads back bit-equal
(``conformance/test_keras_litert.py``, which also runs both files side by side).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from .. import spec as S
from ..errors import WeightsError
from ..layouts import ohwi_to_oihw, oihw_shape_to_ohwi, oihw_to_ohwi
from ..preprocess import INPUT_SIZE
from ..spec import Variant
from . import _graph
from ._io import atomic_write, read_limited
from ._library import dependency
from .canonical import Weights, make, meta_variant, string_meta

NAME = "tflite"
INPUT, OUTPUT = "input", "logits"
IDENTIFIER = b"TFL3"       # the schema's file_identifier
SCHEMA_VERSION = 3         # Model.version
METADATA = "squeezenet_ports"   # Model.metadata entry holding the canonical metadata (JSON)
SIGNATURE = "serving_default"
DEFAULT_SIZE = 224         # input side for a preprocessing mode without one (``none``)
ALIGN = 16                 # alignment of constant buffers (the converter's)
MAX_BYTES = 512 * 1024**2
# Bounds on what a reader walks (SqueezeNet needs ~130 tensors and ~90 operators).
MAX_SUBGRAPHS, MAX_TENSORS, MAX_OPERATORS, MAX_BUFFERS = 64, 65536, 16384, 65536
MAX_CODES, MAX_METADATA, MAX_RANK, MAX_DIM = 1024, 1024, 8, 2**31

# --- the schema, as data (tensorflow/compiler/mlir/lite/schema/schema.fbs) ---------------------
# Field slots of each table: the field's index in the table's declaration (its vtable entry
# is at 4 + 2 * slot).
MODEL = {"version": 0, "operator_codes": 1, "subgraphs": 2, "description": 3, "buffers": 4,
         "metadata_buffer": 5, "metadata": 6, "signature_defs": 7}
SUBGRAPH = {"tensors": 0, "inputs": 1, "outputs": 2, "operators": 3, "name": 4}
TENSOR = {"shape": 0, "type": 1, "buffer": 2, "name": 3, "quantization": 4,
          "is_variable": 5, "sparsity": 6, "shape_signature": 7}
BUFFER = {"data": 0, "offset": 1, "size": 2}
QUANTIZATION_PARAMETERS = {"min": 0, "max": 1, "scale": 2, "zero_point": 3}
OPERATOR = {"opcode_index": 0, "inputs": 1, "outputs": 2, "builtin_options_type": 3,
            "builtin_options": 4, "custom_options": 5}
OPERATOR_CODE = {"deprecated_builtin_code": 0, "custom_code": 1, "version": 2,
                 "builtin_code": 3}
METADATA_TABLE = {"name": 0, "buffer": 1}          # table Metadata
SIGNATURE_DEF = {"inputs": 0, "outputs": 1, "signature_key": 2, "subgraph_index": 4}
TENSOR_MAP = {"name": 0, "tensor_index": 1}
CONV_2D_OPTIONS = {"padding": 0, "stride_w": 1, "stride_h": 2, "fused_activation_function": 3,
                   "dilation_w_factor": 4, "dilation_h_factor": 5}
POOL_2D_OPTIONS = {"padding": 0, "stride_w": 1, "stride_h": 2, "filter_width": 3,
                   "filter_height": 4, "fused_activation_function": 5}
CONCATENATION_OPTIONS = {"axis": 0, "fused_activation_function": 1}
ADD_OPTIONS = {"fused_activation_function": 0}
REDUCER_OPTIONS = {"keep_dims": 0}
# (struct format, default) of the option fields that are not an int32 defaulting to 0
OPTION_FORMATS = {"padding": ("b", 0), "fused_activation_function": ("b", 0),
                  "dilation_w_factor": ("i", 1), "dilation_h_factor": ("i", 1),
                  "keep_dims": ("?", False)}
# enum TensorType
FLOAT32, FLOAT16, INT32, INT64 = 0, 1, 2, 4
TYPE_NAMES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING",
              6: "BOOL", 7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64"}
# enum BuiltinOperator
ADD, CONCATENATION, CONV_2D, DEQUANTIZE, MAX_POOL_2D, RELU = 0, 2, 3, 6, 17, 19
PAD, MEAN, PADV2 = 34, 40, 60
OP_NAMES = {ADD: "ADD", CONCATENATION: "CONCATENATION", CONV_2D: "CONV_2D",
            DEQUANTIZE: "DEQUANTIZE", MAX_POOL_2D: "MAX_POOL_2D", RELU: "RELU", PAD: "PAD",
            MEAN: "MEAN", PADV2: "PADV2"}
PLACEHOLDER_FOR_GREATER_OP_CODES = 127  # OperatorCode.deprecated_builtin_code's ceiling
# enum BuiltinOptions (the union's type codes)
CONV_2D_OPTIONS_TYPE, POOL_2D_OPTIONS_TYPE = 1, 5
CONCATENATION_OPTIONS_TYPE, ADD_OPTIONS_TYPE = 10, 11
PAD_OPTIONS_TYPE, REDUCER_OPTIONS_TYPE, PADV2_OPTIONS_TYPE = 22, 27, 43
# enum Padding, enum ActivationFunctionType
SAME, VALID = 0, 1
NONE, RELU_ACT = 0, 1
ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH",
                    5: "SIGN_BIT"}


def _flatbuffers():
    return dependency("flatbuffers", NAME)


def activation_tensors(variant: Variant) -> dict[str, str]:
    """Activation name (:meth:`Variant.activation_names`) -> the tensor of our export that
    holds it, NHWC (``pool10`` and ``logits`` [N, classes], the same tensor).  Convolutions
    fuse their ReLU, so ``conv1``, ``fire2.squeeze`` ... are the convolutions' outputs; a
    Fire with a bypass is ``fireN`` (the ADD), its concatenation ``fireN.concat``."""
    out = {}
    for layer in variant.layers():
        if isinstance(layer, S.ReLU):
            out[layer.of] = layer.of
        elif isinstance(layer, S.MaxPool):
            out[layer.name] = layer.name
        elif isinstance(layer, S.Fire):
            for c in layer.convs():
                out[c.name] = c.name
            out[layer.name] = layer.name
        elif isinstance(layer, S.GlobalAvgPool):
            out[layer.name] = OUTPUT
    out["logits"] = OUTPUT
    return out


# --- export ----------------------------------------------------------------------------------
class _Graph:
    """Tensors (with their constant data) and operators, in the order they are added."""

    def __init__(self) -> None:
        self.tensors: list[dict] = []
        self.index: dict[str, int] = {}
        self.ops: list[tuple] = []   # (builtin code, inputs, outputs, options type, options)

    def tensor(self, name: str, shape, *, signature=None, type: int = FLOAT32,
               data: bytes | None = None) -> str:
        self.index[name] = len(self.tensors)
        self.tensors.append({"name": name, "shape": [int(d) for d in shape], "type": type,
                             "signature": signature, "data": data})
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        kind = {np.dtype(np.float32): FLOAT32, np.dtype(np.float16): FLOAT16,
                np.dtype(np.int32): INT32}[array.dtype]
        array = np.ascontiguousarray(array, array.dtype.newbyteorder("<"))
        return self.tensor(name, array.shape, type=kind, data=array.tobytes())

    def op(self, code: int, inputs: list[str], output: str, shape, options_type: int,
           options: list[tuple]) -> str:
        """``options``: (slot, struct format, value) of the options table's fields."""
        signature = [-1] * (len(shape) - 1) + [shape[-1]]
        self.tensor(output, shape, signature=signature)
        self.ops.append((code, [self.index[i] for i in inputs], [self.index[output]],
                         options_type, options))
        return output


def _conv_options(padding: int, stride: int, activation: int) -> list[tuple]:
    o = CONV_2D_OPTIONS
    return [(o["padding"], "b", padding), (o["stride_w"], "i", stride),
            (o["stride_h"], "i", stride), (o["fused_activation_function"], "b", activation),
            (o["dilation_w_factor"], "i", 1), (o["dilation_h_factor"], "i", 1)]


def graph(weights: Weights) -> _Graph:
    """The model of ``weights`` as tensors and operators (see the module docstring)."""
    variant = weights.variant
    g = _Graph()
    size = INPUT_SIZE.get(weights.meta["preprocessing"], DEFAULT_SIZE)
    g.tensor(INPUT, [1, size, size, 3], signature=[-1, -1, -1, 3])
    shapes = {INPUT: (size, 3)}   # activation -> (spatial side, channels) at the default size
    pool_paddings = g.constant("pool.paddings", np.array([[0, 0], [0, 1], [0, 1], [0, 0]],
                                                         np.int32))
    pool_value = g.constant("pool.pad_value", np.array(-np.inf, np.float32))
    conv_paddings = {}

    def node(code, inputs, name, side, channels, options_type, options=()) -> str:
        shapes[name] = (side, channels)
        return g.op(code, inputs, name, [1, side, side, channels], options_type, list(options))

    def conv(c: S.Conv, x: str, name: str, *, relu: bool = True) -> str:
        side = shapes[x][0]
        w = g.constant(f"{c.name}.weight", oihw_to_ohwi(weights.tensors[f"{c.name}.weight"]))
        b = g.constant(f"{c.name}.bias", np.asarray(weights.tensors[f"{c.name}.bias"]))
        padding = VALID
        if c.padding and c.stride == 1 and c.kernel == 2 * c.padding + 1:
            padding = SAME   # the 3x3 expand convs: SAME at stride 1 is pad (k - 1) / 2
        elif c.padding:      # conv10's final_conv_padding: an explicit zero PAD
            p = c.padding
            if p not in conv_paddings:
                conv_paddings[p] = g.constant(f"conv.paddings{p}", np.array(
                    [[0, 0], [p, p], [p, p], [0, 0]], np.int32))
            x = node(PAD, [x, conv_paddings[p]], f"{c.name}.pad", side + 2 * p, shapes[x][1],
                     PAD_OPTIONS_TYPE)
        return node(CONV_2D, [x, w, b], name, c.out_size(side), c.out_channels,
                    CONV_2D_OPTIONS_TYPE,
                    _conv_options(padding, c.stride, RELU_ACT if relu else NONE))

    h = INPUT
    for layer in variant.layers():
        if isinstance(layer, S.Conv):
            h = conv(layer, h, layer.name)
        elif isinstance(layer, S.ReLU):
            continue  # fused into the convolution before it
        elif isinstance(layer, S.MaxPool):
            side, channels = shapes[h]
            extra = layer.stride - 1  # see the module docstring: exact at every size
            padded = node(PADV2, [h, pool_paddings, pool_value], f"{layer.name}.pad",
                          side + extra, channels, PADV2_OPTIONS_TYPE)
            o = POOL_2D_OPTIONS
            h = node(MAX_POOL_2D, [padded], layer.name, layer.out_size(side), channels,
                     POOL_2D_OPTIONS_TYPE,
                     [(o["padding"], "b", VALID), (o["stride_w"], "i", layer.stride),
                      (o["stride_h"], "i", layer.stride), (o["filter_width"], "i", layer.kernel),
                      (o["filter_height"], "i", layer.kernel),
                      (o["fused_activation_function"], "b", NONE)])
        elif isinstance(layer, S.Fire):
            s = conv(layer.squeeze, h, layer.squeeze.name)
            e1 = conv(layer.expand1x1, s, layer.expand1x1.name)
            e3 = conv(layer.expand3x3, s, layer.expand3x3.name)
            o = CONCATENATION_OPTIONS
            out = node(CONCATENATION, [e1, e3],
                       layer.name if layer.bypass is None else f"{layer.name}.concat",
                       shapes[e1][0], layer.out_channels, CONCATENATION_OPTIONS_TYPE,
                       [(o["axis"], "i", 3), (o["fused_activation_function"], "b", NONE)])
            if layer.bypass is not None:
                other = h if layer.bypass == "identity" else \
                    conv(layer.bypass_conv, h, layer.bypass_conv.name, relu=False)
                out = node(ADD, [out, other], layer.name, shapes[out][0], layer.out_channels,
                           ADD_OPTIONS_TYPE,
                           [(ADD_OPTIONS["fused_activation_function"], "b", NONE)])
            h = out
        elif isinstance(layer, S.Dropout):
            continue  # identity at inference
        elif isinstance(layer, S.GlobalAvgPool):
            axes = g.constant("mean.axes", np.array([1, 2], np.int32))
            classes = shapes[h][1]
            g.tensor(OUTPUT, [1, classes], signature=[-1, classes])
            g.ops.append((MEAN, [g.index[h], g.index[axes]], [g.index[OUTPUT]],
                          REDUCER_OPTIONS_TYPE, [(REDUCER_OPTIONS["keep_dims"], "?", False)]))
            h = OUTPUT
        else:  # pragma: no cover - the spec has no other layer kinds
            raise TypeError(f"unknown layer {layer!r}")
    assert h == OUTPUT
    return g


_PREPEND = {"b": "PrependInt8Slot", "B": "PrependUint8Slot", "i": "PrependInt32Slot",
            "I": "PrependUint32Slot", "?": "PrependBoolSlot"}


def encode(weights: Weights) -> bytes:
    """The ``.tflite`` bytes of ``weights``."""
    description = f"SqueezeNet {weights.variant.id}: {weights.meta.get('source', '')}"
    return serialize(graph(weights), weights.meta, description)


def serialize(g: _Graph, meta: dict | None, description: str) -> bytes:
    """The flatbuffer of graph ``g``, ``meta`` (when given) as the ``squeezenet_ports``
    metadata."""
    flatbuffers = _flatbuffers()
    meta_json = None if meta is None else json.dumps(dict(meta), sort_keys=True).encode("ascii")
    total = sum(len(t["data"] or b"") + ALIGN for t in g.tensors) + len(meta_json or b"")
    b = flatbuffers.Builder(total + (1 << 16))

    def table(fields: list[tuple]) -> int:
        """A table of (slot, kind, value): kind a struct format, or "o" (an offset)."""
        b.StartObject(max(f[0] for f in fields) + 1 if fields else 0)
        for slot, kind, value in fields:
            if kind == "o":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            else:
                getattr(b, _PREPEND[kind])(slot, value, None)  # always written
        return b.EndObject()

    def offsets(items: list[int]) -> int:
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    def ints(values: list[int]) -> int:
        return b.CreateNumpyVector(np.asarray(values, "<i4"))

    def data(blob: bytes) -> int:
        b.StartVector(1, len(blob), ALIGN)
        b.head -= len(blob)
        b.Bytes[b.head:b.head + len(blob)] = blob
        return b.EndVector()

    # Buffers: 0 the empty sentinel, then one per constant, then the metadata.
    buffers = [table([])]
    for t in g.tensors:
        t["buffer"] = 0
        if t["data"] is not None:
            t["buffer"] = len(buffers)
            buffers.append(table([(BUFFER["data"], "o", data(t["data"]))]))
    meta_buffer = len(buffers)
    if meta_json is not None:
        buffers.append(table([(BUFFER["data"], "o", data(meta_json))]))

    tensors = []
    for t in g.tensors:
        fields = [(TENSOR["shape"], "o", ints(t["shape"])), (TENSOR["type"], "b", t["type"]),
                  (TENSOR["buffer"], "I", t["buffer"]),
                  (TENSOR["name"], "o", b.CreateString(t["name"]))]
        if t["signature"] is not None:
            fields.append((TENSOR["shape_signature"], "o", ints(t["signature"])))
        tensors.append(table(fields))
    codes = sorted({op[0] for op in g.ops})
    operators = []
    for code, inputs, outputs, options_type, options in g.ops:
        fields = [(OPERATOR["opcode_index"], "I", codes.index(code)),
                  (OPERATOR["inputs"], "o", ints(inputs)),
                  (OPERATOR["outputs"], "o", ints(outputs))]
        if options_type:
            opts = table(options)
            fields += [(OPERATOR["builtin_options_type"], "B", options_type),
                       (OPERATOR["builtin_options"], "o", opts)]
        operators.append(table(fields))
    subgraph = table([
        (SUBGRAPH["tensors"], "o", offsets(tensors)),
        (SUBGRAPH["inputs"], "o", ints([g.index[INPUT]])),
        (SUBGRAPH["outputs"], "o", ints([g.index[OUTPUT]])),
        (SUBGRAPH["operators"], "o", offsets(operators)),
        (SUBGRAPH["name"], "o", b.CreateString("main"))])
    operator_codes = [table([
        (OPERATOR_CODE["deprecated_builtin_code"], "b", min(c, PLACEHOLDER_FOR_GREATER_OP_CODES)),
        (OPERATOR_CODE["version"], "i", 1), (OPERATOR_CODE["builtin_code"], "i", c)])
        for c in codes]

    def tensor_map(name: str) -> int:
        return table([(TENSOR_MAP["name"], "o", b.CreateString(name)),
                      (TENSOR_MAP["tensor_index"], "I", g.index[name])])

    signature = table([(SIGNATURE_DEF["inputs"], "o", offsets([tensor_map(INPUT)])),
                       (SIGNATURE_DEF["outputs"], "o", offsets([tensor_map(OUTPUT)])),
                       (SIGNATURE_DEF["signature_key"], "o", b.CreateString(SIGNATURE)),
                       (SIGNATURE_DEF["subgraph_index"], "I", 0)])
    metadata = [] if meta_json is None else [
        table([(METADATA_TABLE["name"], "o", b.CreateString(METADATA)),
               (METADATA_TABLE["buffer"], "I", meta_buffer)])]
    model = table([
        (MODEL["version"], "I", SCHEMA_VERSION),
        (MODEL["operator_codes"], "o", offsets(operator_codes)),
        (MODEL["subgraphs"], "o", offsets([subgraph])),
        (MODEL["description"], "o", b.CreateString(description, errors="replace")),
        (MODEL["buffers"], "o", offsets(buffers)),
        (MODEL["metadata"], "o", offsets(metadata)),
        (MODEL["signature_defs"], "o", offsets([signature]))])
    b.Finish(model, file_identifier=IDENTIFIER)
    return bytes(b.Output())


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    return [atomic_write(path, encode(weights), overwrite=overwrite)]


# --- import: a bounded flatbuffer reader -----------------------------------------------------
class _Reader:
    """Reads a flatbuffer, checking every position against the blob first: anything out of
    bounds is a :class:`WeightsError` naming what was being read."""

    def __init__(self, blob: bytes) -> None:
        self.blob, self.size = blob, len(blob)

    def need(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise WeightsError(f"{what}: {length} bytes at offset {pos} lie beyond the "
                               f"{self.size}-byte file (truncated or corrupt)")

    def scalar(self, fmt: str, pos: int, what: str):
        self.need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from("<" + fmt, self.blob, pos)[0]

    def follow(self, pos: int, what: str) -> int:
        """The position a uoffset stored at ``pos`` points to."""
        target = pos + self.scalar("I", pos, what)
        self.need(target, 4, what)
        return target

    def table(self, pos: int, what: str) -> _Table:
        return _Table(self, pos, what)

    def root(self) -> _Table:
        return self.table(self.follow(0, "root table offset"), "Model")


class _Table:
    """One table: its fields by slot, each read only after its bounds are checked."""

    def __init__(self, reader: _Reader, pos: int, what: str) -> None:
        self.r, self.pos, self.what = reader, pos, what
        self.vtable = pos - reader.scalar("i", pos, f"{what} vtable offset")
        vsize = reader.scalar("H", self.vtable, f"{what} vtable")
        self.osize = reader.scalar("H", self.vtable + 2, f"{what} vtable")
        if vsize < 4 or vsize % 2:
            raise WeightsError(f"{what}: vtable size {vsize} is not a valid vtable")
        reader.need(self.vtable, vsize, f"{what} vtable")
        reader.need(pos, self.osize, f"{what} table")
        self.slots = (vsize - 4) // 2

    def field(self, slot: int, size: int, name: str) -> int | None:
        """The position of field ``slot`` (``size`` bytes), or None where it is absent."""
        if slot >= self.slots:
            return None
        offset = self.r.scalar("H", self.vtable + 4 + 2 * slot, f"{self.what} vtable")
        if offset == 0:
            return None
        if offset + size > self.osize:
            raise WeightsError(f"{self.what}.{name}: field at {offset} lies outside the "
                               f"{self.osize}-byte table")
        return self.pos + offset

    def scalar(self, slot: int, fmt: str, default, name: str):
        pos = self.field(slot, struct.calcsize(fmt), name)
        return default if pos is None else self.r.scalar(fmt, pos, f"{self.what}.{name}")

    def target(self, slot: int, name: str) -> int | None:
        pos = self.field(slot, 4, name)
        return None if pos is None else self.r.follow(pos, f"{self.what}.{name}")

    def vector(self, slot: int, item: int, name: str, limit: int) -> tuple[int, int]:
        """(position of the first element, count) of vector field ``slot``; (0, 0) absent."""
        start = self.target(slot, name)
        if start is None:
            return 0, 0
        count = self.r.scalar("I", start, f"{self.what}.{name} length")
        if count > limit:
            raise WeightsError(f"{self.what}.{name} has {count} entries, more than the "
                               f"{limit} allowed")
        self.r.need(start + 4, count * item, f"{self.what}.{name} ({count} entries)")
        return start + 4, count

    def bytes(self, slot: int, name: str, limit: int = MAX_BYTES) -> bytes | None:
        pos = self.field(slot, 4, name)
        if pos is None:
            return None
        start, count = self.vector(slot, 1, name, limit)
        return self.r.blob[start:start + count]

    def string(self, slot: int, name: str) -> str:
        data = self.bytes(slot, name, 1 << 20)
        return "" if data is None else data.decode("utf-8", "replace")

    def ints(self, slot: int, name: str, limit: int, fmt: str = "i") -> list[int] | None:
        if self.field(slot, 4, name) is None:
            return None
        start, count = self.vector(slot, 4, name, limit)
        return list(struct.unpack_from(f"<{count}{fmt}", self.r.blob, start))

    def tables(self, slot: int, name: str, limit: int) -> list[_Table]:
        start, count = self.vector(slot, 4, name, limit)
        return [self.r.table(self.r.follow(start + 4 * i, f"{self.what}.{name}[{i}]"),
                             f"{name}[{i}]") for i in range(count)]


def read(path, *, variant: Variant | None = None) -> Weights:
    """A ``.tflite`` file -> canonical :class:`Weights` (see the module docstring)."""
    blob = read_limited(path, MAX_BYTES)
    return decode(blob, path=path, variant=variant)


class _Model:
    """The parts of a parsed model the import reads: tensors, operators, buffers."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) > MAX_BYTES:
            raise WeightsError(f"file is {len(blob)} bytes, more than the {MAX_BYTES} allowed")
        if len(blob) < 8:
            raise WeightsError(f"file is {len(blob)} bytes, too short for a TFLite model")
        if blob[4:8] != IDENTIFIER:
            raise WeightsError(f"file identifier is {blob[4:8]!r}, expected {IDENTIFIER!r} "
                               "(not a TFLite / LiteRT model)")
        r = self.reader = _Reader(blob)
        model = r.root()
        version = model.scalar(MODEL["version"], "I", 0, "version")
        if version != SCHEMA_VERSION:
            raise WeightsError(f"schema version {version}, expected {SCHEMA_VERSION}")
        self.codes = []
        for t in model.tables(MODEL["operator_codes"], "operator_codes", MAX_CODES):
            code = max(t.scalar(OPERATOR_CODE["deprecated_builtin_code"], "b", 0,
                                "deprecated_builtin_code"),
                       t.scalar(OPERATOR_CODE["builtin_code"], "i", 0, "builtin_code"))
            custom = t.string(OPERATOR_CODE["custom_code"], "custom_code")
            self.codes.append(f"custom {custom!r}" if custom else code)
        self.description = model.string(MODEL["description"], "description")
        self.buffers = model.tables(MODEL["buffers"], "buffers", MAX_BUFFERS)
        self.metadata = {}
        for t in model.tables(MODEL["metadata"], "metadata", MAX_METADATA):
            self.metadata[t.string(METADATA_TABLE["name"], "name")] = \
                t.scalar(METADATA_TABLE["buffer"], "I", 0, "buffer")
        subgraphs = model.tables(MODEL["subgraphs"], "subgraphs", MAX_SUBGRAPHS)
        if not subgraphs:
            raise WeightsError("the model has no subgraph")
        main = subgraphs[0]
        self.inputs = set(main.ints(SUBGRAPH["inputs"], "inputs", MAX_TENSORS) or [])
        self.tensors = []
        for i, t in enumerate(main.tables(SUBGRAPH["tensors"], "tensors", MAX_TENSORS)):
            shape = t.ints(TENSOR["shape"], "shape", MAX_RANK)
            self.tensors.append({
                "index": i, "name": t.string(TENSOR["name"], "name"),
                "shape": [] if shape is None else shape,
                "type": t.scalar(TENSOR["type"], "b", FLOAT32, "type"),
                "buffer": t.scalar(TENSOR["buffer"], "I", 0, "buffer"),
                "quantized": self.quantized(t),
                "sparse": t.field(TENSOR["sparsity"], 4, "sparsity") is not None})
        self.ops = []
        for i, t in enumerate(main.tables(SUBGRAPH["operators"], "operators", MAX_OPERATORS)):
            index = t.scalar(OPERATOR["opcode_index"], "I", 0, "opcode_index")
            if index >= len(self.codes):
                raise WeightsError(f"operator {i}: opcode_index {index}, but the model has "
                                   f"{len(self.codes)} operator codes")
            op = {"index": i, "code": self.codes[index],
                  "inputs": t.ints(OPERATOR["inputs"], "inputs", MAX_TENSORS) or [],
                  "outputs": t.ints(OPERATOR["outputs"], "outputs", MAX_TENSORS) or [],
                  "options_type": t.scalar(OPERATOR["builtin_options_type"], "B", 0,
                                           "builtin_options_type"),
                  "options": None}
            for j in op["inputs"] + op["outputs"]:
                if not -1 <= j < len(self.tensors):
                    raise WeightsError(f"operator {i} ({self.op_name(op)}) names tensor {j}, "
                                       f"but the subgraph has {len(self.tensors)}")
            at = t.target(OPERATOR["builtin_options"], "builtin_options")
            if at is not None:
                op["options"] = r.table(at, f"operator {i} builtin_options")
            self.ops.append(op)
        self.producer = {o: op for op in self.ops for o in op["outputs"] if o >= 0}

    @staticmethod
    def quantized(tensor: _Table) -> bool:
        """Whether ``tensor`` has quantization scales (converters give every tensor an empty
        QuantizationParameters table)."""
        at = tensor.target(TENSOR["quantization"], "quantization")
        if at is None:
            return False
        q = tensor.r.table(at, f"{tensor.what}.quantization")
        return q.vector(QUANTIZATION_PARAMETERS["scale"], 4, "scale", MAX_BYTES // 4)[1] > 0

    @staticmethod
    def op_name(op: dict) -> str:
        code = op["code"]
        return code if isinstance(code, str) else OP_NAMES.get(code, f"builtin op {code}")

    def label(self, index: int) -> str:
        return repr(self.tensors[index]["name"][:100] or f"tensor {index}")

    def buffer(self, index: int, what: str) -> bytes | None:
        """The bytes of buffer ``index`` (inline or at an offset in the file), None when empty."""
        if index >= len(self.buffers):
            raise WeightsError(f"{what}: buffer {index}, but the model has "
                               f"{len(self.buffers)} buffers")
        t = self.buffers[index]
        try:
            data = t.bytes(BUFFER["data"], "data")
            offset = t.scalar(BUFFER["offset"], "Q", 0, "offset")
            if offset > 1:  # stored after the flatbuffer (models over 2 GB): from the start
                size = t.scalar(BUFFER["size"], "Q", 0, "size")
                self.reader.need(offset, size, f"buffers[{index}] data")
                data = self.reader.blob[offset:offset + size]
        except WeightsError as e:
            raise WeightsError(f"{what}: {e.reason}") from None
        return data or None

    def array(self, index: int, what: str, types=(FLOAT32,)) -> np.ndarray:
        """Constant tensor ``index`` as an array (float32 or int64); through a DEQUANTIZE of a
        FLOAT16 constant where ``types`` is the float ones."""
        if not 0 <= index < len(self.tensors):
            raise WeightsError(f"{what}: no tensor {index} (the subgraph has "
                               f"{len(self.tensors)})")
        t = self.tensors[index]
        what = f"{what} {self.label(index)}"
        data = self.buffer(t["buffer"], what)
        if data is None:
            op = self.producer.get(index)
            if op is not None and op["code"] == DEQUANTIZE and op["inputs"] and \
                    FLOAT32 in types and op["inputs"][0] >= 0:
                return self.array(op["inputs"][0], f"{what} (dequantized)", (FLOAT16,))
            raise WeightsError(f"{what} is not a constant (its buffer {t['buffer']} is empty)")
        if t["sparse"] or t["quantized"]:
            raise WeightsError(f"{what} is quantized or sparse; only float tensors are read")
        dtype = {FLOAT32: "<f4", FLOAT16: "<f2", INT32: "<i4", INT64: "<i8"}.get(t["type"])
        if t["type"] not in types or dtype is None:
            raise WeightsError(f"{what} has type {TYPE_NAMES.get(t['type'], t['type'])}, "
                               f"expected {' or '.join(TYPE_NAMES[k] for k in types)}")
        shape = t["shape"]
        if any(not 0 <= d <= MAX_DIM for d in shape):
            raise WeightsError(f"{what} has shape {shape}")
        itemsize = np.dtype(dtype).itemsize
        if math.prod(shape) * itemsize != len(data):
            raise WeightsError(f"{what}: shape {shape} {TYPE_NAMES[t['type']]} needs "
                               f"{math.prod(shape) * itemsize} bytes, its buffer holds "
                               f"{len(data)}")
        out = np.frombuffer(data, dtype).reshape(shape)
        return out.astype(np.float32 if out.dtype.kind == "f" else np.int64)

    def options(self, op: dict, kind: int, fields: dict, what: str) -> dict:
        if op["options_type"] != kind or op["options"] is None:
            raise WeightsError(f"{what}: builtin options of type {op['options_type']}, "
                               f"expected {kind}")
        t = op["options"]
        return {name: t.scalar(slot, *OPTION_FORMATS.get(name, ("i", 0)), name)
                for name, slot in fields.items()}


def _conv(m: _Model, op: dict) -> _graph.Conv:
    """A CONV_2D operator's weights (OIHW) and geometry, its explicit PAD folded in."""
    what = f"CONV_2D {m.label(op['outputs'][0]) if op['outputs'] else op['index']}"
    if len(op["inputs"]) < 2 or len(op["outputs"]) != 1:
        raise WeightsError(f"{what}: {len(op['inputs'])} inputs, {len(op['outputs'])} outputs")
    w = m.array(op["inputs"][1], f"{what} filter")
    if w.ndim != 4:
        raise WeightsError(f"{what}: filter shape {list(w.shape)}, expected 4-D OHWI")
    if len(op["inputs"]) > 2 and op["inputs"][2] >= 0:
        b = m.array(op["inputs"][2], f"{what} bias")
    else:
        b = np.zeros(w.shape[0], np.float32)
    o = m.options(op, CONV_2D_OPTIONS_TYPE, CONV_2D_OPTIONS, what)
    if o["dilation_w_factor"] != 1 or o["dilation_h_factor"] != 1:
        raise WeightsError(f"{what}: dilated convolution is not SqueezeNet's")
    if o["fused_activation_function"] not in (NONE, RELU_ACT):
        act = o["fused_activation_function"]
        raise WeightsError(f"{what}: fused activation {ACTIVATION_NAMES.get(act, act)}, "
                           "expected RELU or NONE")
    stride, kernel = (o["stride_h"], o["stride_w"]), tuple(w.shape[1:3])
    if len(set(stride)) != 1 or len(set(kernel)) != 1:
        raise WeightsError(f"{what}: non-square stride {list(stride)} or kernel {list(kernel)}")
    k, s = kernel[0], stride[0]
    if o["padding"] == SAME:
        if k > 1 and (s != 1 or k % 2 == 0):
            raise WeightsError(f"{what}: SAME padding at stride {s} with a {k}x{k} kernel is "
                               "not SqueezeNet's geometry")
        pad = (k - 1) // 2
    elif o["padding"] == VALID:
        pad = 0
    else:
        raise WeightsError(f"{what}: padding {o['padding']}, expected SAME or VALID")
    source = m.producer.get(op["inputs"][0])
    if source is not None and source["code"] in (PAD, PADV2):
        pad += _explicit_pad(m, source, what)
    label = m.label(op["outputs"][0]) if op["outputs"] else str(op["index"])
    return _graph.Conv(op["index"], label, ohwi_to_oihw(w), b, s, pad)


def _explicit_pad(m: _Model, op: dict, what: str) -> int:
    """The spatial padding of a zero PAD / PADV2 before a convolution."""
    if len(op["inputs"]) < 2:
        raise WeightsError(f"{what}: the PAD before it has no paddings")
    p = m.array(op["inputs"][1], f"{what}: PAD paddings", (INT32, INT64))
    if p.shape != (4, 2) or p[0].any() or p[3].any() or len(set(p[1:3].ravel())) != 1:
        raise WeightsError(f"{what}: the PAD before it pads {p.tolist()}, expected the same "
                           "amount on each side of H and W only")
    if op["code"] == PADV2 and len(op["inputs"]) > 2 and op["inputs"][2] >= 0:
        value = m.array(op["inputs"][2], f"{what}: PADV2 value")
        if value.size != 1 or value.ravel()[0] != 0:
            raise WeightsError(f"{what}: the PADV2 before it pads with {value.ravel()[:4]}, "
                               "not zeros")
    return int(p[1, 0])


def decode(blob: bytes, *, path=None, variant: Variant | None = None) -> Weights:
    blob = bytes(blob)
    m = _Model(blob)

    convs = [_conv(m, op) for op in m.ops if op["code"] == CONV_2D]

    def computed(i: int) -> bool:  # an operator's output or the graph's input
        return i in m.producer or i in m.inputs
    simple = any(op["code"] == ADD and len(op["inputs"]) >= 2
                 and all(computed(i) for i in op["inputs"]) for op in m.ops)
    variant = _graph.variant_of(convs, simple_bypass=simple, requested=variant, op="CONV_2D")
    matched = _graph.match(convs, variant, op="CONV_2D", shape=oihw_shape_to_ohwi,
                           noun="filter (OHWI)")

    # Each Fire's CONCATENATION must put expand1x1 first.
    def made_by(index: int):
        op = m.producer.get(index)
        return None if op is None else (op["code"], op["inputs"], op["index"])

    def source(index: int):
        return _graph.source_conv(index, made_by, conv=CONV_2D, through=(RELU,))
    concats = [(op["index"], op["inputs"]) for op in m.ops if op["code"] == CONCATENATION]
    _graph.check_concat_order(variant, matched, _graph.concat_positions(concats, source))

    tensors = _graph.tensors_of(matched)
    label = os.path.basename(os.fspath(path)) if path is not None else "bytes"
    if METADATA in m.metadata:
        data = m.buffer(m.metadata[METADATA], f"metadata {METADATA!r}")
        props = string_meta(data or b"", f"metadata {METADATA!r}")
        named = meta_variant({**variant.to_meta(), **props}, what=f"metadata {METADATA!r}")
        if named != variant:
            raise WeightsError(f"metadata {METADATA!r} names SqueezeNet {named.id}, but the "
                               f"graph is {variant.id}")
        preprocessing = props.get("preprocessing", "torchvision")
        source = props.get("source", f"TFLite {label}")
        extra = {k: v for k, v in props.items() if k not in variant.to_meta()
                 and k not in ("preprocessing", "source", "tensors", "variant")}
    else:
        preprocessing, extra = "torchvision", {}
        note = m.description[:200]
        source = f"TFLite {label}" + (f" ({note})" if note else "")
    return make(tensors, variant, preprocessing=preprocessing, source=source, **extra)
