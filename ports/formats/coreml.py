"""Core ML: a ``.mlmodel`` NeuralNetwork (this codec, ``coreml``) and an ``.mlpackage`` ML
program (:mod:`ports.formats.coreml_package`, ``coreml-package``), written and read with
protobuf alone (:mod:`ports.formats.coreml_schema`), never coremltools.

Writing
-------
``.mlmodel`` (:func:`encode`): ``Model`` with ``specificationVersion`` 4 (what
coremltools' ``NeuralNetworkBuilder(disable_rank5_shape_mapping=True)`` writes), a
``neuralNetwork`` with ``EXACT_ARRAY_MAPPING``, interpreting :meth:`ports.spec.Variant.layers`::

    input "input" FLOAT32 [1, 3, 224, 224] (N, H, W flexible: shapeRange)
    convolution (OIHW weights, float32 inline in WeightParams.floatValue; padding "valid"
      with borderAmounts, conv10's from the spec) -> activation ReLU,
    pooling MAX 3x3/2 with includeLastPixel (ValidCompletePadding: Caffe's ceil mode),
    Fire = concat(expand1x1, expand3x3) [-> add(identity or the 1x1 bypass conv)],
    pooling AVERAGE globalPooling -> flattenTo2D(axis 1)
    output "logits" FLOAT32 [N, num_classes]

``.mlpackage`` (:func:`program`): ``Model`` version 6 with an ``mlProgram`` (opset
``CoreML5``), the folder laid out as coremltools lays it out (``Manifest.json``,
``Data/com.apple.CoreML/model.mlmodel``, ``Data/com.apple.CoreML/weights/weight.bin``);
every parameter is a ``const`` op (weights and biases in ``weight.bin``, MIL's blob storage:
a 64-byte header ``count, version 2``, then per blob a 64-byte-aligned 64-byte record
``sentinel 0xDEADBEEF, data type (2: float32), size, offset`` followed by the bytes), every
tensor FLOAT32: ``conv`` (pad_type custom), ``relu``, ``max_pool`` (ceil_mode true),
``concat`` (axis 1), ``add``, ``reduce_mean`` over [2, 3] -> ``logits`` [N, classes].

The canonical metadata is ``Model.description.metadata.userDefined["squeezenet"]`` (JSON).

Reading
-------
Both kinds are translated op by op (layer by layer) into one :class:`Graph` of plain nodes
(``conv``, ``relu``, ``max_pool``, ``avg_pool``, ``concat``, ``add``, ``mean``, ``reshape``,
``squeeze``, ``flatten``, ``identity``), every attribute read from the file and checked;
an op or layer of another kind is refused.  :mod:`ports.formats.coreml_program` executes
that graph; :func:`decode` finds the weights in it as :mod:`ports.formats.onnx` does: the
convolutions in file order, cut into the spec's groups and matched by shape, stride and
padding (names are not trusted), the variant from the graph (conv1's shape, conv10's filters
and padding, 30 convs for the complex bypass, an ``add`` of two computed tensors for the
simple one).  The three max pools must be 3x3/2 rounding up (``ceil_mode`` /
``includeLastPixel``), and each Fire's concat must put expand1x1 first.  Where our metadata
names a variant, it must be the graph's.  Files coremltools writes (``ct.convert`` of a MIL
program, ``NeuralNetworkBuilder``) are read the same way.

Bounds: a model file or ``weight.bin`` of at most :data:`MAX_BYTES`; every blob's record
(sentinel, type, size, offset) is checked against the file before its bytes are viewed;
tensors of at most :data:`MAX_RANK` dimensions and :data:`MAX_ELEMENTS` values.
"""

from __future__ import annotations

import json
import math
import os
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .. import spec as S
from ..errors import WeightsError
from ..spec import Variant
from . import _graph
from ._io import atomic_write, read_limited
from ._library import dependency
from .canonical import Weights, has_architecture, make, meta_variant, string_meta

NAME = "coreml"
MAX_BYTES = 512 * 1024**2
MAX_MANIFEST = 1 << 20
MAX_RANK = 8
MAX_ELEMENTS = 1 << 28
MAX_NODES = 100_000
NN_SPEC_VERSION = 4        # NeuralNetworkBuilder(disable_rank5_shape_mapping=True)
PROGRAM_SPEC_VERSION = 6   # ct.convert(..., convert_to="mlprogram"): iOS15
OPSET = "CoreML5"
INPUT, OUTPUT = "input", "logits"
METADATA_KEY = "squeezenet"
DEFAULT_SIZE = 224

# The package (coremltools' layout).
MANIFEST = "Manifest.json"
DATA = "Data"
AUTHOR = "com.apple.CoreML"
MODEL_PATH = f"{AUTHOR}/model.mlmodel"
WEIGHTS_PATH = f"{AUTHOR}/weights"
WEIGHT_FILE = "@model_path/weights/weight.bin"
_ID_NAMESPACE = uuid.UUID("5b1f5a3c-6c6f-4d6c-9a53-7175657a656e")

# MIL blob storage (MILBlob/Blob/StorageFormat.hpp).
BLOB_ALIGN = 64
BLOB_SENTINEL = 0xDEADBEEF
BLOB_VERSION = 2
BLOB_TYPES = {1: np.dtype("<f2"), 2: np.dtype("<f4")}       # Float16, Float32
BLOB_TYPE_NAMES = {1: "Float16", 2: "Float32", 3: "UInt8", 4: "Int8", 5: "BFloat16",
                   6: "Int16", 7: "UInt16"}
_HEADER = struct.Struct("<II56x")             # count, version, reserved
_RECORD = struct.Struct("<IIQQQ32x")          # sentinel, dtype, sizeInBytes, offset, padding

__all__ = ["NAME", "encode", "write", "read", "decode", "Graph", "Node", "Blobs",
           "program", "load_package", "parse_model", "graph_of"]


def schema(name: str = NAME):
    """:mod:`ports.formats.coreml_schema`, its protobuf imported for codec ``name``."""
    dependency("google.protobuf", name)  # a missing protobuf says what to install
    from . import coreml_schema

    return coreml_schema


# --- the graph both kinds are read into -------------------------------------------------------
@dataclass
class Node:
    """One op of the file: ``kind`` (see the module docstring), ``label`` (its name in the
    file), ``inputs`` (tensor names), ``output`` (tensor name), ``attrs`` (checked
    attributes; a conv's ``weight`` [O, I, kH, kW] and ``bias`` [O] float32)."""

    kind: str
    label: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """A Core ML model as a list of :class:`Node` in file order."""

    kind: str                  # "mlprogram" or "neuralnetwork"
    input: str
    output: str
    nodes: list[Node]
    meta: dict[str, str] | None   # our canonical metadata, if the file holds it
    description: str = ""         # what wrote it, for a foreign file's ``source``


# --- writing: shared ---------------------------------------------------------------------------
def _min_size(variant: Variant) -> int:
    """The smallest input side the network accepts."""
    for size in range(1, 512):
        try:
            variant.feature_sizes(size)
            return size
        except ValueError:
            continue
    raise AssertionError("no input size works")  # pragma: no cover


def _description(Sc, model, variant: Variant, meta: dict[str, str]) -> None:
    d = model.description
    inp = d.input.add(name=INPUT, shortDescription="NCHW float32 image batch")
    arr = inp.type.multiArrayType
    arr.shape.extend([1, 3, DEFAULT_SIZE, DEFAULT_SIZE])
    arr.dataType = Sc.FLOAT32_ARRAY
    low = _min_size(variant)
    for lower, upper in ((1, -1), (3, 3), (low, -1), (low, -1)):
        arr.shapeRange.sizeRanges.add(lowerBound=lower, upperBound=upper)
    out = d.output.add(name=OUTPUT, shortDescription=f"[N, {variant.num_classes}] logits")
    out.type.multiArrayType.dataType = Sc.FLOAT32_ARRAY
    d.metadata.shortDescription = f"SqueezeNet {variant.id}"
    d.metadata.author = "squeezenet-ports"
    d.metadata.userDefined[METADATA_KEY] = json.dumps(dict(sorted(meta.items())))


def parse_model(blob: bytes, name: str = NAME):
    """A ``Model`` message from the bytes of a ``.mlmodel``."""
    Sc = schema(name)
    if len(blob) > MAX_BYTES:
        raise WeightsError(f"model file is {len(blob)} bytes, more than the {MAX_BYTES} allowed")
    model = Sc.Model()
    try:
        model.ParseFromString(bytes(blob))
    except MemoryError:
        raise
    except Exception as e:  # DecodeError, RecursionError, ...
        raise WeightsError(f"not a Core ML model (protobuf parse failed: {e})"[:300]) from None
    return model


# --- writing: the NeuralNetwork .mlmodel -------------------------------------------------------
def build(weights: Weights):
    """The ``Model`` message (NeuralNetwork) of ``weights``."""
    Sc = schema()
    variant = weights.variant
    model = Sc.Model(specificationVersion=NN_SPEC_VERSION)
    _description(Sc, model, variant, dict(weights.meta))
    nn = model.neuralNetwork
    nn.arrayInputShapeMapping = Sc.EXACT_ARRAY_MAPPING

    def layer(name: str, inputs: list[str], output: str):
        lay = nn.layers.add(name=name)
        lay.input.extend(inputs)
        lay.output.append(output)
        return lay

    def conv(c: S.Conv, x: str, out: str) -> str:
        lay = layer(c.name, [x], out)
        p = lay.convolution
        p.outputChannels, p.kernelChannels, p.nGroups = c.out_channels, c.in_channels, 1
        p.kernelSize.extend([c.kernel, c.kernel])
        p.stride.extend([c.stride, c.stride])
        p.dilationFactor.extend([1, 1])
        for _ in range(2):
            p.valid.paddingAmounts.borderAmounts.add(startEdgeSize=c.padding,
                                                     endEdgeSize=c.padding)
        p.hasBias = True
        p.weights.floatValue.extend(np.asarray(weights.tensors[f"{c.name}.weight"]).ravel())
        p.bias.floatValue.extend(np.asarray(weights.tensors[f"{c.name}.bias"]).ravel())
        return out

    def relu(c: S.Conv, x: str, out: str) -> str:
        layer(f"{c.name}.relu", [x], out).activation.ReLU.SetInParent()
        return out

    h = INPUT
    for item in variant.layers():
        if isinstance(item, S.Conv):
            h = relu(item, conv(item, h, f"{item.name}.conv"), item.name)
        elif isinstance(item, S.MaxPool):
            p = layer(item.name, [h], item.name).pooling
            p.type = 0  # MAX
            p.kernelSize.extend([item.kernel, item.kernel])
            p.stride.extend([item.stride, item.stride])
            p.includeLastPixel.paddingAmounts.extend([0, 0])
            h = item.name
        elif isinstance(item, S.Fire):
            s = relu(item.squeeze, conv(item.squeeze, h, f"{item.squeeze.name}.conv"),
                     item.squeeze.name)
            e1 = relu(item.expand1x1, conv(item.expand1x1, s, f"{item.expand1x1.name}.conv"),
                      item.expand1x1.name)
            e3 = relu(item.expand3x3, conv(item.expand3x3, s, f"{item.expand3x3.name}.conv"),
                      item.expand3x3.name)
            if item.bypass is None:
                layer(f"{item.name}.concat", [e1, e3], item.name).concat.SetInParent()
            else:
                cat = f"{item.name}.concat"
                layer(cat, [e1, e3], cat).concat.SetInParent()
                other = h if item.bypass == "identity" else conv(item.bypass_conv, h,
                                                                 item.bypass_conv.name)
                layer(f"{item.name}.add", [cat, other], item.name).add.SetInParent()
            h = item.name
        elif isinstance(item, S.Dropout):
            continue
        elif isinstance(item, S.GlobalAvgPool):
            p = layer(item.name, [h], item.name).pooling
            p.type = 1  # AVERAGE
            p.globalPooling = True
            p.kernelSize.extend([1, 1])
            p.stride.extend([1, 1])
            p.valid.SetInParent()
            layer("flatten", [item.name], OUTPUT).flattenTo2D.axis = 1
            h = OUTPUT
        elif not isinstance(item, S.ReLU):  # pragma: no cover - the spec has no other kinds
            raise TypeError(f"unknown layer {item!r}")
    return model


def encode(weights: Weights) -> bytes:
    """The ``.mlmodel`` bytes of ``weights``."""
    return build(weights).SerializeToString(deterministic=True)


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    return [atomic_write(path, encode(weights), overwrite=overwrite)]


# --- writing: the ML program -------------------------------------------------------------------
class _BlobWriter:
    """MIL blob storage, built in memory."""

    def __init__(self) -> None:
        self.data = bytearray(_HEADER.pack(0, BLOB_VERSION))
        self.count = 0

    def add(self, array: np.ndarray) -> int:
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        self.data += bytes(-len(self.data) % BLOB_ALIGN)
        offset = len(self.data)
        self.data += _RECORD.pack(BLOB_SENTINEL, 2, len(raw), offset + _RECORD.size, 0)
        self.data += raw
        self.count += 1
        self.data[:_HEADER.size] = _HEADER.pack(self.count, BLOB_VERSION)
        return offset


def program(weights: Weights, name: str = NAME) -> tuple[bytes, bytes]:
    """``(model.mlmodel, weight.bin)`` of an ML program computing ``weights``."""
    Sc = schema(name)
    variant = weights.variant
    model = Sc.Model(specificationVersion=PROGRAM_SPEC_VERSION)
    _description(Sc, model, variant, dict(weights.meta))
    prog = model.mlProgram
    prog.version = 1
    func = prog.functions["main"]
    func.opset = OPSET
    block = func.block_specializations[OPSET]
    blobs = _BlobWriter()
    f32, i32 = Sc.DATA_TYPES["FLOAT32"], Sc.DATA_TYPES["INT32"]

    def tensor_type(vt, dtype: int, dims: list) -> None:
        """``dims``: ints (constant) or None (unknown); ``None`` for a scalar."""
        tt = vt.tensorType
        tt.dataType = dtype
        if dims is None:
            return
        tt.rank = len(dims)
        for d in dims:
            dim = tt.dimensions.add()
            if d is None:
                dim.unknown.variadic = False
            else:
                dim.constant.size = d

    def string_value(value, text: str) -> None:
        value.type.tensorType.dataType = Sc.DATA_TYPES["STRING"]
        value.immediateValue.tensor.strings.values.append(text)

    def name_attr(op, text: str) -> None:
        string_value(op.attributes["name"], text)

    def const(name: str, value) -> str:
        op = block.operations.add(type="const")
        out = op.outputs.add(name=name)
        val = op.attributes["val"]
        if isinstance(value, np.ndarray):
            dims = list(value.shape)
            tensor_type(out.type, f32, dims)
            tensor_type(val.type, f32, dims)
            val.blobFileValue.fileName = WEIGHT_FILE
            val.blobFileValue.offset = blobs.add(value)
        elif isinstance(value, bool):
            for vt in (out.type, val.type):
                tensor_type(vt, Sc.DATA_TYPES["BOOL"], None)
            val.immediateValue.tensor.bools.values.append(value)
        elif isinstance(value, str):
            tensor_type(out.type, Sc.DATA_TYPES["STRING"], None)
            string_value(val, value)
        else:
            ints = [int(v) for v in value] if isinstance(value, list) else [int(value)]
            for vt in (out.type, val.type):
                tensor_type(vt, i32, [len(ints)] if isinstance(value, list) else None)
            val.immediateValue.tensor.ints.values.extend(ints)
        name_attr(op, name)
        return name

    def op(kind: str, out: str, channels: int | None, **inputs) -> str:
        o = block.operations.add(type=kind)
        for key, value in inputs.items():
            arg = o.inputs[key]
            for v in (value if isinstance(value, list) else [value]):
                arg.arguments.add(name=v)
        dims = [None, channels, None, None] if channels is not None else \
            [None, variant.num_classes]
        tensor_type(o.outputs.add(name=out).type, f32, dims)
        name_attr(o, out)
        return out

    def mil(name: str) -> str:
        return name.replace(".", "_")

    def conv(c: S.Conv, x: str, out: str) -> str:
        base = mil(out)
        p = c.padding
        args = dict(
            weight=const(f"{base}_weight_0", weights.tensors[f"{c.name}.weight"]),
            bias=const(f"{base}_bias_0", weights.tensors[f"{c.name}.bias"]),
            strides=const(f"{base}_strides_0", [c.stride, c.stride]),
            pad_type=const(f"{base}_pad_type_0", "custom"),
            pad=const(f"{base}_pad_0", [p, p, p, p]),
            dilations=const(f"{base}_dilations_0", [1, 1]),
            groups=const(f"{base}_groups_0", 1))
        return op("conv", base, c.out_channels, x=x, **args)

    def conv_relu(c: S.Conv, x: str) -> str:
        return op("relu", mil(c.name), c.out_channels, x=conv(c, x, f"{c.name}_conv"))

    tensor_type(func.inputs.add(name=INPUT).type, f32, [None, 3, None, None])
    h, channels = INPUT, 3
    for item in variant.layers():
        if isinstance(item, S.Conv):
            h, channels = conv_relu(item, h), item.out_channels
        elif isinstance(item, S.MaxPool):
            base = mil(item.name)
            h = op("max_pool", base, channels, x=h,
                   kernel_sizes=const(f"{base}_kernel_sizes_0", [item.kernel, item.kernel]),
                   strides=const(f"{base}_strides_0", [item.stride, item.stride]),
                   pad_type=const(f"{base}_pad_type_0", "valid"),
                   pad=const(f"{base}_pad_0", [0, 0, 0, 0]),
                   ceil_mode=const(f"{base}_ceil_mode_0", bool(item.ceil_mode)))
        elif isinstance(item, S.Fire):
            s = conv_relu(item.squeeze, h)
            e1 = conv_relu(item.expand1x1, s)
            e3 = conv_relu(item.expand3x3, s)
            base = mil(item.name)
            cat = base if item.bypass is None else f"{base}_concat"
            out = op("concat", cat, item.out_channels, values=[e1, e3],
                     axis=const(f"{cat}_axis_0", 1),
                     interleave=const(f"{cat}_interleave_0", False))
            if item.bypass is not None:
                other = h if item.bypass == "identity" else \
                    conv(item.bypass_conv, h, item.bypass_conv.name)
                out = op("add", base, item.out_channels, x=out, y=other)
            h, channels = out, item.out_channels
        elif isinstance(item, S.GlobalAvgPool):
            h = op("reduce_mean", OUTPUT, None, x=h,
                   axes=const("pool10_axes_0", [2, 3]),
                   keep_dims=const("pool10_keep_dims_0", False))
        elif not isinstance(item, (S.ReLU, S.Dropout)):  # pragma: no cover
            raise TypeError(f"unknown layer {item!r}")
    block.outputs.append(h)
    return model.SerializeToString(deterministic=True), bytes(blobs.data)


def manifest() -> bytes:
    """``Manifest.json`` as coremltools writes it (identifiers fixed: the same weights give
    the same bytes)."""
    model_id = str(uuid.uuid5(_ID_NAMESPACE, "model.mlmodel")).upper()
    weights_id = str(uuid.uuid5(_ID_NAMESPACE, "weights")).upper()
    doc = {"fileFormatVersion": "1.0.0",
           "itemInfoEntries": {
               model_id: {"author": AUTHOR, "description": "CoreML Model Specification",
                          "name": "model.mlmodel", "path": MODEL_PATH},
               weights_id: {"author": AUTHOR, "description": "CoreML Model Weights",
                            "name": "weights", "path": WEIGHTS_PATH}},
           "rootModelIdentifier": model_id}
    return json.dumps(doc, indent=4, sort_keys=True).encode()


def package_files(weights: Weights, name: str = NAME) -> dict[str, bytes]:
    """The files of an ``.mlpackage`` of ``weights``: relative path -> bytes."""
    model, blob = program(weights, name)
    return {MANIFEST: manifest(), f"{DATA}/{MODEL_PATH}": model,
            f"{DATA}/{WEIGHTS_PATH}/weight.bin": blob}


# --- reading: blobs ------------------------------------------------------------------------------
class Blobs:
    """A checked MIL blob-storage file (``weight.bin``)."""

    def __init__(self, data: bytes, what: str = "weight.bin") -> None:
        self.data, self.what = data, what
        if len(data) < _HEADER.size:
            raise WeightsError(f"{what} has {len(data)} bytes, less than its {_HEADER.size}-byte "
                               "header: not MIL blob storage")
        self.count, version = _HEADER.unpack_from(data, 0)
        if version != BLOB_VERSION:
            raise WeightsError(f"{what}: storage version {version}, expected {BLOB_VERSION}")
        if self.count > len(data) // BLOB_ALIGN:
            raise WeightsError(f"{what}: header claims {self.count} blobs, more than its "
                               f"{len(data)} bytes can hold")

    def array(self, offset: int, shape: tuple[int, ...], label: str) -> np.ndarray:
        """The float32 tensor of ``shape`` whose record is at ``offset``."""
        what, n = self.what, len(self.data)
        if offset % BLOB_ALIGN or offset < _HEADER.size or offset + _RECORD.size > n:
            raise WeightsError(f"{label}: blob offset {offset} is not a {BLOB_ALIGN}-aligned "
                               f"record inside {what} ({n} bytes)")
        sentinel, dtype, size, start, _ = _RECORD.unpack_from(self.data, offset)
        if sentinel != BLOB_SENTINEL:
            raise WeightsError(f"{label}: no blob record at offset {offset} of {what} "
                               f"(sentinel 0x{sentinel:08X}, expected 0x{BLOB_SENTINEL:08X})")
        if dtype not in BLOB_TYPES:
            raise WeightsError(f"{label}: blob data type {BLOB_TYPE_NAMES.get(dtype, dtype)}, "
                               "expected Float32 (or Float16)")
        item = BLOB_TYPES[dtype]
        count = math.prod(shape)
        if size != count * item.itemsize:
            raise WeightsError(f"{label}: blob holds {size} bytes, its type "
                               f"{list(shape)} {BLOB_TYPE_NAMES[dtype]} needs "
                               f"{count * item.itemsize}")
        if start < offset + _RECORD.size or start % BLOB_ALIGN or start + size > n:
            raise WeightsError(f"{label}: blob data at offset {start}, {size} bytes, is not "
                               f"inside {what} ({n} bytes) after its record")
        arr = np.frombuffer(self.data, item, count, start).reshape(shape)
        return arr.astype(np.float32)


# --- reading: values -----------------------------------------------------------------------------
def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class _Reader:
    """Reads one model's values; ``blobs(file_name, label)`` gives the :class:`Blobs` a
    ``blobFileValue`` names."""

    def __init__(self, Sc, blobs) -> None:
        self.Sc = Sc
        self.blobs = blobs

    def tensor_shape(self, vt, label: str) -> tuple[str, tuple[int, ...] | None]:
        """(data type name, constant shape or None) of a ValueType."""
        if vt.WhichOneof("type") != "tensorType":
            raise WeightsError(f"{label}: not a tensor ({vt.WhichOneof('type') or 'no type'})")
        tt = vt.tensorType
        dtype = self.Sc.DATA_TYPE_NAMES.get(tt.dataType, f"data type {tt.dataType}")
        if len(tt.dimensions) > MAX_RANK or tt.rank != len(tt.dimensions):
            raise WeightsError(f"{label}: rank {tt.rank} with {len(tt.dimensions)} dimensions "
                               f"(at most {MAX_RANK})")
        dims = []
        for d in tt.dimensions:
            if d.WhichOneof("dimension") != "constant":
                return dtype, None
            dims.append(int(d.constant.size))
        if any(d > MAX_ELEMENTS for d in dims) or math.prod(dims) > MAX_ELEMENTS:
            raise WeightsError(f"{label}: shape {dims[:8]} has more than {MAX_ELEMENTS} values")
        return dtype, tuple(dims)

    def value(self, v, label: str):
        """A MIL ``Value`` as a NumPy array (numbers, bools) or ``str``/list of ``str``."""
        dtype, shape = self.tensor_shape(v.type, label)
        if shape is None:
            raise WeightsError(f"{label}: a constant of unknown shape")
        count = math.prod(shape)
        kind = v.WhichOneof("value")
        if kind == "blobFileValue":
            if dtype not in ("FLOAT32", "FLOAT16"):
                raise WeightsError(f"{label}: a {dtype} blob; expected FLOAT32 (or FLOAT16)")
            b = v.blobFileValue
            return self.blobs(_text(b.fileName), label).array(int(b.offset), shape, label)
        if kind != "immediateValue" or v.immediateValue.WhichOneof("value") != "tensor":
            raise WeightsError(f"{label}: not a tensor value")
        t = v.immediateValue.tensor
        which = t.WhichOneof("value")
        if which == "strings":
            values = [_text(s) for s in t.strings.values]
            if len(values) != count:
                raise WeightsError(f"{label}: {len(values)} strings for shape {list(shape)}")
            return values[0] if not shape else values
        if which == "bytes":
            raw = t.bytes.values
            item = {"FLOAT16": "<f2", "FLOAT32": "<f4"}.get(dtype)
            if item is None or len(raw) != count * np.dtype(item).itemsize:
                raise WeightsError(f"{label}: {len(raw)} bytes of {dtype} for shape "
                                   f"{list(shape)}")
            return np.frombuffer(raw, item).astype(np.float32).reshape(shape)
        if which is None:
            raise WeightsError(f"{label}: an empty tensor value")
        values = getattr(t, which).values
        if len(values) != count:
            raise WeightsError(f"{label}: {len(values)} values for shape {list(shape)}")
        kinds = {"floats": np.float32, "doubles": np.float64, "ints": np.int64,
                 "longInts": np.int64, "bools": np.bool_}
        arr = np.array(values, dtype=kinds[which]).reshape(shape)
        return arr.astype(np.float32) if which == "doubles" else arr


# --- reading: the ML program --------------------------------------------------------------------
def _ints(value, label: str, length: int | None = None) -> list[int]:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or (length is not None and arr.size != length):
        raise WeightsError(f"{label}: expected {length or 'some'} integers, got "
                           f"{str(value)[:60]}")
    return [int(v) for v in arr.ravel()]


def _flag(value, label: str) -> bool:
    arr = np.asarray(value)
    if arr.dtype != np.bool_ or arr.size != 1:
        raise WeightsError(f"{label}: expected a bool, got {str(value)[:60]}")
    return bool(arr.ravel()[0])


def _conv_node(label: str, x: str, out: str, w, b, strides, pads, dilations, groups) -> Node:
    """A checked ``conv`` node: ``pads`` [top, bottom, left, right]."""
    if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.ndim != 4:
        raise WeightsError(f"conv {label!r}: weight is not a 4-D float tensor (OIHW)")
    if b is None:
        b = np.zeros(w.shape[0], np.float32)
    if not isinstance(b, np.ndarray) or b.dtype != np.float32 or b.shape != (w.shape[0],):
        raise WeightsError(f"conv {label!r}: bias shape {list(np.shape(b))}, expected "
                           f"[{w.shape[0]}]")
    if groups != 1 or set(dilations) != {1}:
        raise WeightsError(f"conv {label!r}: grouped or dilated convolution (groups {groups}, "
                           f"dilations {dilations}) is not SqueezeNet's")
    if any(s < 1 for s in strides) or any(p < 0 or p > 1024 for p in pads) \
            or any(s > 1024 for s in strides):
        raise WeightsError(f"conv {label!r}: strides {strides}, pads {pads} out of range")
    return Node("conv", label, (x,), out, {"weight": w, "bias": b, "strides": tuple(strides),
                                          "pads": tuple(pads)})


def _pool_node(kind: str, label: str, x: str, out: str, kernel, strides, pads, ceil: bool,
               exclude: bool = False, is_global: bool = False) -> Node:
    if not is_global and (any(not 1 <= k <= 1024 for k in kernel)
                          or any(not 1 <= s <= 1024 for s in strides)
                          or any(not 0 <= p <= 1024 for p in pads)):
        raise WeightsError(f"{kind} {label!r}: kernel {kernel}, strides {strides}, pads {pads} "
                           "out of range")
    return Node(kind, label, (x,), out, {"kernel": tuple(kernel), "strides": tuple(strides),
                                         "pads": tuple(pads), "ceil": ceil,
                                         "exclude_padding": exclude, "global": is_global})


def _same_pads(kernel: list[int], strides: list[int], label: str) -> list[int]:
    """``same`` padding as pads, where it does not depend on the input size."""
    if set(strides) != {1}:
        raise WeightsError(f"{label}: 'same' padding with strides {strides} depends on the "
                           "input size; not SqueezeNet's")
    out = []
    for k in kernel:
        total = k - 1
        out += [total // 2, total - total // 2]
    return [out[0], out[1], out[2], out[3]]


def _program_graph(model, reader: _Reader) -> Graph:
    prog = model.mlProgram
    if "main" not in prog.functions:
        raise WeightsError(f"the ML program has no function 'main' (it has "
                           f"{sorted(_text(k) for k in prog.functions)[:8]})")
    func = prog.functions["main"]
    opset = _text(func.opset)
    if opset not in func.block_specializations:
        raise WeightsError(f"function main: no block for its opset {opset[:40]!r}")
    block = func.block_specializations[opset]
    if len(func.inputs) != 1:
        raise WeightsError(f"function main has {len(func.inputs)} inputs, expected 1 image")
    if len(block.outputs) != 1:
        raise WeightsError(f"function main has {len(block.outputs)} outputs, expected 1")
    if len(block.operations) > MAX_NODES:
        raise WeightsError(f"{len(block.operations)} operations, more than {MAX_NODES}")
    input_name = _text(func.inputs[0].name)
    consts: dict[str, Any] = {}
    tensors = {input_name}
    nodes: list[Node] = []

    for index, op in enumerate(block.operations):
        kind = _text(op.type)
        outs = [_text(o.name) for o in op.outputs]
        label = outs[0] if outs else f"#{index}"
        where = f"{kind} {label!r}"
        if len(outs) != 1:
            raise WeightsError(f"{where}: {len(outs)} outputs, expected 1")
        if outs[0] in consts or outs[0] in tensors:
            raise WeightsError(f"{where}: output name defined twice")
        if op.blocks:
            raise WeightsError(f"{where}: an op with nested blocks is not SqueezeNet's")
        if kind == "const":
            if "val" not in op.attributes:
                raise WeightsError(f"{where}: no 'val' attribute")
            consts[outs[0]] = reader.value(op.attributes["val"], where)
            continue

        def args(key: str, *, required: bool = True, many: bool = False, op=op,
                 where=where):
            if key not in op.inputs:
                if required:
                    raise WeightsError(f"{where}: no input {key!r}")
                return None
            bindings = op.inputs[key].arguments
            if not bindings or (len(bindings) > 1 and not many):
                raise WeightsError(f"{where}: input {key!r} has {len(bindings)} arguments")
            out = []
            for b in bindings:
                if b.WhichOneof("binding") == "value":
                    out.append(("const", reader.value(b.value, f"{where} input {key!r}")))
                    continue
                name = _text(b.name)
                if name in consts:
                    out.append(("const", consts[name]))
                elif name in tensors:
                    out.append(("tensor", name))
                else:
                    raise WeightsError(f"{where}: input {key!r} names {name[:80]!r}, which no "
                                       "earlier op defines")
            return out if many else out[0]

        def tensor(key: str, where=where) -> str:
            got, value = args(key)
            if got != "tensor":
                raise WeightsError(f"{where}: input {key!r} is a constant, expected a computed "
                                   "tensor")
            return value

        def const(key: str, default=None, where=where):
            got = args(key, required=default is None)
            if got is None:
                return default
            if got[0] != "const":
                raise WeightsError(f"{where}: input {key!r} must be a constant")
            return got[1]

        known = {"conv": {"x", "weight", "bias", "strides", "pad_type", "pad", "dilations",
                          "groups"},
                 "relu": {"x"}, "identity": {"x"},
                 "max_pool": {"x", "kernel_sizes", "strides", "pad_type", "pad", "ceil_mode"},
                 "avg_pool": {"x", "kernel_sizes", "strides", "pad_type", "pad", "ceil_mode",
                              "exclude_padding_from_average"},
                 "concat": {"values", "axis", "interleave"}, "add": {"x", "y"},
                 "reduce_mean": {"x", "axes", "keep_dims"}, "reshape": {"x", "shape"},
                 "squeeze": {"x", "axes"}}
        if kind not in known:
            raise WeightsError(f"op {kind[:60]!r} ({label[:80]!r}) is not one this reader runs "
                               f"(it runs const, {', '.join(sorted(known))})")
        extra = sorted(set(_text(k) for k in op.inputs) - known[kind])
        if extra:
            raise WeightsError(f"{where}: unexpected inputs {', '.join(e[:40] for e in extra)}")
        out = outs[0]
        if kind == "conv":
            x = tensor("x")
            wkind, w = args("weight")
            if wkind != "const":
                raise WeightsError(f"{where}: weight is computed, not a constant")
            b = const("bias", False)
            strides = _ints(const("strides", [1, 1]), f"{where} strides", 2)
            dil = _ints(const("dilations", [1, 1]), f"{where} dilations", 2)
            groups = _ints(const("groups", np.array(1)), f"{where} groups", 1)[0]
            pad_type = const("pad_type", "valid")
            if not isinstance(w, np.ndarray) or w.ndim != 4:
                raise WeightsError(f"{where}: weight shape {list(np.shape(w))}, expected 4-D")
            if pad_type == "custom":
                pads = _ints(const("pad"), f"{where} pad", 4)
            elif pad_type == "valid":
                pads = [0, 0, 0, 0]
            elif pad_type == "same":
                pads = _same_pads(list(w.shape[2:]), strides, where)
            else:
                raise WeightsError(f"{where}: pad_type {str(pad_type)[:40]!r}, expected custom, "
                                   "valid or same")
            nodes.append(_conv_node(label, x, out, w, None if b is False else b, strides, pads,
                                    dil, groups))
        elif kind in ("relu", "identity"):
            nodes.append(Node(kind, label, (tensor("x"),), out))
        elif kind in ("max_pool", "avg_pool"):
            x = tensor("x")
            kernel = _ints(const("kernel_sizes"), f"{where} kernel_sizes", 2)
            strides = _ints(const("strides", [1, 1]), f"{where} strides", 2)
            ceil = _flag(const("ceil_mode", np.array(False)), f"{where} ceil_mode")
            exclude = _flag(const("exclude_padding_from_average", np.array(False)),
                            f"{where} exclude_padding_from_average")
            pad_type = const("pad_type", "valid")
            if pad_type == "custom":
                pads = _ints(const("pad"), f"{where} pad", 4)
            elif pad_type == "valid":
                pads = [0, 0, 0, 0]
            elif pad_type == "same":
                pads = _same_pads(kernel, strides, where)
            else:
                raise WeightsError(f"{where}: pad_type {str(pad_type)[:40]!r}, expected custom, "
                                   "valid or same")
            nodes.append(_pool_node(kind, label, x, out, kernel, strides, pads, ceil, exclude))
        elif kind == "concat":
            parts = args("values", many=True)
            if any(p[0] != "tensor" for p in parts):
                raise WeightsError(f"{where}: concatenates a constant")
            axis = _ints(const("axis"), f"{where} axis", 1)[0]
            if _flag(const("interleave", np.array(False)), f"{where} interleave"):
                raise WeightsError(f"{where}: interleave is not SqueezeNet's concatenation")
            nodes.append(Node("concat", label, tuple(p[1] for p in parts), out, {"axis": axis}))
        elif kind == "add":
            pair = [args("x"), args("y")]
            names = []
            for got, value in pair:
                if got == "tensor":
                    names.append(value)
                else:
                    raise WeightsError(f"{where}: adds a constant (not SqueezeNet's)")
            nodes.append(Node("add", label, tuple(names), out))
        elif kind == "reduce_mean":
            axes = _ints(const("axes"), f"{where} axes")
            keep = _flag(const("keep_dims", np.array(False)), f"{where} keep_dims")
            nodes.append(Node("mean", label, (tensor("x"),), out, {"axes": tuple(axes),
                                                                  "keep": keep}))
        elif kind == "reshape":
            shape = _ints(const("shape"), f"{where} shape")
            nodes.append(Node("reshape", label, (tensor("x"),), out, {"shape": tuple(shape)}))
        elif kind == "squeeze":
            axes = const("axes", False)
            axes = None if axes is False else tuple(_ints(axes, f"{where} axes"))
            nodes.append(Node("squeeze", label, (tensor("x"),), out, {"axes": axes}))
        tensors.add(out)
    output = _text(block.outputs[0])
    if output not in tensors or output == input_name:
        raise WeightsError(f"function main's output {output[:80]!r} is not computed by an op")
    return Graph("mlprogram", input_name, output, nodes, None)


# --- reading: the NeuralNetwork ------------------------------------------------------------------
def _weight_values(wp, count: int, label: str) -> np.ndarray:
    if len(wp.floatValue):
        values = np.array(wp.floatValue, np.float32)
    elif len(wp.float16Value):
        values = np.frombuffer(wp.float16Value, "<f2").astype(np.float32) \
            if len(wp.float16Value) % 2 == 0 else np.zeros(0, np.float32)
    else:
        raise WeightsError(f"{label}: no float32 or float16 values (quantized or raw weights "
                           "are not read)")
    if values.size != count:
        raise WeightsError(f"{label}: {values.size} values, its shape needs {count}")
    return values


def _nn_graph(model) -> Graph:
    nn = model.neuralNetwork
    desc = model.description
    if len(desc.input) != 1 or len(desc.output) != 1:
        raise WeightsError(f"the model has {len(desc.input)} inputs and {len(desc.output)} "
                           "outputs, expected 1 and 1")
    if len(nn.layers) > MAX_NODES:
        raise WeightsError(f"{len(nn.layers)} layers, more than {MAX_NODES}")
    input_name = _text(desc.input[0].name)
    tensors = {input_name}
    nodes: list[Node] = []
    for index, layer in enumerate(nn.layers):
        label = _text(layer.name) or f"#{index}"
        kind = layer.WhichOneof("layer")
        where = f"{kind or 'layer'} {label[:80]!r}"
        if kind is None:
            raise WeightsError(f"layer {label[:80]!r} is of a kind this reader does not run "
                               "(it runs convolution, activation ReLU, pooling, concat, add, "
                               "flatten, flattenTo2D, squeeze, reshape, reduceMean)")
        ins = [_text(n) for n in layer.input]
        outs = [_text(n) for n in layer.output]
        if len(outs) != 1:
            raise WeightsError(f"{where}: {len(outs)} outputs, expected 1")
        for n in ins:
            if n not in tensors:
                raise WeightsError(f"{where}: input {n[:80]!r} is not computed by an earlier "
                                   "layer")
        if outs[0] in tensors:
            raise WeightsError(f"{where}: output {outs[0][:80]!r} defined twice")
        expect = {"add": None, "concat": None}.get(kind, 1)
        if (expect is not None and len(ins) != expect) or not ins:
            raise WeightsError(f"{where}: {len(ins)} inputs, expected {expect or 'some'}")
        out = outs[0]
        if kind == "convolution":
            p = layer.convolution
            kernel = [int(k) for k in p.kernelSize] or [3, 3]
            strides = [int(s) for s in p.stride] or [1, 1]
            dil = [int(d) for d in p.dilationFactor] or [1, 1]
            if len(kernel) != 2 or len(strides) != 2 or len(dil) != 2 or p.isDeconvolution:
                raise WeightsError(f"{where}: not a 2-D convolution")
            o, i, groups = int(p.outputChannels), int(p.kernelChannels), int(p.nGroups) or 1
            shape = (o, i, *kernel)
            if any(not 1 <= d <= 1 << 20 for d in shape):
                raise WeightsError(f"{where}: weight shape {list(shape)} out of range")
            w = _weight_values(p.weights, math.prod(shape), f"{where} weights").reshape(shape)
            b = _weight_values(p.bias, o, f"{where} bias") if p.hasBias else None
            pad = p.WhichOneof("ConvolutionPaddingType")
            if pad == "same":
                pads = _same_pads(kernel, strides, where)
            else:
                amounts = list(p.valid.paddingAmounts.borderAmounts) if pad == "valid" else []
                if len(amounts) not in (0, 2):
                    raise WeightsError(f"{where}: {len(amounts)} border amounts, expected 2")
                pads = [int(v) for a in amounts for v in (a.startEdgeSize, a.endEdgeSize)] \
                    or [0, 0, 0, 0]
            nodes.append(_conv_node(label, ins[0], out, w, b, strides, pads, dil, groups))
        elif kind == "activation":
            if layer.activation.WhichOneof("NonlinearityType") != "ReLU":
                raise WeightsError(f"{where}: an activation other than ReLU")
            nodes.append(Node("relu", label, tuple(ins), out))
        elif kind == "pooling":
            p = layer.pooling
            kinds = {0: "max_pool", 1: "avg_pool"}
            if p.type not in kinds:
                raise WeightsError(f"{where}: pooling type {p.type}, expected MAX or AVERAGE")
            kernel = [int(k) for k in p.kernelSize] or [3, 3]
            strides = [int(s) for s in p.stride] or [1, 1]
            if len(kernel) != 2 or len(strides) != 2:
                raise WeightsError(f"{where}: not a 2-D pooling")
            pad = p.WhichOneof("PoolingPaddingType")
            ceil = pad == "includeLastPixel"
            if p.globalPooling:
                pads = [0, 0, 0, 0]
            elif pad == "same":
                pads = _same_pads(kernel, strides, where)
            elif ceil:
                amounts = [int(a) for a in p.includeLastPixel.paddingAmounts] or [0, 0]
                if len(amounts) != 2:
                    raise WeightsError(f"{where}: {len(amounts)} padding amounts, expected 2")
                pads = [amounts[0], amounts[0], amounts[1], amounts[1]]
            else:
                amounts = list(p.valid.paddingAmounts.borderAmounts)
                if len(amounts) not in (0, 2):
                    raise WeightsError(f"{where}: {len(amounts)} border amounts, expected 2")
                pads = [int(v) for a in amounts for v in (a.startEdgeSize, a.endEdgeSize)] \
                    or [0, 0, 0, 0]
            nodes.append(_pool_node(kinds[p.type], label, ins[0], out, kernel, strides, pads,
                                    ceil, p.avgPoolExcludePadding, bool(p.globalPooling)))
        elif kind == "concat":
            if layer.concat.sequenceConcat:
                raise WeightsError(f"{where}: a sequence concatenation")
            nodes.append(Node("concat", label, tuple(ins), out, {"axis": 1}))
        elif kind == "add":
            if len(ins) < 2:
                raise WeightsError(f"{where}: adds a constant (not SqueezeNet's)")
            nodes.append(Node("add", label, tuple(ins), out))
        elif kind == "flatten":
            if layer.flatten.mode != 0:
                raise WeightsError(f"{where}: a channel-last flatten")
            nodes.append(Node("flatten", label, tuple(ins), out, {"axis": 1}))
        elif kind == "flattenTo2D":
            nodes.append(Node("flatten", label, tuple(ins), out,
                              {"axis": int(layer.flattenTo2D.axis)}))
        elif kind == "squeeze":
            p = layer.squeeze
            axes = None if p.squeezeAll else tuple(int(a) for a in p.axes)
            nodes.append(Node("squeeze", label, tuple(ins), out, {"axes": axes}))
        elif kind in ("reshape", "reshapeStatic"):
            p = getattr(layer, kind)
            if kind == "reshape" and p.mode != 0:
                raise WeightsError(f"{where}: a channel-last reshape")
            shape = tuple(int(d) for d in p.targetShape)
            if len(shape) > MAX_RANK:
                raise WeightsError(f"{where}: target shape of rank {len(shape)}")
            nodes.append(Node("reshape", label, tuple(ins), out, {"shape": shape,
                                                                  "keep_batch": kind == "reshape"}))
        elif kind == "reduceMean":
            p = layer.reduceMean
            axes = (1, 2, 3) if p.reduceAll else tuple(int(a) for a in p.axes)
            nodes.append(Node("mean", label, tuple(ins), out, {"axes": axes,
                                                              "keep": bool(p.keepDims)}))
        tensors.add(out)
    output = _text(desc.output[0].name)
    if output not in tensors or output == input_name:
        raise WeightsError(f"the model's output {output[:80]!r} is not computed by a layer")
    return Graph("neuralnetwork", input_name, output, nodes, None)


def graph_of(model, blobs=None, name: str = NAME) -> Graph:
    """The :class:`Graph` of a parsed ``Model``; ``blobs(file_name, label)`` gives the
    :class:`Blobs` of a program's weight file (``None``: a lone ``.mlmodel``, which has
    none)."""
    Sc = schema(name)

    def no_blobs(file_name: str, label: str):
        raise WeightsError(f"{label}: refers to the weight file {file_name[:80]!r}, which a lone "
                           ".mlmodel cannot have (an ML program is saved as an .mlpackage)")

    kind = model.WhichOneof("Type")
    if kind == "mlProgram":
        graph = _program_graph(model, _Reader(Sc, blobs or no_blobs))
    elif kind == "neuralNetwork":
        graph = _nn_graph(model)
    else:
        raise WeightsError("the model is neither a neural network nor an ML program "
                           f"(specificationVersion {model.specificationVersion})")
    meta = model.description.metadata
    if METADATA_KEY in meta.userDefined:
        graph.meta = string_meta(_text(meta.userDefined[METADATA_KEY]),
                                 f"metadata userDefined[{METADATA_KEY!r}]")
    tools = _text(meta.userDefined.get("com.github.apple.coremltools.version", ""))
    graph.description = f"coremltools {tools}" if tools else ""
    return graph


# --- reading: the package -------------------------------------------------------------------------
def _relative(path: str, what: str) -> str:
    """``path`` (from the package's own files) as a plain relative path, or an error."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or "\0" in path:
        raise WeightsError(f"{what} {path[:120]!r} is not a plain path inside the package")
    return p.as_posix()


def load_package(folder, name: str = NAME):
    """``(Model, blobs)`` of the checked package folder ``folder``
    (:class:`ports.formats._folder.Folder`): ``Manifest.json``'s root model, and a function
    giving the :class:`Blobs` of each weight file it names (read once, through the folder)."""
    if not folder.exists(MANIFEST):
        found = folder.listdir()[:8]
        raise WeightsError(f"no {MANIFEST}: not a Core ML package (it holds "
                           f"{', '.join(found) if found else 'nothing'})")
    raw = folder.read(MANIFEST, MANIFEST, limit=MAX_MANIFEST)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WeightsError(f"{MANIFEST} is not JSON: {type(e).__name__}: {e}"[:300]) from None
    entries = doc.get("itemInfoEntries") if isinstance(doc, dict) else None
    root = doc.get("rootModelIdentifier") if isinstance(doc, dict) else None
    if not isinstance(entries, dict) or not isinstance(root, str) or \
            not isinstance(entries.get(root), dict) or \
            not isinstance(entries[root].get("path"), str):
        raise WeightsError(f"{MANIFEST} names no root model (rootModelIdentifier and its "
                           "itemInfoEntries path)")
    rel = f"{DATA}/{_relative(entries[root]['path'], 'the root model path')}"
    model = parse_model(folder.read(rel, rel, limit=MAX_BYTES), name)
    base = PurePosixPath(rel).parent
    cache: dict[str, Blobs] = {}

    def blobs(file_name: str, label: str) -> Blobs:
        if not file_name.startswith("@model_path/"):
            raise WeightsError(f"{label}: weight file {file_name[:120]!r} is not under "
                               "@model_path/")
        target = (base / _relative(file_name[len("@model_path/"):], f"{label}: weight file"))
        key = target.as_posix()
        if key not in cache:
            cache[key] = Blobs(folder.read(key, key, limit=MAX_BYTES), key)
        return cache[key]

    return model, blobs


# --- reading: weights from the graph -------------------------------------------------------------
def _producers(graph: Graph) -> dict[str, Node]:
    return {n.output: n for n in graph.nodes}


def decode_graph(graph: Graph, *, variant: Variant | None = None,
                 source: str = "Core ML") -> Weights:
    """Canonical weights found in ``graph`` (see the module docstring)."""
    convs = []
    for n in (n for n in graph.nodes if n.kind == "conv"):
        w, pads, strides = n.attrs["weight"], n.attrs["pads"], n.attrs["strides"]
        if len(set(strides)) != 1 or len(set(pads)) != 1 or w.shape[2] != w.shape[3]:
            raise WeightsError(f"conv {n.label[:80]!r}: non-square stride {list(strides)}, pads "
                               f"{list(pads)} or kernel {list(w.shape[2:])}")
        convs.append(_graph.Conv(id(n), n.label[:80], w, n.attrs["bias"], strides[0], pads[0]))
    pools = [n for n in graph.nodes if n.kind == "max_pool"]
    if len(pools) != 3:
        raise WeightsError(f"the model has {len(pools)} max pools; SqueezeNet has 3")
    for n in pools:
        a = n.attrs
        if a["kernel"] != (3, 3) or a["strides"] != (2, 2) or set(a["pads"]) != {0}:
            raise WeightsError(f"max pool {n.label[:80]!r}: kernel {list(a['kernel'])}, strides "
                               f"{list(a['strides'])}, pads {list(a['pads'])}; SqueezeNet's are "
                               "3x3, stride 2, no padding")
        if not a["ceil"]:
            raise WeightsError(f"max pool {n.label[:80]!r} rounds its output size down "
                               "(ceil_mode false / valid padding); SqueezeNet's pools round up "
                               "(Caffe's ceil mode: ceil_mode true / includeLastPixel)")
    produced = _producers(graph)
    simple = any(n.kind == "add" and len(n.inputs) >= 2
                 and all(i in produced or i == graph.input for i in n.inputs)
                 for n in graph.nodes)
    variant = _graph.variant_of(convs, simple_bypass=simple, requested=variant, op="conv")
    meta = dict(graph.meta or {})
    if has_architecture(meta) and meta_variant(meta) != variant:
        raise WeightsError(f"the graph is SqueezeNet {variant.id}, but its metadata says "
                           f"{meta_variant(meta).id}")
    matched = _graph.match(convs, variant, op="conv")

    def made_by(name: str):
        n = produced.get(name)
        return None if n is None else (n.kind, n.inputs, id(n))

    def source(name: str):
        return _graph.source_conv(name, made_by, conv="conv", through=("relu", "identity"))
    concats = [(i, n.inputs) for i, n in enumerate(graph.nodes) if n.kind == "concat"]
    _graph.check_concat_order(variant, matched, _graph.concat_positions(concats, source),
                              what="model")

    tensors = _graph.tensors_of(matched)
    if graph.meta is not None and "preprocessing" in meta:
        extra = {k: v for k, v in meta.items() if k not in variant.to_meta()
                 and k not in ("preprocessing", "source", "tensors", "variant")}
        return make(tensors, variant, preprocessing=meta["preprocessing"],
                    source=meta.get("source", source), **extra)
    label = f"{source} ({graph.description})" if graph.description else source
    return make(tensors, variant, preprocessing="none", source=label)


def read(path, *, variant: Variant | None = None) -> Weights:
    """A ``.mlmodel`` file -> canonical :class:`Weights`."""
    blob = read_limited(path, MAX_BYTES)
    return decode(blob, path=path, variant=variant)


def decode(blob: bytes, *, path=None, variant: Variant | None = None) -> Weights:
    """The bytes of a ``.mlmodel`` -> canonical :class:`Weights`."""
    graph = graph_of(parse_model(blob))
    label = os.path.basename(os.fspath(path)) if path is not None else "bytes"
    return decode_graph(graph, variant=variant, source=f"Core ML {label}")
