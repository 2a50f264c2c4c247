"""MXNet export pair codec (``PREFIX-symbol.json`` + ``PREFIX-0000.params``), framework-free.

MXNet itself running our pair (``SymbolBlock.imports``), the byte-for-byte comparison with
what ``HybridBlock.export`` writes, and pairs exported by real MXNet (our port and the Gluon
model zoo's) are tested in ``conformance/test_mxnet.py`` in the ``mxnet`` environment.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from ports import formats
from ports.cli import run
from ports.cli.convert import main as convert_main
from ports.errors import WeightsError
from ports.formats import mxnet as params_codec
from ports.formats import mxnet_export as codec
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

SMALL = Variant("1_1", 10)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    """A pair of seeded 1_0-p1-complex-c10 weights; the symbol file's path."""
    path = tmp_path_factory.mktemp("mxnet-export") / "m-symbol.json"
    codec.write(seeded_weights(Variant("1_0", 10, 1, "complex")), path)
    return path


def copy_of(symbol: Path, directory: Path, stem: str = "m") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    params = symbol.with_name(symbol.name.replace("-symbol.json", "-0000.params"))
    (directory / f"{stem}-symbol.json").write_bytes(symbol.read_bytes())
    (directory / f"{stem}-0000.params").write_bytes(params.read_bytes())
    return directory / f"{stem}-symbol.json"


def refuse(path, match: str | None = None, **kw) -> WeightsError:
    with pytest.raises(WeightsError, match=match) as info:
        formats.read(path, "mxnet-export", **kw)
    return info.value


def edit_symbol(symbol: Path, change) -> None:
    graph = json.loads(symbol.read_text())
    change(graph)
    symbol.write_text(json.dumps(graph))


def conv_node(graph: dict, i: int) -> dict:
    return [n for n in graph["nodes"] if n["op"] == "Convolution"][i]


# --- round trips and the registry -------------------------------------------------------------
@pytest.mark.parametrize("variant", all_variants() + [SMALL], ids=lambda v: v.id)
def test_round_trip_bit_exact(tmp_path, variant):
    w = seeded_weights(variant)
    written = formats.write(w, tmp_path / "m-symbol.json")
    assert written == [tmp_path / "m-symbol.json", tmp_path / "m-0000.params"]
    back = formats.read(tmp_path / "m-symbol.json")
    assert back.meta == w.meta
    assert all(back[k].tobytes() == w[k].tobytes() for k in w.tensors)


def test_registry_endings_prefixes_and_outputs(tmp_path):
    fmt = formats.FORMATS["mxnet-export"]
    pair = [tmp_path / "m-symbol.json", tmp_path / "m-0000.params"]
    assert formats.detect(tmp_path / "m-symbol.json") == "mxnet-export"
    assert formats.detect(tmp_path / "m-0000.params") == "mxnet"  # the params alone
    for name in ("m", "m-symbol.json", "m-0000.params", "m-SYMBOL.JSON"):
        assert fmt.outputs(tmp_path / name) == pair, name
    w = seeded_weights(SMALL)
    assert formats.write(w, tmp_path / "m", "mxnet-export") == pair  # a prefix, as export()
    for path in (tmp_path / "m", tmp_path / "m-0000.params"):
        assert formats.read(path, "mxnet-export").variant == SMALL
    assert formats.outputs(tmp_path / "w.caffemodel") == [tmp_path / "w.caffemodel",
                                                          tmp_path / "w.prototxt"]


def test_the_symbol_is_the_graph_gluon_exports(pair):
    """Op names and attributes as MXNet 1.9.1 writes them (the conformance test compares
    every byte with MXNet's own export)."""
    text = pair.read_text()
    assert text.startswith('{\n  "nodes": [\n    {\n      "op": "null", \n      "name": '
                           '"data", \n      "inputs": []\n    }, \n')
    graph = json.loads(text)
    nodes = graph["nodes"]
    assert graph["heads"] == [[len(nodes) - 1, 0, 0]]
    assert graph["arg_nodes"] == [i for i, n in enumerate(nodes) if n["op"] == "null"]
    assert graph["attrs"]["mxnet_version"] == ["int", 10901]
    meta = json.loads(graph["attrs"]["squeezenet_metadata"][1])
    assert meta == seeded_weights(Variant("1_0", 10, 1, "complex")).meta
    ops = [n["op"] for n in nodes]
    assert ops.count("Convolution") == 30 and ops.count("elemwise_add") == 8
    assert ops.count("Concat") == 8 and ops.count("Dropout") == 1 and ops[-1] == "Flatten"
    first = conv_node(graph, 0)
    assert first["name"] == "squeezenet0_conv0_fwd" and first["attrs"] == {
        "dilate": "(1, 1)", "kernel": "(7, 7)", "layout": "NCHW", "no_bias": "False",
        "num_filter": "96", "num_group": "1", "pad": "(0, 0)", "stride": "(2, 2)"}
    assert conv_node(graph, -1)["attrs"]["pad"] == "(1, 1)"  # conv10, Caffe's padding
    pools = [n["attrs"] for n in nodes if n["op"] == "Pooling"]
    assert all(p["pooling_convention"] == "full" for p in pools)  # ceil mode
    assert pools[-1]["global_pool"] == "True" and pools[-1]["pool_type"] == "avg"
    weight = nodes[first["inputs"][1][0]]
    assert weight["name"] == "squeezenet0_conv0_weight"
    assert weight["attrs"]["__shape__"] == "(96, 3, 7, 7)"
    names = list(params_codec.decode_ndarrays(
        pair.with_name("m-0000.params").read_bytes()))
    assert names[:3] == ["arg:squeezenet0_conv0_weight", "arg:squeezenet0_conv0_bias",
                         "arg:squeezenet0_conv1_weight"]
    assert names == list(codec.param_names(Variant("1_0", 10, 1, "complex")).values())


@pytest.mark.parametrize("vid", ["1_0-p1-simple", "1_1-p1-none", "1_0-p0-complex"])
def test_without_our_metadata_the_graph_tells_the_whole_variant(tmp_path, vid):
    """What a .params file cannot say -- conv10's padding, a simple bypass -- the graph
    does; a real export carries no squeezenet_metadata."""
    v = Variant.from_id(vid)
    symbol = tmp_path / "m-symbol.json"
    formats.write(seeded_weights(v), symbol)
    edit_symbol(symbol, lambda g: g["attrs"].pop("squeezenet_metadata"))
    w = formats.read(symbol)
    assert w.variant == v
    assert w.meta["preprocessing"] == "torchvision"  # the Gluon zoo's
    assert w.meta["source"] == "mxnet export m-symbol.json"


def test_parameters_are_mapped_by_the_graph_not_by_their_names(tmp_path, pair):
    """Another prefix (``squeezenet7_``, a later instance) and reordered params."""
    symbol = copy_of(pair, tmp_path)
    symbol.write_text(symbol.read_text().replace("squeezenet0_", "squeezenet7_"))
    params = symbol.with_name("m-0000.params")
    arrays = params_codec.decode_ndarrays(params.read_bytes())
    renamed = {k.replace("squeezenet0_", "squeezenet7_"): v for k, v in arrays.items()}
    params.write_bytes(params_codec.encode_ndarrays(dict(reversed(renamed.items()))))
    w = formats.read(symbol)
    ref = formats.read(pair)
    assert all(np.array_equal(w[k], ref[k]) for k in ref.tensors)


def test_other_epochs(tmp_path, pair):
    symbol = copy_of(pair, tmp_path)
    os.rename(tmp_path / "m-0000.params", tmp_path / "m-0003.params")
    e = refuse(symbol, "m-0000.params is missing; beside it: m-0003.params")
    assert "--epoch" in e.reason
    assert formats.read(symbol, epoch=3).variant == Variant("1_0", 10, 1, "complex")
    refuse(symbol, "m-0001.params is missing", epoch=1)


def test_convert_cli_writes_a_pair_from_a_prefix(tmp_path, capsys):
    src = tmp_path / "w.safetensors"
    formats.write(seeded_weights(Variant("1_1", 10, 1, "simple")), src)
    out = tmp_path / "out" / "model"
    out.parent.mkdir()
    assert run(convert_main, [str(src), str(out), "--to", "mxnet-export"], prog="convert") == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["model-0000.params",
                                                            "model-symbol.json"]
    assert run(convert_main, [str(src), str(out), "--to", "mxnet-export"], prog="convert") == 2
    assert "model-symbol.json, " in capsys.readouterr().err  # both named, neither replaced
    assert run(convert_main, [str(out) + "-symbol.json", str(tmp_path / "b.safetensors")],
               prog="convert") == 0
    assert formats.read(tmp_path / "b.safetensors").variant == Variant("1_1", 10, 1, "simple")


def test_a_failed_write_leaves_no_half_pair(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, content, *, overwrite=True):
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        Path(path).write_bytes(content if isinstance(content, bytes) else b"")
        return Path(path)

    monkeypatch.setattr(codec, "atomic_write", failing_write)
    with pytest.raises(OSError):
        formats.write(seeded_weights(SMALL), tmp_path / "m-symbol.json")
    assert calls == ["m-0000.params", "m-symbol.json"]
    assert list(tmp_path.iterdir()) == []


# --- bad inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text,match", [
    ("", "symbol file is not JSON"),
    ("[1, 2]", "has no 'nodes' list"),
    ('{"nodes": []}', "0 nodes"),
    ('{"nodes": [{"op": 1, "name": "x"}]}', "lacks a string 'op' and 'name'"),
    ('{"nodes": [{"op": "null", "name": "x", "inputs": [[0, 0, 0]]}]}', "of earlier nodes"),
    ('{"nodes": [{"op": "null", "name": "x", "attrs": {"a": 1}}]}', "map strings to strings"),
    ('{"nodes": [{"op": "null", "name": "data", "inputs": []}]}', "0 Convolution nodes"),
])
def test_bad_symbol_files(tmp_path, pair, text, match):
    symbol = copy_of(pair, tmp_path)
    symbol.write_text(text)
    refuse(symbol, match)


@pytest.mark.parametrize("attr,value,match", [
    ("kernel", "(5, 5)", r"squeezenet0_conv1_fwd \(fire2.squeeze\): kernel \(5, 5\), "
                         r"expected \(1, 1\)"),
    ("num_filter", "17", "num_filter 17, expected 16"),
    ("stride", "(2, 2)", r"stride \(2, 2\), expected \(1, 1\)"),
    ("num_group", "2", "grouped or dilated"),
    ("no_bias", "True", "has no bias"),
    ("kernel", "(1, x)", "is not a tuple of integers"),
])
def test_a_graph_that_is_not_squeezenets_is_refused(tmp_path, pair, attr, value, match):
    symbol = copy_of(pair, tmp_path)
    edit_symbol(symbol, lambda g: conv_node(g, 1)["attrs"].__setitem__(attr, value))
    refuse(symbol, match)


def test_bypass_and_padding_must_be_squeezenets(tmp_path, pair):
    symbol = copy_of(pair, tmp_path)
    edit_symbol(symbol, lambda g: conv_node(g, -1)["attrs"].__setitem__("pad", "(2, 2)"))
    refuse(symbol, r"conv10 .* pad \(2, 2\), expected")
    symbol = copy_of(pair, tmp_path / "b")

    def one_less_add(g):
        add = next(n for n in g["nodes"] if n["op"] == "elemwise_add")
        add["op"] = "broadcast_mul"
    edit_symbol(symbol, one_less_add)
    refuse(symbol, "7 additions .*, SqueezeNet 1_0-p1-complex-c10 has 8")


def test_metadata_contradicting_the_graph_is_refused(tmp_path, pair):
    symbol = copy_of(pair, tmp_path)

    def lie(g):
        meta = json.loads(g["attrs"]["squeezenet_metadata"][1])
        g["attrs"]["squeezenet_metadata"][1] = json.dumps({**meta, "bypass": "simple"})
    edit_symbol(symbol, lie)
    refuse(symbol, "names SqueezeNet 1_0-p1-simple-c10, the graph is 1_0-p1-complex-c10")
    edit_symbol(symbol, lambda g: g["attrs"].__setitem__("squeezenet_metadata", ["int", 3]))
    refuse(symbol, 'must be \\["str", JSON text\\]')


def test_params_that_do_not_match_the_graph(tmp_path, pair):
    symbol = copy_of(pair, tmp_path)
    params = symbol.with_name("m-0000.params")
    arrays = params_codec.decode_ndarrays(params.read_bytes())
    good = dict(arrays)
    arrays.pop("arg:squeezenet0_conv3_bias")
    arrays["arg:extra"] = np.zeros(3, np.float32)
    params.write_bytes(params_codec.encode_ndarrays(arrays))
    e = refuse(symbol, "does not match the symbol file's variables")
    assert "missing parameter: arg:squeezenet0_conv3_bias" in e.reason
    assert "unexpected parameter: arg:extra" in e.reason
    assert e.path.endswith("m-0000.params")
    arrays = dict(good)
    arrays["aux:running_mean"] = np.zeros(3, np.float32)
    params.write_bytes(params_codec.encode_ndarrays(arrays))
    refuse(symbol, "no 'aux:' states")
    arrays = dict(good)
    arrays["arg:squeezenet0_conv0_bias"] = arrays["arg:squeezenet0_conv0_bias"].astype(np.int32)
    params.write_bytes(params_codec.encode_ndarrays(arrays))
    refuse(symbol, "dtype int32, expected a floating type")
    arrays = dict(good)
    arrays["arg:squeezenet0_conv5_weight"] = arrays["arg:squeezenet0_conv5_weight"][:, :7]
    params.write_bytes(params_codec.encode_ndarrays(arrays))
    refuse(symbol, r"fire3.squeeze.weight: expected shape \[16, 128, 1, 1\], got \[16, 7, 1, 1\]")


def test_hostile_files_are_refused_without_reading_them(tmp_path, pair):
    symbol = copy_of(pair, tmp_path)
    with open(symbol, "r+b") as f:
        f.truncate(codec.MAX_SYMBOL + 1)  # sparse
    refuse(symbol, "more than the .* allowed")
    symbol = copy_of(pair, tmp_path / "f")
    os.remove(symbol.with_name("m-0000.params"))
    os.mkfifo(symbol.with_name("m-0000.params"))  # opening it would block
    refuse(symbol, "is not a regular file")
    symbol.with_name("m-0000.params").unlink()
    refuse(symbol, "m-0000.params is missing")
    deep = copy_of(pair, tmp_path / "d")
    deep.write_text('{"nodes": ' + "[" * 100000 + "]" * 100000 + "}")
    refuse(deep, "RecursionError")


def test_real_mxnet_symbol_text_round_trips(pair):
    """Our symbol, without the metadata attribute, is what export() writes; parsing it with
    the reader's own parser gives the nodes back."""
    text = codec.symbol(Variant("1_0", 10, 1, "complex")).decode()
    nodes, attrs = codec.parse_symbol(text.encode())
    assert attrs == {"mxnet_version": ["int", 10901]}
    assert re.search(r'\n  "attrs": \{"mxnet_version": \["int", 10901\]\}\n\}$', text)
    assert len(nodes) == len(json.loads(pair.read_text())["nodes"])
