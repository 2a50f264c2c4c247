"""The layer trace: its metrics, the first divergent layer for real porting mistakes, the
matrix naming it for a disagreeing case, and ``tools/trace`` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import buggy_numpy
import numpy as np
import pytest

from conformance import collect, trace
from conformance.inputs import inputs
from conformance.registry import PORTS, Port
from ports import formats
from ports import numpy as ref
from ports.seeded import seeded_weights
from ports.spec import Variant

ROOT = Path(__file__).resolve().parent.parent


def test_metrics_of_known_arrays():
    r = np.array([[3.0, -4.0]])
    m = trace.layer_metrics(r, r)
    assert m == {"max_abs": 0.0, "max_rel": 0.0, "cosine": 1.0, "snr_db": float("inf")}
    m = trace.layer_metrics(r, np.array([[3.0, -3.0]]))
    assert m["max_abs"] == 1.0 and m["max_rel"] == 0.25
    assert m["cosine"] == pytest.approx(21 / (5 * np.sqrt(18)))
    assert m["snr_db"] == pytest.approx(10 * np.log10(25 / 1))
    assert trace.layer_metrics(r, np.zeros((1, 3)))["shape"] == "[1, 3], expected [1, 2]"


def test_threshold_is_derived_from_the_dtype():
    assert trace.threshold("float32") == pytest.approx(4096 * 2.0 ** -24)
    assert trace.threshold("float64") == pytest.approx(4096 * 2.0 ** -53)


def _trace_bug(bug: str, vid: str, size: int) -> str | None:
    weights = seeded_weights(Variant.from_id(vid))
    x = inputs(size, count=2).astype(np.float64)
    mod = buggy_numpy.module(bug)
    reference = ref.activations(ref.load(weights), x)
    return trace.compare(reference, mod.activations(mod.load(weights), x),
                         "float64")["first_divergent"]


@pytest.mark.parametrize("vid,size", [("1_0-p0-none", 224), ("1_1-p1-simple", 227),
                                      ("1_1-p0-none", 225)])
def test_floor_mode_pooling_is_named_at_the_first_pool_it_changes(vid, size):
    expected = buggy_numpy.first_pool_that_floors(Variant.from_id(vid), size)
    assert expected == {224: "pool4", 227: "pool3", 225: "pool1"}[size]
    assert _trace_bug("floor pooling", vid, size) == expected


def test_concatenation_order_is_named_at_its_fire():
    assert _trace_bug("expand3x3 first", "1_1-p0-none", 224) == "fire7"


def test_a_relu_after_the_bypass_sum_is_named_at_its_fire():
    assert _trace_bug("relu after the bypass", "1_0-p1-complex", 227) == "fire4"


def test_an_honest_port_shows_no_divergent_layer_in_float32():
    weights = seeded_weights(Variant.from_id("1_0-p1-complex"))
    x = inputs(227, count=2)
    reference = ref.activations(ref.load(weights), x)
    r = trace.compare(reference, ref.activations(ref.load(weights, "float32"), x), "float32")
    assert r["first_divergent"] is None
    assert max(m["max_rel"] for m in r["layers"].values()) < trace.threshold("float32") / 30


def test_the_matrix_names_the_first_divergent_layer_of_a_disagreeing_case(monkeypatch):
    """A port whose fire7 concatenates in the wrong order: its golden case disagrees, and
    the record (and the matrix's report) says fire7."""
    import types

    from conformance import matrix

    mod = buggy_numpy.module("expand3x3 first")
    holder = types.ModuleType("buggy_port_for_test")
    holder.__dict__.update(vars(mod))
    monkeypatch.setitem(sys.modules, "buggy_port_for_test", holder)
    monkeypatch.setitem(PORTS, "buggy", Port("buggy", "buggy_port_for_test", "core",
                                             ("float64",)))
    rec, _ = collect.compute("buggy", collect.Case("golden", "1_1-p0-none", 224, "float64"))
    assert not rec["ok"] and rec["first_divergent"] == "fire7"
    assert "first divergent layer: fire7" in matrix.table([rec])


def _tool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "trace"), *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_tools_trace_numpy_json_and_plot(tmp_path):
    out = _tool("--weights", "seeded:1_1-p0-complex", "--ports", "numpy", "--size", "64",
                "--json", str(tmp_path / "t.json"), "--plot", str(tmp_path / "t.png"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "first divergent layer none" in out.stdout
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["layers"] == Variant.from_id("1_1-p0-complex").activation_names()
    numpy_port = doc["ports"]["numpy"]
    assert numpy_port["first_divergent"] is None
    assert set(numpy_port["layers"]["fire2.bypass"]) >= {"max_abs", "max_rel", "cosine",
                                                          "snr_db"}
    assert (tmp_path / "t.png").stat().st_size > 10_000


def test_tools_trace_against_names_the_layer_of_the_changed_tensor(tmp_path):
    weights = seeded_weights(Variant.from_id("1_0-p1-none"))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    formats.write(weights, a)
    tensors = dict(weights.tensors)
    tensors["fire6.expand1x1.weight"] = tensors["fire6.expand1x1.weight"] * 1.01
    formats.write(type(weights)(tensors, dict(weights.meta)), b)
    out = _tool("--weights", str(a), "--against", str(b), "--size", "64",
                "--json", str(tmp_path / "t.json"))
    assert out.returncode == 1, out.stdout + out.stderr  # they differ
    assert "first divergent layer fire6.expand1x1" in out.stdout
    same = _tool("--weights", str(a), "--against", str(a), "--size", "64")
    assert same.returncode == 0 and "first divergent layer none" in same.stdout


@pytest.mark.parametrize("args,message", [
    (["--weights", "/nonexistent.safetensors"], "no such file"),
    (["--weights", "seeded:1_1-p0-none", "--ports", "tensorflow"], "--ports: unknown"),
    (["--weights", "seeded:1_1-p0-none", "--size", "8", "--ports", "numpy"],
     "too small for SqueezeNet 1_1"),
])
def test_tools_trace_bad_arguments_get_one_line_and_status_2(args, message):
    out = _tool(*args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert out.stderr.startswith("trace: error: ") and out.stderr.count("\n") == 1
