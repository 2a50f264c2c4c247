"""ONNX: export canonical weights as a complete SqueezeNet graph, import weights from ONNX
files written by anyone.  Needs the ``onnx`` package only, never a framework.

Export (:func:`encode`, :func:`write`) interprets :meth:`ports.spec.Variant.layers`::

    input  "input"  float32 [N, 3, H, W]      (N, H, W symbolic)
    Conv (pads from the spec, conv10's included) -> Relu, MaxPool 3x3/2 ceil_mode=1,
    Fire = squeeze Conv+Relu -> Concat(expand1x1 Conv+Relu, expand3x3 Conv+Relu, axis 1)
           [-> Add(identity or 1x1 bypass Conv)],
    GlobalAveragePool -> Flatten(axis 1)
    output "logits" float32 [N, num_classes]

Initializers are named by canonical names (``conv1.weight``, ``fire2.squeeze.bias`` ...);
the canonical metadata is stored as ``metadata_props``.  Opset 13, IR version 7.

Import (:func:`read`, :func:`decode`) does not trust names: it walks the ``Conv`` nodes in
graph order, cuts them into the spec's groups (conv1, each Fire's 3 or 4 convs, conv10) and
matches each conv of a group by its weight shape, kernel, stride and padding, so the
project's own export, the graph ``torch.onnx.export`` produces (``features.3.squeeze.weight``
or ``onnx::Conv_123``), the ONNX model zoo's Caffe2 export (``conv1_w_0``,
``fire2/squeeze1x1_w_0`` ...) and its Gluon export (``squeezenet0_conv0_weight`` ...) all
load.  Where a weight's name is one a known exporter gives another layer, import fails.  The
variant comes from the graph, never from the file name (the model zoo once shipped a
"squeezenet1.0" file that is v1.1): conv1's shape gives the version, conv10's filters
``num_classes`` and its ``pads`` attribute ``final_conv_padding``; 30 convs mean the complex
bypass, an ``Add`` of two computed tensors in a 26-conv graph the simple bypass.  A Fire whose
``Concat`` puts expand3x3 first is refused (its weights would not mean the same thing).

Files larger than :data:`MAX_BYTES` and tensors stored as external data are refused (external
data would make the reader open other files).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import spec as S
from ..errors import WeightsError
from ..spec import Variant
from . import _graph
from ._io import atomic_write, read_limited
from ._library import dependency
from .canonical import Weights, make

NAME = "onnx"
OPSET = 13
IR_VERSION = 7
MAX_BYTES = 512 * 1024**2
MAX_DIM = 2**31
PRODUCER = "squeezenet-ports"
INPUT, OUTPUT = "input", "logits"


def _onnx():
    return dependency("onnx", NAME)


# --- export ----------------------------------------------------------------------------------
def build(weights: Weights, *, dynamic_size: bool = True):
    """The complete ``onnx.ModelProto`` of ``weights`` (checked with ``onnx.checker``)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    variant = weights.variant
    nodes: list = []
    counter = [0]

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        counter[0] += 1
        nodes.append(helper.make_node(op, inputs, [output], name=f"{output}/{op}", **attrs))
        return output

    def conv(c: S.Conv, x: str) -> str:
        p = c.padding
        return node("Conv", [x, f"{c.name}.weight", f"{c.name}.bias"], c.name,
                    kernel_shape=[c.kernel, c.kernel], strides=[c.stride, c.stride],
                    pads=[p, p, p, p], dilations=[1, 1], group=1)

    h = INPUT
    for layer in variant.layers():
        if isinstance(layer, S.Conv):
            h = conv(layer, h)
        elif isinstance(layer, S.ReLU):
            h = node("Relu", [h], layer.name)
        elif isinstance(layer, S.MaxPool):
            h = node("MaxPool", [h], layer.name, kernel_shape=[layer.kernel, layer.kernel],
                     strides=[layer.stride, layer.stride], pads=[0, 0, 0, 0],
                     ceil_mode=int(layer.ceil_mode))
        elif isinstance(layer, S.Fire):
            s = node("Relu", [conv(layer.squeeze, h)], f"{layer.name}.squeeze.relu")
            e1 = node("Relu", [conv(layer.expand1x1, s)], f"{layer.name}.expand1x1.relu")
            e3 = node("Relu", [conv(layer.expand3x3, s)], f"{layer.name}.expand3x3.relu")
            out = node("Concat", [e1, e3], f"{layer.name}.concat", axis=1)
            if layer.bypass == "identity":
                out = node("Add", [out, h], f"{layer.name}.add")
            elif layer.bypass == "conv":
                out = node("Add", [out, conv(layer.bypass_conv, h)], f"{layer.name}.add")
            h = out
        elif isinstance(layer, S.Dropout):
            continue  # identity at inference
        elif isinstance(layer, S.GlobalAvgPool):
            h = node("GlobalAveragePool", [h], layer.name)
            h = node("Flatten", [h], OUTPUT, axis=1)
        else:  # pragma: no cover - the spec has no other layer kinds
            raise TypeError(f"unknown layer {layer!r}")
    assert h == OUTPUT
    size = ["H", "W"] if dynamic_size else [224, 224]
    inits = [numpy_helper.from_array(np.ascontiguousarray(weights.tensors[k], np.float32), k)
             for k in variant.params()]
    graph = helper.make_graph(
        nodes, f"squeezenet_{variant.id}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, *size])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", variant.num_classes])],
        initializer=inits)
    model = helper.make_model(graph, producer_name=PRODUCER, producer_version="1",
                              opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string=f"SqueezeNet {variant.id}: "
                                         f"{weights.meta.get('source', '')}")
    model.ir_version = IR_VERSION
    helper.set_model_props(model, dict(sorted(weights.meta.items())))
    onnx.checker.check_model(model)
    return model


def encode(weights: Weights, *, dynamic_size: bool = True) -> bytes:
    """The ``.onnx`` bytes of ``weights``."""
    return build(weights, dynamic_size=dynamic_size).SerializeToString()


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    return [atomic_write(path, encode(weights), overwrite=overwrite)]


def activation_tensors(variant: Variant) -> dict[str, str]:
    """Activation name -> the tensor of our ONNX export that holds it (the exporter names
    each node's output: ``relu1`` for conv1 after its ReLU, ``fire2.squeeze.relu``,
    ``fire2.concat`` or ``fire2.add``, ``pool10`` [N,C,1,1], ``logits``)."""
    out = {}
    for layer in variant.layers():
        if isinstance(layer, S.ReLU):
            out[layer.of] = layer.name
        elif isinstance(layer, S.MaxPool):
            out[layer.name] = layer.name
        elif isinstance(layer, S.Fire):
            for c in (layer.squeeze, layer.expand1x1, layer.expand3x3):
                out[c.name] = f"{c.name}.relu"
            if layer.bypass_conv is not None:
                out[layer.bypass_conv.name] = layer.bypass_conv.name
            out[layer.name] = f"{layer.name}.{'concat' if layer.bypass is None else 'add'}"
        elif isinstance(layer, S.GlobalAvgPool):
            out[layer.name] = layer.name
    out["logits"] = OUTPUT
    return out


# --- import ----------------------------------------------------------------------------------
def _known_names(variant: Variant) -> dict[str, str]:
    """Weight names known exporters give each conv -> canonical conv name."""
    from .torch import key_table

    caffe = {"squeeze": "squeeze1x1", "expand1x1": "expand1x1", "expand3x3": "expand3x3",
             "bypass": "bypass"}
    out: dict[str, str] = {}
    for key, tv in key_table(variant).items():
        if key.endswith(".weight"):
            conv = key[: -len(".weight")]
            out[key] = out[tv] = conv
            if "." in conv:
                fire, part = conv.split(".")
                for sep in ("/", "_"):
                    out[f"{fire}{sep}{caffe[part]}_w_0"] = conv
            else:
                out[f"{conv}_w_0"] = conv
    return out


def read(path, *, variant: Variant | None = None) -> Weights:
    """An ONNX file -> canonical :class:`Weights` (see the module docstring)."""
    blob = read_limited(path, MAX_BYTES)
    return decode(blob, path=path, variant=variant)


def _text(value) -> str:
    """A protobuf string field as ``str``: ONNX's messages are proto2, whose strings are not
    checked on parsing, and protobuf hands back ``bytes`` for invalid UTF-8."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _type_name(onnx, code: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(code)
    except ValueError:
        return f"unknown type code {code}"


FLOAT_TYPES = ("FLOAT", "FLOAT16", "DOUBLE")  # TensorProto data types read (as float32)


def decode(blob: bytes, *, path=None, variant: Variant | None = None) -> Weights:
    onnx = _onnx()
    from onnx import helper, numpy_helper

    if len(blob) > MAX_BYTES:
        raise WeightsError(f"file is {len(blob)} bytes, more than the {MAX_BYTES} allowed")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(blob))
    except MemoryError:
        raise  # never reported as a bad file: the reader must not need that much
    except Exception as e:  # google.protobuf.message.DecodeError and friends
        raise WeightsError(f"not an ONNX model (protobuf parse failed: {e})") from None
    graph = model.graph
    if not graph.node:
        raise WeightsError("the model has an empty graph (not an ONNX model?)")

    # Constants: initializers and Constant nodes, through Identity nodes.
    consts: dict[str, object] = {i.name: i for i in graph.initializer}
    alias: dict[str, str] = {}
    producer: dict[str, object] = {}
    for n in graph.node:
        for out in n.output:
            producer[out] = n
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    consts[n.output[0]] = a.t
        elif n.op_type == "Identity" and n.input and n.output:
            alias[n.output[0]] = n.input[0]
    for t in consts.values():
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            raise WeightsError(f"tensor {t.name!r} is stored as external data; refusing to open "
                               "other files (save the model with its weights inside)")

    def resolve(name: str) -> str:
        seen = 0
        while name in alias and seen < 100:
            name, seen = alias[name], seen + 1
        return name

    converted: dict[str, np.ndarray] = {}

    def tensor(name: str, what: str) -> np.ndarray:
        key = resolve(name)
        if key in converted:  # a weight shared by several nodes is converted once
            return converted[key]
        t = consts.get(key)
        if t is None:
            raise WeightsError(f"{what} {name!r} is not a constant (initializer or Constant node)")
        dims = list(t.dims)
        if len(dims) > 8 or any(not 0 <= d <= MAX_DIM for d in dims):
            raise WeightsError(f"{what} {name!r}: bad dims {dims[:16]} (at most 8, each "
                               f"0..{MAX_DIM})")
        kind = _type_name(onnx, t.data_type)
        if kind not in FLOAT_TYPES:
            raise WeightsError(f"{what} {name!r}: data type {kind}, expected FLOAT (or FLOAT16, "
                               "DOUBLE)")
        try:  # external data was refused above: to_array opens no file
            arr = numpy_helper.to_array(t)
        except (ValueError, OverflowError, TypeError) as e:  # data that does not fit the dims
            raise WeightsError(f"{what} {name!r}: dims {dims}: {type(e).__name__}: "
                               f"{e}"[:300]) from None
        converted[key] = np.ascontiguousarray(arr, dtype=np.float32)
        return converted[key]

    def attribute(n, label, name: str, kind: str, default):
        """The value of attribute ``name`` of node ``n`` (``default`` if absent), refused
        unless it is one attribute of type ``kind`` (``"INT"``, ``"INTS"``, ``"STRING"``)."""
        found = [a for a in n.attribute if a.name == name]
        if len(found) > 1:
            raise WeightsError(f"{n.op_type} {label!r}: attribute {name!r} appears {len(found)} "
                               "times")
        if not found:
            return default
        if found[0].type != getattr(onnx.AttributeProto, kind):
            raise WeightsError(f"{n.op_type} {label!r}: attribute {name!r} is of type "
                               f"{attr_type(found[0].type)}, expected {kind}")
        return helper.get_attribute_value(found[0])

    def ints_attr(n, label, name: str, default: list[int], length: int) -> list[int]:
        values = list(attribute(n, label, name, "INTS", default))
        if len(values) != length:
            raise WeightsError(f"{n.op_type} {label!r}: attribute {name!r} is {values[:16]}, "
                               f"expected {length} ints")
        return values

    def attr_type(code: int) -> str:
        try:
            return onnx.AttributeProto.AttributeType.Name(code)
        except ValueError:
            return f"unknown attribute type {code}"

    # Every Conv in graph order, with its weights and geometry.
    convs = []
    for n in (n for n in graph.node if n.op_type == "Conv"):
        label = _text(n.name) or (_text(n.output[0]) if n.output else "(unnamed)")
        if len(n.input) < 2:
            raise WeightsError(f"Conv {label!r} has no weight input")
        w = tensor(n.input[1], f"Conv {label!r} weight")
        if w.ndim != 4:
            raise WeightsError(f"Conv {label!r}: weight shape {list(w.shape)}, expected 4-D OIHW")
        if len(n.input) > 2 and n.input[2]:
            b = tensor(n.input[2], f"Conv {label!r} bias")
        else:
            b = np.zeros(w.shape[0], np.float32)
        if attribute(n, label, "group", "INT", 1) != 1 or \
                set(ints_attr(n, label, "dilations", [1, 1], 2)) != {1}:
            raise WeightsError(f"Conv {label!r}: grouped or dilated convolution is not "
                               "SqueezeNet's")
        stride = ints_attr(n, label, "strides", [1, 1], 2)
        kernel = list(w.shape[2:])
        pads = ints_attr(n, label, "pads", [0, 0, 0, 0], 4)
        auto = attribute(n, label, "auto_pad", "STRING", b"NOTSET").decode("ascii", "replace")
        if auto in ("SAME_UPPER", "SAME_LOWER") and set(stride) == {1} and kernel[0] % 2:
            pads = [(kernel[0] - 1) // 2] * 4
        elif auto not in ("NOTSET", "VALID"):
            raise WeightsError(f"Conv {label!r}: auto_pad={auto} with stride {stride} is not "
                               "SqueezeNet's geometry")
        if len(set(stride)) != 1 or len(set(pads)) != 1 or kernel[0] != kernel[1]:
            raise WeightsError(f"Conv {label!r}: non-square stride {stride}, pads {pads} or kernel "
                               f"{kernel}")
        convs.append(_graph.Conv(id(n), label, w, b, stride[0], pads[0], resolve(n.input[1])))

    # The variant, from the graph; the spec's convs matched in graph order.
    def computed(name: str) -> bool:
        return resolve(name) not in consts
    simple = any(n.op_type in ("Add", "Sum") and len(n.input) >= 2
                 and all(computed(i) for i in n.input) for n in graph.node)
    variant = _graph.variant_of(convs, simple_bypass=simple, requested=variant)
    matched = _graph.match(convs, variant, known=_known_names(variant))

    # Each Fire's Concat must put expand1x1 first.
    def made_by(name: str):
        n = producer.get(resolve(name))
        return None if n is None else (n.op_type, list(n.input), id(n))

    def source(name: str):
        return _graph.source_conv(name, made_by, conv="Conv",
                                  through=("Relu", "Identity", "Clip"))
    concats = [(i, list(n.input)) for i, n in enumerate(graph.node) if n.op_type == "Concat"]
    _graph.check_concat_order(variant, matched, _graph.concat_positions(concats, source))

    tensors = _graph.tensors_of(matched)
    props = {_text(p.key): _text(p.value) for p in model.metadata_props}
    label = os.path.basename(os.fspath(path)) if path is not None else "bytes"
    if _text(model.producer_name) == PRODUCER and "preprocessing" in props:
        preprocessing, source = props["preprocessing"], props.get("source", "ONNX")
        # make()'s own parameter names cannot be metadata keys
        extra = {k: v for k, v in props.items() if k not in variant.to_meta()
                 and k not in ("preprocessing", "source", "tensors", "variant")}
    else:
        producer_name = " ".join(filter(None, [_text(model.producer_name),
                                               _text(model.producer_version)]))
        preprocessing, extra = "torchvision", {}
        source = f"ONNX {label}" + (f" (producer {producer_name})" if producer_name else "")
    return make(tensors, variant, preprocessing=preprocessing, source=source, **extra)
