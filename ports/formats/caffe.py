"""Caffe ``.caffemodel`` (binary ``NetParameter``) and ``.prototxt`` (text) files.

Reading accepts both layouts Caffe has used: V2 (``NetParameter.layer``, field 100, string
layer types) and V1 (``NetParameter.layers``, field 2, enum layer types).  Layer names map
to canonical names by table; both the Caffe release names and the Deep Compression names
are known:

=================  ======================  =====================  ==================
canonical          Caffe (BVLC/DeepScale)  Deep Compression       written by us
=================  ======================  =====================  ==================
``conv1``          ``conv1``               ``conv1``              ``conv1``
``fireN.squeeze``  ``fireN/squeeze1x1``    ``fireN/conv1x1_1``    ``fireN/squeeze1x1``
``fireN.expand1x1`` ``fireN/expand1x1``    ``fireN/conv1x1_2``    ``fireN/expand1x1``
``fireN.expand3x3`` ``fireN/expand3x3``    ``fireN/conv3x3_2``    ``fireN/expand3x3``
``fireN.bypass``   (complex bypass)        --                     ``fireN/bypass``
``conv10``         ``conv10``              ``conv_final``         ``conv10``
=================  ======================  =====================  ==================

Each convolution holds two blobs: the weight, OIHW ``[out, in, kH, kW]`` (``shape.dim``, or
the legacy ``num, channels, height, width``) and the bias ``[out]`` (legacy ``[1,1,1,out]``),
values in ``data`` (float32) or ``double_data`` (float64).

The architecture is read from the layer parameters (a ``.caffemodel`` written by Caffe
carries them, as does a ``.prototxt``): the version from conv1's shape (96x3x7x7: v1.0,
64x3x3x3: v1.1), ``num_classes`` from conv10, ``final_conv_padding`` from conv10's ``pad``,
and the bypass kind from ``Eltwise`` layers and ``fireN/bypass`` convolutions.  When the
layer graph is present it is traced and checked against :mod:`ports.spec`: pooling
positions and parameters (max 3x3 stride 2, Caffe's ceil rounding; global average pooling
at the end), the fire concat order (expand1x1 first), the ReLU after conv10, and every
convolution's kernel, stride and padding.  Anything SqueezeNet does not compute the same way
raises :class:`ports.errors.WeightsError` naming the layer.

Writing produces a V2 ``.caffemodel`` (full layer graph plus blobs, like Caffe's own
snapshots) and a deploy ``.prototxt`` beside it (same stem): ``Input`` 1x3x227x227, ceil
max pooling (Caffe's default), conv10 ``pad`` stated explicitly, ``Concat`` of expand1x1
then expand3x3, ``ReLU`` after conv10, ``Pooling { pool: AVE global_pooling: true }``, then
``Softmax`` (``prob``); bypass variants add ``Eltwise`` SUM layers ``fireN/bypass_sum`` and,
for the complex bypass, 1x1 convolutions ``fireN/bypass``.  ``pool10`` is the logits blob.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..spec import COMPLEX_BYPASS, SIMPLE_BYPASS, Conv, Fire, MaxPool, Variant
from ..spec import Dropout as SpecDropout
from ..spec import GlobalAvgPool as SpecGAP
from ..spec import ReLU as SpecReLU
from ._io import atomic_write
from ._library import about, companion, dependency
from .canonical import Weights, make, version_of
from .deepcompression import dc_layer_name

NAME = "caffe"
PROTOTXT = ".prototxt"  # a net definition, as text (written beside a .caffemodel)
INPUT_SIZE = 227
MAX_FILE = 1 << 31  # protobuf messages cannot exceed 2 GiB

# Canonical conv part -> Caffe layer-name suffix (inside "fireN/").
_FIRE_CAFFE = {"squeeze": "squeeze1x1", "expand1x1": "expand1x1", "expand3x3": "expand3x3",
               "bypass": "bypass"}
# Layer types that carry no computation SqueezeNet cares about at inference.
_PASS_THROUGH = {"Dropout", "Split"}
_IGNORED = {"Input", "Data", "ImageData", "Accuracy", "SoftmaxWithLoss", "Softmax",
            "Silence"}
_SUPPORTED = {"Convolution", "ReLU", "Pooling", "Concat", "Eltwise"} | _PASS_THROUGH | _IGNORED


def caffe_layer_name(canonical_conv: str) -> str:
    """``"fire2.squeeze"`` -> ``"fire2/squeeze1x1"``; ``"conv1"``/``"conv10"`` unchanged."""
    if canonical_conv in ("conv1", "conv10"):
        return canonical_conv
    fire, _, part = canonical_conv.partition(".")
    if not fire.startswith("fire") or part not in _FIRE_CAFFE:
        raise KeyError(canonical_conv)
    return f"{fire}/{_FIRE_CAFFE[part]}"


def name_table(variant: Variant) -> dict[str, str]:
    """Caffe and Deep Compression layer name -> canonical conv name, for ``variant``."""
    table = {}
    for conv in variant.convs():
        table[caffe_layer_name(conv.name)] = conv.name
        table[dc_layer_name(conv.name)] = conv.name
    return table


# Every layer name any SqueezeNet variant may use (the complex variant has them all).
LAYER_NAMES = name_table(Variant("1_0", 1000, 0, "complex"))


# --- schema (protobuf) is imported lazily so that importing this module never fails -------
def _schema():
    dependency("google.protobuf.text_format", NAME)  # a missing protobuf says what to install
    from . import caffe_schema

    return caffe_schema


# --- a layout-independent view of one layer -------------------------------------------------
@dataclass
class _Layer:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    blobs: list = field(default_factory=list)
    conv: object = None       # ConvolutionParameter or None when absent
    pool: object = None
    eltwise: object = None
    concat: object = None
    relu: object = None


def _active_in_test(layer) -> bool:
    """Caffe's NetState filtering for phase TEST (the deploy phase)."""
    test = 1
    if len(layer.include):
        return any(not r.HasField("phase") or r.phase == test for r in layer.include)
    return not any(r.HasField("phase") and r.phase == test for r in layer.exclude)


def _layers(net) -> tuple[list[_Layer], str]:
    """Both layouts as :class:`_Layer` (TEST phase only), and ``"V1"`` or ``"V2"``."""
    cs = _schema()
    if len(net.layer) and len(net.layers):
        raise WeightsError(f"holds both V2 'layer' ({len(net.layer)}) and V1 'layers' "
                           f"({len(net.layers)}) entries; Caffe accepts only one layout")
    # Legacy net inputs (``input: "data"``) act as an Input layer.
    out = [_Layer("input", "Input", [], list(net.input))] if len(net.input) else []
    v1_names = {v: k for k, v in cs.V1_LAYER_TYPES.items()}
    for layer in net.layer if len(net.layer) else net.layers:
        if not _active_in_test(layer):
            continue
        if isinstance(layer.type, str):
            kind = layer.type
        else:
            enum = v1_names.get(layer.type, str(layer.type))
            kind = cs.V1_TO_V2_TYPE.get(enum, enum)

        params = [getattr(layer, f) if layer.HasField(f) else None
                  for f in ("convolution_param", "pooling_param", "eltwise_param",
                            "concat_param", "relu_param")]
        out.append(_Layer(layer.name, kind, list(layer.bottom), list(layer.top),
                          list(layer.blobs), *params))
    return out, "V1" if len(net.layers) else "V2"


# --- architecture ---------------------------------------------------------------------------
@dataclass
class NetInfo:
    """What a Caffe net description says about the architecture; ``None``: not stated."""

    version: str | None = None
    num_classes: int | None = None
    final_conv_padding: int | None = None
    bypass: str | None = None
    convs: dict = field(default_factory=dict)   # canonical conv name -> _Layer

    def variant(self, default: Variant | None = None) -> Variant:
        """The stated properties, the rest from ``default``; ``ValueError`` if out of range."""
        d = default or Variant()
        return Variant(self.version or d.version,
                       self.num_classes if self.num_classes is not None else d.num_classes,
                       self.final_conv_padding if self.final_conv_padding is not None
                       else d.final_conv_padding,
                       self.bypass or d.bypass)


def _single(values, default: int | None, what: str) -> int | None:
    values = list(values)
    if not values:
        return default
    if any(v != values[0] for v in values):
        raise WeightsError(f"{what} {values}: only square (equal) values are supported")
    return int(values[0])


def _conv_geometry(layer: _Layer) -> dict:
    """kernel/stride/pad/num_output/bias_term/group/dilation of a conv layer's parameters."""
    p = layer.conv
    where = f"layer {layer.name!r}"
    kernel = _single(p.kernel_size, None, f"{where}: kernel_size")
    if p.HasField("kernel_h") or p.HasField("kernel_w"):
        kernel = _single([p.kernel_h, p.kernel_w], None, f"{where}: kernel_h/kernel_w")
    stride = _single(p.stride, 1, f"{where}: stride")
    if p.HasField("stride_h") or p.HasField("stride_w"):
        stride = _single([p.stride_h, p.stride_w], None, f"{where}: stride_h/stride_w")
    pad = _single(p.pad, 0, f"{where}: pad")
    if p.HasField("pad_h") or p.HasField("pad_w"):
        pad = _single([p.pad_h, p.pad_w], None, f"{where}: pad_h/pad_w")
    return {"kernel": kernel, "stride": stride, "pad": pad,
            "num_output": p.num_output if p.HasField("num_output") else None,
            "bias_term": p.bias_term, "group": p.group,
            "dilation": _single(p.dilation, 1, f"{where}: dilation"),
            "axis": p.axis}


def _blob_shape(blob) -> tuple[int, ...]:
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    legacy = (blob.num, blob.channels, blob.height, blob.width)
    return tuple(int(d) for d in legacy) if any(legacy) else ()


def _analyse(layers: list[_Layer]) -> NetInfo:
    """Map layers to canonical convs, detect the architecture, check the layer graph."""
    info = NetInfo()
    for layer in layers:
        if layer.type not in _SUPPORTED:
            raise WeightsError(f"layer {layer.name!r} has type {layer.type!r}, which SqueezeNet "
                               f"does not use (supported: {', '.join(sorted(_SUPPORTED))})")
        if layer.type == "Convolution":
            canonical = LAYER_NAMES.get(layer.name)
            if canonical is None:
                raise WeightsError(f"convolution layer {layer.name!r} is not a SqueezeNet layer "
                                   "(expected conv1, fireN/squeeze1x1|expand1x1|expand3x3|bypass, "
                                   "conv10, or the Deep Compression names fireN/conv1x1_1 ... "
                                   "conv_final)")
            if canonical in info.convs:
                raise WeightsError(f"layers {info.convs[canonical].name!r} and {layer.name!r} are "
                                   f"both {canonical}")
            info.convs[canonical] = layer
        elif layer.blobs:
            raise WeightsError(f"layer {layer.name!r} ({layer.type}) carries {len(layer.blobs)} "
                               "parameter blobs; SqueezeNet has weights only in convolutions")
    for needed in ("conv1", "conv10"):
        if needed not in info.convs:
            names = sorted({caffe_layer_name(needed), dc_layer_name(needed)})
            raise WeightsError(f"no {needed} layer (named {' or '.join(map(repr, names))}); "
                               f"{len(info.convs)} known convolution layers found"
                               + ("" if info.convs else ": empty or not a SqueezeNet net"))

    # Version and classes: from the blobs where present, else from the layer parameters.
    conv1, conv10 = info.convs["conv1"], info.convs["conv10"]
    shape = _blob_shape(conv1.blobs[0]) if conv1.blobs else None
    if shape is None and conv1.conv is not None:
        g = _conv_geometry(conv1)
        shape = (g["num_output"], 3, g["kernel"], g["kernel"])
    if shape is not None:
        info.version = version_of(shape, name=f"layer {conv1.name!r}")
    if conv10.blobs and len(_blob_shape(conv10.blobs[0])) == 4:
        info.num_classes = _blob_shape(conv10.blobs[0])[0]
    elif conv10.conv is not None and conv10.conv.HasField("num_output"):
        info.num_classes = int(conv10.conv.num_output)
    if conv10.conv is not None:
        pad = _conv_geometry(conv10)["pad"]
        if pad not in (0, 1):
            raise WeightsError(f"layer {conv10.name!r}: pad {pad}, expected 0 or 1")
        info.final_conv_padding = pad
    bypass_convs = sorted(int(k[4]) for k in info.convs if k.endswith(".bypass"))
    if bypass_convs:
        if bypass_convs != list(COMPLEX_BYPASS):
            raise WeightsError(f"bypass convolutions around fires {bypass_convs}; the complex "
                               f"bypass has them around fires {list(COMPLEX_BYPASS)}")
        info.bypass = "complex"

    if any(layer.type not in ("Convolution",) + tuple(_IGNORED) for layer in layers):
        _check_graph(layers, info)
    return info


def _check_graph(layers: list[_Layer], info: NetInfo) -> None:
    """Trace the layer graph and compare it with the spec of the detected variant.

    Every blob gets a symbolic value: ``input``; a conv's canonical name; ``X+relu``;
    ``pool(X)``; ``gap(X)``; ``fireN`` (its concat); ``fireN+id`` / ``fireN+conv`` (bypass
    sums).  The spec of the detected variant predicts the value each conv must consume and
    the final output; any difference is an error naming the layer.
    """
    value: dict[str, str] = {}
    consumed: dict[str, tuple[str, str]] = {}   # conv -> (its bottom's value, layer name)
    fire_input: dict[int, str] = {}
    eltwise: dict[int, str] = {}

    def get(layer: _Layer, blob: str) -> str:
        if blob not in value:
            raise WeightsError(f"layer {layer.name!r} reads blob {blob!r}, which no earlier layer "
                               "produces")
        return value[blob]

    def one(layer: _Layer, n_bottoms: int = 1) -> None:
        if len(layer.bottoms) != n_bottoms or len(layer.tops) != 1:
            raise WeightsError(f"layer {layer.name!r} ({layer.type}): expected {n_bottoms} "
                               f"bottom(s) and 1 top, got {layer.bottoms} -> {layer.tops}")

    for layer in layers:
        t = layer.type
        if t in ("Input", "Data", "ImageData"):
            for top in layer.tops[:1] if t != "Input" else layer.tops:
                value[top] = "input"
        elif t in _IGNORED:
            continue
        elif t == "Convolution":
            one(layer)
            canonical = LAYER_NAMES[layer.name]
            src = get(layer, layer.bottoms[0])
            consumed[canonical] = (src, layer.name)
            if canonical.endswith(".squeeze"):
                fire_input[int(canonical[4])] = src
            value[layer.tops[0]] = canonical
        elif t == "ReLU":
            one(layer)
            if layer.relu is not None and layer.relu.negative_slope != 0:
                raise WeightsError(f"layer {layer.name!r}: leaky ReLU (negative_slope "
                                   f"{layer.relu.negative_slope}); SqueezeNet uses a plain ReLU")
            value[layer.tops[0]] = get(layer, layer.bottoms[0]) + "+relu"
        elif t in _PASS_THROUGH:
            if len(layer.bottoms) != 1:
                raise WeightsError(f"layer {layer.name!r} ({t}): expected 1 bottom, got "
                                   f"{layer.bottoms}")
            src = get(layer, layer.bottoms[0])
            for top in layer.tops:
                value[top] = src
        elif t == "Pooling":
            one(layer)
            value[layer.tops[0]] = _pool_value(layer, get(layer, layer.bottoms[0]))
        elif t == "Concat":
            srcs = [get(layer, b) for b in layer.bottoms]
            axis = 1
            if layer.concat is not None:
                axis = layer.concat.axis if layer.concat.HasField("axis") else \
                    layer.concat.concat_dim
            m = re.fullmatch(r"(fire\d)\.expand1x1\+relu", srcs[0]) if srcs else None
            if (len(layer.tops) != 1 or axis != 1 or m is None
                    or srcs != [f"{m[1]}.expand1x1+relu", f"{m[1]}.expand3x3+relu"]):
                raise WeightsError(f"layer {layer.name!r} (Concat) joins {srcs} along axis {axis}; "
                                   "a fire module concatenates its ReLU'd expand1x1 then expand3x3 "
                                   "along channels (axis 1)")
            value[layer.tops[0]] = m[1]
        elif t == "Eltwise":
            one(layer, 2)
            p = layer.eltwise
            if p is not None and (p.operation != 1 or any(c != 1 for c in p.coeff)):
                raise WeightsError(f"layer {layer.name!r} (Eltwise): only a plain SUM (no "
                                   "coefficients) is a SqueezeNet bypass")
            srcs = [get(layer, b) for b in layer.bottoms]
            fires = [s for s in srcs if re.fullmatch(r"fire\d", s)]
            other = [s for s in srcs if s not in fires[:1]]
            n = int(fires[0][4]) if fires else None
            if n is None or len(other) != 1:
                raise WeightsError(f"layer {layer.name!r} (Eltwise) sums {srcs}; a bypass sums a "
                                   "fire module's concat with its input or its bypass conv")
            if other[0] == fire_input.get(n):
                kind = "id"
            elif other[0] == f"fire{n}.bypass":
                kind = "conv"
            else:
                raise WeightsError(f"layer {layer.name!r} (Eltwise) adds {other[0]!r} to fire{n}; "
                                   f"a bypass adds fire{n}'s input ({fire_input.get(n)!r}) or "
                                   f"fire{n}.bypass")
            eltwise[n] = kind
            value[layer.tops[0]] = f"fire{n}+{kind}"

    ids = sorted(n for n, k in eltwise.items() if k == "id")
    convs = sorted(n for n, k in eltwise.items() if k == "conv")
    if not eltwise:
        bypass = "none"
    elif ids == list(SIMPLE_BYPASS) and not convs:
        bypass = "simple"
    elif ids == list(SIMPLE_BYPASS) and convs == list(COMPLEX_BYPASS):
        bypass = "complex"
    else:
        raise WeightsError(f"bypass sums around fires {ids} (identity) and {convs} (conv) match "
                           "neither the simple (3,5,7,9) nor the complex (+2,4,6,8) bypass")
    if info.bypass is not None and info.bypass != bypass:
        raise WeightsError(f"the net has bypass convolutions but its Eltwise layers form a "
                           f"{bypass!r} bypass")
    info.bypass = bypass
    try:
        variant = info.variant(Variant(info.version or "1_1", final_conv_padding=0))
    except ValueError as e:
        raise WeightsError(str(e)) from None
    expected, final = _expected_values(variant)
    missing = [k for k in expected if k not in consumed]
    if missing:
        raise WeightsError("missing convolution layers: " + ", ".join(
            caffe_layer_name(k) for k in missing))
    for canonical, want in expected.items():
        got, name = consumed[canonical]
        if got != want:
            raise WeightsError(f"layer {name!r} ({canonical}) consumes {got!r}; SqueezeNet "
                               f"{variant.id} feeds it {want!r}")
        layer = info.convs[canonical]
        if layer.conv is not None:
            _check_conv(layer, _spec_conv(variant, canonical))
    if final not in value.values():
        consumers = [f"{lay.name} ({lay.type})" for lay in layers
                     if value.get(lay.bottoms[0] if lay.bottoms else "", "").startswith("conv10")]
        raise WeightsError(f"the net never computes {final!r} (conv10, ReLU, global average "
                           f"pooling); conv10 feeds {consumers or 'nothing'}")


def _pool_value(layer: _Layer, src: str) -> str:
    p = layer.pool
    if p is None:
        raise WeightsError(f"layer {layer.name!r} (Pooling) has no pooling_param")
    if p.pool == 1:  # AVE
        if not p.global_pooling:
            raise WeightsError(f"layer {layer.name!r}: average pooling over a fixed window; "
                               "SqueezeNet averages globally (pooling_param { pool: AVE "
                               "global_pooling: true })")
        return f"gap({src})"
    if p.pool != 0:
        raise WeightsError(f"layer {layer.name!r}: pooling method {p.pool} (STOCHASTIC), expected "
                           "MAX")
    kernel = p.kernel_size if p.HasField("kernel_size") else None
    if p.HasField("kernel_h") or p.HasField("kernel_w"):
        kernel = p.kernel_h if p.kernel_h == p.kernel_w else None
    stride = p.stride
    if p.HasField("stride_h") or p.HasField("stride_w"):
        stride = p.stride_h if p.stride_h == p.stride_w else None
    pad = max(p.pad, p.pad_h, p.pad_w)
    if p.global_pooling or kernel != 3 or stride != 2 or pad != 0 or p.round_mode != 0:
        raise WeightsError(f"layer {layer.name!r}: max pooling kernel {kernel} stride {stride} pad "
                           f"{pad} round_mode {'FLOOR' if p.round_mode else 'CEIL'}; SqueezeNet "
                           "pools 3x3, stride 2, no padding, rounding up (CEIL)")
    return f"pool({src})"


def _expected_values(variant: Variant) -> tuple[dict[str, str], str]:
    """Symbolic input each conv of ``variant`` consumes, and the final output's value."""
    expected: dict[str, str] = {}
    cur = "input"
    for layer in variant.layers():
        if isinstance(layer, Conv):
            expected[layer.name] = cur
            cur = layer.name
        elif isinstance(layer, SpecReLU):
            cur += "+relu"
        elif isinstance(layer, MaxPool):
            cur = f"pool({cur})"
        elif isinstance(layer, Fire):
            expected[layer.squeeze.name] = cur
            for c in (layer.expand1x1, layer.expand3x3):
                expected[c.name] = layer.squeeze.name + "+relu"
            if layer.bypass_conv is not None:
                expected[layer.bypass_conv.name] = cur
            cur = layer.name + {None: "", "identity": "+id", "conv": "+conv"}[layer.bypass]
        elif isinstance(layer, SpecGAP):
            cur = f"gap({cur})"
        elif isinstance(layer, SpecDropout):
            pass
    return expected, cur


def _spec_conv(variant: Variant, canonical: str) -> Conv:
    return next(c for c in variant.convs() if c.name == canonical)


def _check_conv(layer: _Layer, spec: Conv) -> None:
    g = _conv_geometry(layer)
    want = {"kernel": spec.kernel, "stride": spec.stride, "pad": spec.padding,
            "num_output": spec.out_channels, "bias_term": True, "group": 1, "dilation": 1,
            "axis": 1}
    bad = [f"{k} {g[k]} (expected {v})" for k, v in want.items()
           if g[k] != v and not (k == "num_output" and g[k] is None)]
    if bad:
        raise WeightsError(f"layer {layer.name!r} ({spec.name}): " + ", ".join(bad))


# --- reading --------------------------------------------------------------------------------
def _parse_binary(blob: bytes):
    cs = _schema()
    net = cs.NetParameter()
    try:
        net.ParseFromString(blob)
    except Exception as e:  # DecodeError, RuntimeError (upb), ...
        raise WeightsError(f"not a Caffe NetParameter protobuf ({type(e).__name__}: {e}); the file "
                           "is truncated or corrupt") from None
    return net


def read_net(path) -> tuple[NetInfo, str]:
    """Parse a ``.prototxt`` (text) or ``.caffemodel`` (binary): its :class:`NetInfo` and
    layout (``"V1"``: ``layers``, ``"V2"``: ``layer``)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size > MAX_FILE:
        raise WeightsError(f"file is {size} bytes, larger than any protobuf message")
    with open(path, "rb") as f:
        blob = f.read()
    net = _parse_text(blob) if path.lower().endswith(PROTOTXT) else _parse_binary(blob)
    layers, layout = _layers(net)
    return _analyse(layers), layout


def _parse_text(blob: bytes):
    cs = _schema()
    from google.protobuf import text_format

    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WeightsError(f"not UTF-8 text: {e}") from None
    net = cs.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=True)
    except text_format.ParseError as e:
        raise WeightsError(f"not a Caffe net definition: {e}") from None
    return net


def architecture(prototxt) -> Variant:
    """The SqueezeNet variant a ``.prototxt`` describes (checked against the spec); a
    problem names the file."""
    with about(prototxt):
        info, _ = read_net(prototxt)
        try:
            if info.version is None:
                raise ValueError("conv1 states no num_output/kernel_size")
            return info.variant()
        except ValueError as e:
            raise WeightsError(str(e)) from None


def read(path, *, variant: Variant | None = None, prototxt=None) -> Weights:
    """Read a ``.caffemodel`` (V1 or V2 layout) into canonical float32 weights.

    ``prototxt``: a net definition supplying what the ``.caffemodel`` does not state (a
    weights-only file has no conv10 padding); where both state a property they must agree.
    ``variant``: the expected variant (its conv10 padding and bypass are used when neither
    file states them); the caller checks the result against it.
    """
    path = os.fspath(path)
    if path.lower().endswith(PROTOTXT):
        raise WeightsError("a .prototxt holds no weights; read the .caffemodel (pass the "
                           "prototxt as its architecture)")
    info, layout = read_net(path)
    if prototxt is not None:
        with about(prototxt):
            other, _ = read_net(prototxt)
        for key in ("version", "num_classes", "final_conv_padding", "bypass"):
            mine, theirs = getattr(info, key), getattr(other, key)
            if mine is not None and theirs is not None and mine != theirs:
                raise WeightsError(f"{key} is {mine!r} here but {theirs!r} in "
                                   f"{os.fspath(prototxt)}")
            if mine is None:
                setattr(info, key, theirs)
    if info.final_conv_padding is None and variant is None:
        raise WeightsError("the file does not state conv10's padding (no convolution_param); give "
                           "the architecture (a .prototxt, or --variant e.g. 1_0-p1-none)")
    try:
        v = info.variant(variant)
    except ValueError as e:
        raise WeightsError(str(e)) from None
    tensors = {}
    for conv in v.convs():
        layer = info.convs.get(conv.name)
        if layer is None:
            raise WeightsError(f"no layer for {conv.name} (named {caffe_layer_name(conv.name)!r})")
        tensors.update(_conv_tensors(layer, conv))
    extra = sorted(set(info.convs) - {c.name for c in v.convs()})
    if extra:
        raise WeightsError(f"layers {extra} are not part of SqueezeNet {v.id}")
    return make(tensors, v, preprocessing="caffe",
                source=f"Caffe .caffemodel ({os.path.basename(path)}, {layout} layout)")


def _conv_tensors(layer: _Layer, conv: Conv) -> dict[str, np.ndarray]:
    """The weight [O,I,k,k] and bias [O] of one conv layer, shapes checked before use."""
    where = f"layer {layer.name!r} ({conv.name})"
    if len(layer.blobs) != 2:
        raise WeightsError(f"{where}: {len(layer.blobs)} blobs, expected 2 (weight and bias)")
    out = {}
    for blob, what, shape in ((layer.blobs[0], "weight", conv.weight_shape),
                              (layer.blobs[1], "bias", (conv.out_channels,))):
        stored = _blob_shape(blob)
        if stored != shape and not (what == "bias" and stored == (1, 1, 1, shape[0])):
            raise WeightsError(f"{where}: {what} blob shape {list(stored)}, expected {list(shape)}")
        n = math.prod(shape)
        if len(blob.data) and len(blob.double_data):
            raise WeightsError(f"{where}: {what} blob has both float and double data")
        values = blob.data if len(blob.data) else blob.double_data
        if len(values) != n:
            raise WeightsError(f"{where}: {what} blob holds {len(values)} values, shape "
                               f"{list(shape)} needs {n}")
        dtype = np.float32 if len(blob.data) else np.float64
        out[f"{conv.name}.{what}"] = np.asarray(values, dtype=dtype).astype(
            np.float32).reshape(shape)
    return out


# --- writing --------------------------------------------------------------------------------
def build_net(weights: Weights, *, with_blobs: bool = True, input_size: int = INPUT_SIZE):
    """The V2 ``NetParameter`` for ``weights`` (deploy graph; blobs when ``with_blobs``)."""
    cs = _schema()
    variant = weights.variant
    net = cs.NetParameter(name=f"SqueezeNet_{variant.id}")

    def add(name, kind, bottoms, tops):
        layer = net.layer.add(name=name, type=kind)
        layer.bottom.extend(bottoms)
        layer.top.extend(tops)
        return layer

    def conv_layer(conv: Conv, bottom: str) -> str:
        name = caffe_layer_name(conv.name)
        layer = add(name, "Convolution", [bottom], [name])
        p = layer.convolution_param
        p.num_output = conv.out_channels
        p.kernel_size.append(conv.kernel)
        if conv.stride != 1:
            p.stride.append(conv.stride)
        if conv.padding or conv.name == "conv10":
            p.pad.append(conv.padding)  # conv10: stated even when 0 (v1.0 uses 1)
        if with_blobs:
            for arr in (weights[f"{conv.name}.weight"], weights[f"{conv.name}.bias"]):
                blob = layer.blobs.add()
                blob.shape.dim.extend(arr.shape)
                blob.data.extend(np.asarray(arr, np.float32).reshape(-1).tolist())
        return name

    def relu(name: str, blob: str) -> str:
        add(name, "ReLU", [blob], [blob])
        return blob

    data = add("data", "Input", [], ["data"])
    data.input_param.shape.add().dim.extend([1, 3, input_size, input_size])
    cur = "data"
    for layer in variant.layers():
        if isinstance(layer, Conv):
            cur = conv_layer(layer, cur)
        elif isinstance(layer, SpecReLU):
            cur = relu(f"relu_{cur}", cur)
        elif isinstance(layer, MaxPool):
            pool = add(layer.name, "Pooling", [cur], [layer.name])
            pool.pooling_param.pool = 0  # MAX; Caffe rounds the output size up
            pool.pooling_param.kernel_size = layer.kernel
            pool.pooling_param.stride = layer.stride
            cur = layer.name
        elif isinstance(layer, Fire):
            fire_in = cur
            s = relu(f"{layer.name}/relu_squeeze1x1", conv_layer(layer.squeeze, cur))
            e1 = relu(f"{layer.name}/relu_expand1x1", conv_layer(layer.expand1x1, s))
            e3 = relu(f"{layer.name}/relu_expand3x3", conv_layer(layer.expand3x3, s))
            cur = f"{layer.name}/concat"
            add(cur, "Concat", [e1, e3], [cur])
            if layer.bypass is not None:
                other = fire_in if layer.bypass == "identity" else \
                    conv_layer(layer.bypass_conv, fire_in)
                total = f"{layer.name}/bypass_sum"
                add(total, "Eltwise", [cur, other], [total]).eltwise_param.operation = 1
                cur = total
        elif isinstance(layer, SpecDropout):
            add(layer.name, "Dropout", [cur], [cur]).dropout_param.dropout_ratio = layer.rate
        elif isinstance(layer, SpecGAP):
            pool = add(layer.name, "Pooling", [cur], [layer.name])
            pool.pooling_param.pool = 1  # AVE
            pool.pooling_param.global_pooling = True
            cur = layer.name
    add("prob", "Softmax", [cur], ["prob"])
    return net


def prototxt_path(path) -> Path:
    """The deploy ``.prototxt`` written beside ``path`` (same stem)."""
    return companion(path, PROTOTXT)


def encode(weights: Weights) -> tuple[bytes, bytes]:
    """(``.caffemodel`` bytes, deploy ``.prototxt`` bytes) for ``weights``."""
    text_format = dependency("google.protobuf.text_format", NAME)

    model = build_net(weights, with_blobs=True).SerializeToString()
    deploy = build_net(weights, with_blobs=False)
    v = weights.variant
    header = (f"# SqueezeNet {v.id} deploy net, written by squeezenet-ports\n"
              f"# input: BGR, 0-255 minus mean (104, 117, 123), {INPUT_SIZE}x{INPUT_SIZE}; "
              "logits: blob 'pool10'\n")
    return model, (header + text_format.MessageToString(deploy)).encode("utf-8")


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    """Write ``path`` (``.caffemodel``) and the deploy ``.prototxt`` beside it, atomically."""
    path, deploy_path = Path(path), prototxt_path(path)
    if path.suffix.lower() == PROTOTXT:
        raise WeightsError("the weights go to a .caffemodel; its .prototxt is written beside "
                           "it")
    if not overwrite:
        for p in (path, deploy_path):
            if p.exists():
                raise FileExistsError(f"{p} exists")
    model, deploy = encode(weights)
    written = [atomic_write(path, model, overwrite=overwrite)]
    try:
        written.append(atomic_write(deploy_path, deploy, overwrite=overwrite))
    except BaseException:
        if not overwrite:
            path.unlink(missing_ok=True)
        raise
    return written
