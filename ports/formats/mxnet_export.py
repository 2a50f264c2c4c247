"""MXNet export pairs (``HybridBlock.export(prefix)``): ``PREFIX-symbol.json`` and
``PREFIX-0000.params``, without MXNet.

What MXNet makes of them::

    net = mx.gluon.SymbolBlock.imports("m-symbol.json", ["data"], "m-0000.params")
    logits = net(mx.nd.array(x))                            # x: NCHW float32

(or ``mx.model.load_checkpoint("m", 0)`` for the Module API; C++/Scala/Java predictors read
the same pair).

The symbol file
---------------
The network as an NNVM graph, JSON: ``nodes`` in topological order (each ``op``, ``name``,
string ``attrs`` and ``inputs`` as ``[node, output, version]``), ``arg_nodes`` (the
variables), ``node_row_ptr``, ``heads`` and the graph ``attrs``
(``{"mxnet_version": ["int", 10901]}``).  This codec writes, from the spec, the graph MXNet
1.9.1 exports for :class:`ports.mxnet.SqueezeNet`, byte for byte (dmlc's JSON layout, the
same op names and attributes: ``Convolution``, ``Activation`` relu, ``Pooling`` max with
``pooling_convention`` ``full`` -- Caffe's ceil mode -- and a global average ``Pooling``,
``Concat`` on channels, ``elemwise_add`` for a bypass, ``Dropout``, ``Flatten``), and with
one more graph attribute, ``"squeezenet_metadata": ["str", JSON]``: the canonical metadata
(MXNet loads and ignores it).  Node names are Gluon's global names under the prefix
``squeezenet0_``: ``squeezenet0_conv<i>_weight`` / ``_bias`` / ``_fwd`` with ``i`` counting
the convolutions in the spec's order (conv1, then per fire squeeze, expand1x1, expand3x3,
bypass, then conv10), ``squeezenet0_relu<j>_fwd``, ``squeezenet0_pool<k>_fwd``,
``squeezenet0_concat<m>``, ``squeezenet0__plus<n>``, ``squeezenet0_dropout0_fwd``,
``squeezenet0_flatten0_flatten0``.

The params file
---------------
An NDArray list (:mod:`ports.formats.mxnet`'s codec) naming each parameter ``arg:`` + its
variable's name (``arg:squeezenet0_conv0_weight``), in creation order, float32 OIHW, as
``export`` writes it (byte-identical for the same values).

Reading
-------
The symbol file says which variable each convolution takes, so the parameters are mapped
by the graph, whatever their names (``squeezenet3_...``, a zoo's or a hand-built symbol's):
the *i*-th ``Convolution`` node in graph order is the spec's *i*-th convolution.  Every
convolution's kernel, stride, padding and filter count must be the spec's; the graph also
proves what a ``.params`` file cannot: conv10's padding (``final_conv_padding``) and the
bypass (``elemwise_add`` nodes: none, simple -- 4 additions -- or complex -- 8 additions and 4
more convolutions).  Other nodes are not judged (the Gluon zoo's SqueezeNet ends in a fixed
13x13 average pool, not a global one: its weights are the same).  ``preprocessing`` and
``source`` come from ``squeezenet_metadata`` when present, otherwise ``torchvision`` (the
Gluon zoo's) and ``mxnet export <symbol file>``.  Other epochs: ``read(..., epoch=N)``
reads ``PREFIX-000N.params``.  Bounds: the symbol file at most 16 MiB and 100,000 nodes;
every index, attribute and name is checked before use.  The pair is read only from its own
two files, side by side: either one a symbolic link (or a FIFO, a device) is refused, and
each is opened without following links and checked to be the file judged
(:func:`ports.formats._folder.read_file`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import spec as S
from ..errors import WeightsError
from ..spec import Variant
from . import canonical
from ._folder import read_file
from ._io import atomic_write
from ._library import about
from .canonical import Weights, key_problems
from .mxnet import decode_ndarrays, encode_ndarrays

NAME = "mxnet-export"
SYMBOL, PARAMS = "-symbol.json", "-0000.params"  # PREFIX + each: the pair an export writes

PREFIX = "squeezenet0_"
MXNET_VERSION = 10901
META_ATTR = "squeezenet_metadata"
MAX_SYMBOL = 16 << 20
MAX_NODES = 100_000
MAX_INPUTS = 1024
MAX_ATTR = 4096
PAIR = "an MXNet export pair"   # read only from its own files
ADD_OPS = ("elemwise_add", "_Plus", "_plus", "broadcast_add", "_add")
_TUPLE = re.compile(r"^\(?\s*(\d{1,9}(?:\s*,\s*\d{1,9}){0,7})?\s*,?\s*\)?$")
_EPOCH_PARAMS = re.compile(r"^-(\d{4,})\.params$")

__all__ = ["NAME", "graph", "symbol", "param_names", "encode", "paths",
           "parse_symbol", "read", "write"]


# --- the graph, as Gluon exports it -----------------------------------------------------------
class _Graph:
    """Nodes added in topological order, named with Gluon's per-kind counters."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.outputs: list[int] = []   # outputs of each node (node_row_ptr)
        self.counters: dict[str, int] = {}

    def count(self, kind: str) -> int:
        n = self.counters.get(kind, 0)
        self.counters[kind] = n + 1
        return n

    def add(self, op: str, name: str, attrs: dict[str, str], inputs: list[int],
            outputs: int = 1) -> int:
        node: dict[str, Any] = {"op": op, "name": name}
        if attrs:
            node["attrs"] = dict(sorted(attrs.items()))
        node["inputs"] = [[i, 0, 0] for i in inputs]
        self.nodes.append(node)
        self.outputs.append(outputs)
        return len(self.nodes) - 1

    def var(self, name: str, shape: tuple[int, ...], init: str | None = None) -> int:
        attrs = {"__dtype__": "0", "__lr_mult__": "1.0", "__shape__": str(tuple(shape)),
                 "__storage_type__": "0", "__wd_mult__": "1.0"}
        if init:
            attrs["__init__"] = init
        return self.add("null", name, attrs, [])

    def conv(self, x: int, c: S.Conv) -> int:
        base = f"{PREFIX}conv{self.count('conv')}"
        w = self.var(f"{base}_weight", c.weight_shape)
        b = self.var(f"{base}_bias", (c.out_channels,), "zeros")
        pair = lambda v: f"({v}, {v})"  # noqa: E731
        return self.add("Convolution", f"{base}_fwd", {
            "dilate": "(1, 1)", "kernel": pair(c.kernel), "layout": "NCHW", "no_bias": "False",
            "num_filter": str(c.out_channels), "num_group": "1", "pad": pair(c.padding),
            "stride": pair(c.stride)}, [x, w, b])

    def relu(self, x: int) -> int:
        return self.add("Activation", f"{PREFIX}relu{self.count('relu')}_fwd",
                        {"act_type": "relu"}, [x])

    def pool(self, x: int, layer: S.MaxPool | S.GlobalAvgPool) -> int:
        name = f"{PREFIX}pool{self.count('pool')}_fwd"
        if isinstance(layer, S.GlobalAvgPool):  # Gluon's GlobalAvgPool2D
            return self.add("Pooling", name, {
                "global_pool": "True", "kernel": "(1, 1)", "layout": "NCHW", "pad": "(0, 0)",
                "pool_type": "avg", "pooling_convention": "full", "stride": "(1, 1)"}, [x])
        k, s = layer.kernel, layer.stride
        return self.add("Pooling", name, {
            "global_pool": "False", "kernel": f"({k}, {k})", "layout": "NCHW", "pad": "(0, 0)",
            "pool_type": "max", "pooling_convention": "full" if layer.ceil_mode else "valid",
            "stride": f"({s}, {s})"}, [x], outputs=2)

    def fire(self, x: int, fire: S.Fire) -> int:
        s = self.relu(self.conv(x, fire.squeeze))
        e1 = self.relu(self.conv(s, fire.expand1x1))
        e3 = self.relu(self.conv(s, fire.expand3x3))
        out = self.add("Concat", f"{PREFIX}concat{self.count('concat')}",
                       {"dim": "1", "num_args": "2"}, [e1, e3])
        if fire.bypass is None:
            return out
        other = self.conv(x, fire.bypass_conv) if fire.bypass_conv is not None else x
        return self.add("elemwise_add", f"{PREFIX}_plus{self.count('_plus')}", {}, [out, other])


def graph(variant: Variant) -> _Graph:
    """The graph ``export`` writes for :class:`ports.mxnet.SqueezeNet` of ``variant``."""
    g = _Graph()
    x = g.add("null", "data", {}, [])
    for layer in variant.layers():
        if isinstance(layer, S.Conv):
            x = g.conv(x, layer)
        elif isinstance(layer, S.ReLU):
            x = g.relu(x)
        elif isinstance(layer, (S.MaxPool, S.GlobalAvgPool)):
            x = g.pool(x, layer)
        elif isinstance(layer, S.Fire):
            x = g.fire(x, layer)
        elif isinstance(layer, S.Dropout):
            x = g.add("Dropout", f"{PREFIX}dropout{g.count('dropout')}_fwd",
                      {"axes": "()", "cudnn_off": "False", "p": str(layer.rate)}, [x],
                      outputs=2)
    g.add("Flatten", f"{PREFIX}flatten0_flatten0", {}, [x])
    return g


# dmlc::JSONWriter's layout: an object or array is written on several lines (each item on
# its own, indented 2 per level, ", " before the line break) when it is a node, the graph, a
# map of more than one entry, or an array of more than 10 numbers or of objects.
class _Block:
    def __init__(self, items, multi: bool, braces: str) -> None:
        self.items, self.multi, self.braces = items, multi, braces


def _obj(pairs: dict, multi: bool | None = None) -> _Block:
    return _Block(list(pairs.items()), len(pairs) > 1 if multi is None else multi, "{}")


def _arr(items: list, multi: bool | None = None) -> _Block:
    return _Block(items, len(items) > 10 if multi is None else multi, "[]")


def _dmlc(value, depth: int = 0) -> str:
    if not isinstance(value, _Block):
        return json.dumps(value)
    parts = []
    for item in value.items:
        if value.braces == "{}":
            parts.append(f"{json.dumps(item[0])}: {_dmlc(item[1], depth + 1)}")
        else:
            parts.append(_dmlc(item, depth + 1))
    if not value.multi:
        return value.braces[0] + ", ".join(parts) + value.braces[1]
    inner, outer = "\n" + "  " * (depth + 1), "\n" + "  " * depth
    return value.braces[0] + inner + (", " + inner).join(parts) + outer + value.braces[1]


def symbol(variant: Variant, meta: dict[str, str] | None = None) -> bytes:
    """The ``-symbol.json`` bytes for ``variant``; ``meta``: canonical metadata to record."""
    g = graph(variant)
    nodes = []
    for node in g.nodes:
        fields: dict[str, Any] = {"op": node["op"], "name": node["name"]}
        if "attrs" in node:
            fields["attrs"] = _obj(node["attrs"])
        fields["inputs"] = _arr([_arr(e, False) for e in node["inputs"]],
                                len(node["inputs"]) > 10)
        nodes.append(_obj(fields, True))
    row_ptr = [0]
    for n in g.outputs:
        row_ptr.append(row_ptr[-1] + n)
    attrs: dict[str, Any] = {"mxnet_version": _arr(["int", MXNET_VERSION], False)}
    if meta is not None:
        attrs[META_ATTR] = _arr(["str", json.dumps(meta, sort_keys=True)], False)
    top = _obj({"nodes": _arr(nodes, True),
                "arg_nodes": _arr([i for i, n in enumerate(g.nodes) if n["op"] == "null"]),
                "node_row_ptr": _arr(row_ptr),
                "heads": _arr([_arr([len(g.nodes) - 1, 0, 0], False)]),
                "attrs": _obj(attrs)}, True)
    return _dmlc(top).encode("utf-8")


def param_names(variant: Variant) -> dict[str, str]:
    """Canonical name -> the params file's name (``arg:squeezenet0_conv0_weight``)."""
    table = {}
    for i, conv in enumerate(variant.convs()):
        for p in ("weight", "bias"):
            table[f"{conv.name}.{p}"] = f"arg:{PREFIX}conv{i}_{p}"
    return table


def encode(weights: Weights) -> tuple[bytes, bytes]:
    """(symbol file bytes, params file bytes) of ``weights``."""
    table = param_names(weights.variant)
    params = encode_ndarrays({table[k]: np.asarray(weights.tensors[k], dtype="<f4")
                              for k in table})
    return symbol(weights.variant, dict(weights.meta)), params


def paths(path) -> tuple[Path, Path]:
    """(symbol file, params file) of ``path``: a prefix, or either file of the pair."""
    text = os.fspath(path)
    stem = next((text[:-len(e)] for e in (SYMBOL, PARAMS) if text.lower().endswith(e)), text)
    return Path(stem + SYMBOL), Path(stem + PARAMS)


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    """Write the pair for ``path`` (a prefix or either file), each file atomically, the
    params file first."""
    symbol_path, params_path = paths(path)
    if not overwrite:
        for p in (symbol_path, params_path):
            if os.path.lexists(p):
                raise FileExistsError(f"{p} exists")
    sym, params = encode(weights)
    existed = os.path.lexists(params_path)
    written = [atomic_write(params_path, params, overwrite=overwrite)]
    try:
        written.insert(0, atomic_write(symbol_path, sym, overwrite=overwrite))
    except BaseException:
        if not existed:
            params_path.unlink(missing_ok=True)
        raise
    return written


# --- reading ----------------------------------------------------------------------------------
def _ints(text: str, what: str) -> tuple[int, ...]:
    m = _TUPLE.match(text) if isinstance(text, str) and len(text) < 200 else None
    if m is None:
        raise WeightsError(f"{what}: {str(text)[:40]!r} is not a tuple of integers")
    return tuple(int(v) for v in re.findall(r"\d+", text))


class _Conv:
    def __init__(self, index: int, node: dict, nodes: list[dict]) -> None:
        name = node["name"]
        attrs = node["attrs"]
        inputs = node["inputs"]
        self.name = name
        if len(inputs) != 3 or attrs.get("no_bias", "False") not in ("False", "false", "0"):
            raise WeightsError(f"Convolution node {index} ({name[:60]}) has no bias (SqueezeNet's "
                               "convolutions all have one)")
        self.weight, self.bias = (nodes[i[0]]["name"] for i in inputs[1:])
        for i in inputs[1:]:
            if nodes[i[0]]["op"] != "null":
                raise WeightsError(f"Convolution node {index} ({name[:60]}) takes its parameters "
                                   f"from op {nodes[i[0]]['op'][:40]!r}, not from a variable")
        self.kernel = _ints(attrs.get("kernel", ""), f"{name[:60]} kernel")
        self.stride = _ints(attrs.get("stride", "(1, 1)"), f"{name[:60]} stride")
        self.pad = _ints(attrs.get("pad", "(0, 0)"), f"{name[:60]} pad")
        filters = attrs.get("num_filter", "")
        if not (isinstance(filters, str) and filters.isdigit() and len(filters) < 10):
            raise WeightsError(f"{name[:60]}: num_filter {str(filters)[:20]!r} is not an integer")
        self.filters = int(filters)
        groups, dilate = attrs.get("num_group", "1"), attrs.get("dilate", "(1, 1)")
        if groups != "1" or _ints(dilate, f"{name[:60]} dilate") not in ((1, 1), (1,), ()):
            raise WeightsError(f"{name[:60]}: grouped or dilated convolution (num_group "
                               f"{groups[:9]}, dilate {dilate[:20]})")

    def problems(self, c: S.Conv) -> list[str]:
        want = {"kernel": (c.kernel,) * 2, "stride": (c.stride,) * 2, "pad": (c.padding,) * 2,
                "num_filter": c.out_channels}
        got = {"kernel": self.kernel, "stride": self.stride, "pad": self.pad,
               "num_filter": self.filters}
        return [f"{self.name[:60]} ({c.name}): {k} {got[k]}, expected {want[k]}"
                for k in want if got[k] != want[k]]


def parse_symbol(blob: bytes) -> tuple[list[dict], dict]:
    """The checked nodes (``op``, ``name``, ``attrs``, ``inputs``) and graph attrs."""
    try:
        top = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WeightsError(f"symbol file is not JSON: {type(e).__name__}: {e}"[:300]) from None
    if not isinstance(top, dict) or not isinstance(top.get("nodes"), list):
        raise WeightsError("symbol file has no 'nodes' list: not an MXNet symbol")
    raw = top["nodes"]
    if not 0 < len(raw) <= MAX_NODES:
        raise WeightsError(f"symbol file has {len(raw)} nodes, expected 1 to {MAX_NODES}")
    nodes = []
    for i, node in enumerate(raw):
        if not isinstance(node, dict) or not isinstance(node.get("op"), str) \
                or not isinstance(node.get("name"), str):
            raise WeightsError(f"node {i} lacks a string 'op' and 'name'")
        attrs = node.get("attrs", node.get("attr", node.get("param", {}))) or {}
        if not isinstance(attrs, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_ATTR
                for k, v in attrs.items()):
            raise WeightsError(f"node {i} ({node['name'][:60]}): attrs must map strings to strings")
        inputs = node.get("inputs", [])
        if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS or not all(
                isinstance(e, list) and 2 <= len(e) <= 3
                and all(type(v) is int for v in e) and 0 <= e[0] < i for e in inputs):
            raise WeightsError(f"node {i} ({node['name'][:60]}): inputs must be [node, output, "
                               "version] of earlier nodes")
        nodes.append({"op": node["op"], "name": node["name"], "attrs": attrs,
                      "inputs": inputs})
    attrs = top.get("attrs", {})
    return nodes, attrs if isinstance(attrs, dict) else {}


def _params_path(symbol_path: Path, params_path: Path, epoch: int | None) -> Path:
    if epoch is not None:
        if not 0 <= epoch <= 99_999_999:
            raise WeightsError(f"epoch {epoch} out of range")
        return params_path.with_name(f"{symbol_path.name[:-len(SYMBOL)]}-{epoch:04d}.params")
    if os.path.lexists(params_path):
        return params_path
    stem = symbol_path.name[:-len(SYMBOL)]
    try:
        names = os.listdir(symbol_path.parent)
    except OSError:
        names = []
    epochs = sorted(n for n in names if n.startswith(stem)
                    and _EPOCH_PARAMS.match(n[len(stem):]))[:10]
    hint = (f"; beside it: {', '.join(epochs)} (read one with epoch=N, --epoch N)"
            if epochs else "")
    raise WeightsError(f"params file {params_path.name} is missing{hint}")


def read(path, *, variant: Variant | None = None, epoch: int | None = None) -> Weights:
    """Canonical weights from an export pair (``path``: the symbol file, a prefix or the
    params file), checked against the spec by :func:`ports.formats.read`."""
    symbol_path, params_path = paths(path)
    blob = read_file(symbol_path, "symbol file", limit=MAX_SYMBOL, noun=PAIR)
    nodes, graph_attrs = parse_symbol(blob)
    meta = None
    if META_ATTR in graph_attrs:
        value = graph_attrs[META_ATTR]
        if not (isinstance(value, list) and len(value) == 2 and value[0] == "str"):
            raise WeightsError(f"graph attribute {META_ATTR} must be [\"str\", JSON text]")
        meta = canonical.string_meta(value[1], f"graph attribute {META_ATTR}")
    convs = [_Conv(i, n, nodes) for i, n in enumerate(nodes) if n["op"] == "Convolution"]
    adds = sum(n["op"] in ADD_OPS for n in nodes)
    params_path = _params_path(symbol_path, params_path, epoch)
    args = {}
    with about(params_path):  # its problems name the params file
        blob = read_file(params_path, f"params file {params_path.name}", noun=PAIR)
        for name, arr in decode_ndarrays(blob).items():
            if not name.startswith("arg:"):
                raise WeightsError(f"{name[:60]!r}: an export's parameters are named "
                                   "'arg:NAME' (SqueezeNet has no 'aux:' states)")
            if arr.dtype.kind != "f":
                raise WeightsError(f"{name[:60]}: dtype {arr.dtype.name}, expected a floating "
                                   "type")
            args[name[4:]] = arr
    if len(convs) < 2:
        raise WeightsError(f"the graph has {len(convs)} Convolution nodes: not a SqueezeNet")
    first, last = (args.get(c.weight) for c in (convs[0], convs[-1]))
    padding = convs[-1].pad[0] if convs[-1].pad and len(set(convs[-1].pad)) == 1 else -1
    if padding not in (0, 1):
        raise WeightsError(f"conv10 ({convs[-1].name[:60]}) pad {convs[-1].pad}, expected (0, 0) "
                           "or (1, 1)")
    bypass = "none" if not adds else \
        "complex" if len(convs) == len(list(Variant(bypass="complex").convs())) else "simple"
    v = canonical.infer_variant(
        getattr(first, "shape", None), getattr(last, "shape", None),
        names=(repr("arg:" + convs[0].weight), repr("arg:" + convs[-1].weight)),
        bypass=bypass, final_conv_padding=padding)
    spec_convs = list(v.convs())
    problems = [] if len(convs) == len(spec_convs) else [
        f"{len(convs)} Convolution nodes, SqueezeNet {v.id} has {len(spec_convs)}"]
    want_adds = sum(f.bypass is not None for f in v.layers() if isinstance(f, S.Fire))
    if adds != want_adds:
        problems.append(f"{adds} additions (bypasses), SqueezeNet {v.id} has {want_adds}")
    if not problems:
        problems = [p for c, s in zip(convs, spec_convs) for p in c.problems(s)]
    if problems:
        raise WeightsError("the graph is not SqueezeNet's: " + "; ".join(problems[:20]))
    table = {f"{s.name}.{p}": getattr(c, p) for c, s in zip(convs, spec_convs)
             for p in ("weight", "bias")}
    names = key_problems(["arg:" + a for a in args], ["arg:" + n for n in table.values()],
                         noun=("parameter", "parameters"))
    if names:
        raise WeightsError("does not match the symbol file's variables: " + "; ".join(names),
                           path=params_path)
    if meta is not None and canonical.has_architecture(meta):
        named = canonical.meta_variant(meta, what=f"graph attribute {META_ATTR}")
        if named != v:
            raise WeightsError(f"graph attribute {META_ATTR} names SqueezeNet {named.id}, the "
                               f"graph is {v.id}")
    meta = {**(meta or {}), **v.to_meta()}
    meta.setdefault("preprocessing", "torchvision")
    meta.setdefault("source", f"mxnet export {symbol_path.name}")
    return Weights({k: np.array(args[n], dtype=np.float32) for k, n in table.items()}, meta)

