"""bfloat16 as a case dtype (issue 31): the rounding, the emulated honest evaluation the
bounds come from, the bound relative to the largest logit, and planted defects run through
``conformance.collect`` as a port would be: a port that computes in float32 when asked for
bfloat16, one that accumulates the global mean in bfloat16, a 10 % error in conv10's
weights (1 % is below what bfloat16 can resolve: the float cases catch it), and a NaN.

The port under test here is this module (``load``/``predict`` of the port protocol over the
emulation of :mod:`conformance.bf16`), registered for the test only; ``DEFECT`` plants one.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conformance import bf16, collect, golden, harness, matrix
from conformance.registry import PORTS, Port
from ports import _api
from ports.seeded import seeded_weights
from ports.spec import Variant

DTYPES = ("float32",)
REDUCED = ("bfloat16",)
DEFECT = None  # None, "float32", "bf16 global mean", "conv10 x1.1", "nan"


def load(source, dtype="float32", **_):
    assert _api.dtype_name(dtype, REDUCED) == "bfloat16"
    return _api.weights(source)


def predict(weights, x, batch_size=_api.BATCH_SIZE):
    if DEFECT == "float32":  # ignores the dtype: float32 arithmetic throughout
        from ports import numpy as ref

        return ref.predict(ref.load(weights, "float32"), x).astype(np.float32)
    if DEFECT == "conv10 x1.1":
        tensors = dict(weights.tensors, **{"conv10.weight": weights["conv10.weight"] * 1.1})
        weights = type(weights)(tensors, weights.meta)
    acts = bf16.activations(weights, x)
    logits = acts["logits"]
    if DEFECT == "bf16 global mean":  # sums conv10's map in bfloat16, cell after cell
        conv10 = acts["conv10"].reshape(*acts["conv10"].shape[:2], -1)
        total = np.zeros(conv10.shape[:2])
        for cell in range(conv10.shape[2]):
            total = bf16.round_to_bfloat16(total + conv10[:, :, cell])
        logits = bf16.round_to_bfloat16(total / conv10.shape[2])
    if DEFECT == "nan":
        logits = logits.copy()
        logits[3, 17] = np.nan
    return logits.astype(np.float32)


@pytest.fixture
def port(monkeypatch):
    name = "bf16-emulated"
    monkeypatch.setitem(PORTS, name, Port(name, __name__, None, DTYPES, reduced=REDUCED))
    collect._module.cache_clear()
    collect._model.cache_clear()
    yield name
    collect._module.cache_clear()
    collect._model.cache_clear()


def test_rounding_to_nearest_even():
    one_ulp = 2.0 ** -7  # bfloat16's spacing in [1, 2)
    x = np.array([1.0, 1 + one_ulp / 2, 1 + 1.5 * one_ulp, 1 + one_ulp / 2 + 2 ** -20, -3.0,
                  np.inf, np.nan, 1e-40])
    got = bf16.round_to_bfloat16(x)
    np.testing.assert_array_equal(got[:6], [1.0, 1.0, 1 + 2 * one_ulp, 1 + one_ulp, -3.0, np.inf])
    assert np.isnan(got[6])
    assert bf16.U == 2.0 ** -8
    values = np.random.default_rng(0).normal(size=10_000) * 100
    rel = np.abs(bf16.round_to_bfloat16(values) - values) / np.abs(values)
    assert rel.max() <= bf16.U * (1 + 1e-6) and rel.max() > 0.9 * bf16.U


def test_the_bound_is_relative_to_the_largest_logit():
    expected = golden.load("1_1-p0-none", 227)
    atol, rtol = harness.tolerance("torch", "bfloat16", expected=expected)
    assert rtol == 0 and atol == pytest.approx(8 * bf16.U * np.abs(expected).max())
    with pytest.raises(ValueError, match="pass expected"):
        harness.tolerance("torch", "bfloat16")
    with pytest.raises(ValueError, match="not finite"):
        harness.tolerance("torch", "bfloat16", expected=np.array([1.0, np.nan]))


def test_only_bfloat16_values_are_bfloat16_logits():
    honest = bf16.round_to_bfloat16(np.linspace(-3, 30, 97)).astype(np.float32)
    collect.check_bfloat16("p", honest)
    wide = honest.copy()
    wide[5] = np.nextafter(wide[5], np.float32(100))  # one float32 ulp off a bfloat16
    with pytest.raises(RuntimeError, match="1 of 97 are not bfloat16 values"):
        collect.check_bfloat16("p", wide)


def test_reduced_cases_are_inference_only():
    cases = collect.cases("torch")
    reduced = [c for c in cases if c.dtype == "bfloat16"]
    assert {c.kind for c in reduced} == {"golden", "fixture"}
    assert len([c for c in reduced if c.kind == "golden"]) == len(golden.VARIANTS)
    assert not [c for c in collect.cases("mxnet") if c.dtype == "bfloat16"]
    with pytest.raises(ValueError, match="not computed by this port"):
        _api.dtype_name("bfloat16", ())


@pytest.mark.parametrize("vid", ["1_0-p1-none", "1_1-p0-simple"])
def test_the_honest_emulation_is_within_the_bound(port, vid):
    rec, logits = collect.compute(port, collect.Case("golden", vid, 227, "bfloat16"))
    assert rec["error"] is None and rec["ok"], rec
    assert 0 < rec["max_abs"] < 0.5 * rec["atol"]  # measured: at most 0.24 of it
    assert rec["top1_agree"] == 8


@pytest.mark.parametrize("defect, message", [
    ("float32", "not bfloat16 values"),
    ("bf16 global mean", None),
    ("conv10 x1.1", None),
    ("nan", None),
])
def test_planted_defects_fail(port, monkeypatch, defect, message):
    monkeypatch.setattr(sys.modules[__name__], "DEFECT", defect)
    recs = [collect.compute(port, collect.Case("golden", "1_1-p1-none", 227, "bfloat16"))[0]]
    if message:
        assert all(message in (r["error"] or "") for r in recs), recs
        return
    assert all(r["error"] is None for r in recs), recs
    assert not any(r["ok"] for r in recs), [collect.describe(r) for r in recs]
    assert all(r["max_abs"] > r["atol"] or r["nonfinite"] for r in recs)
    lines = matrix._reduced(recs)
    assert lines and "0/1" in lines[-1]


def test_an_accumulating_port_errs_beyond_the_honest_one(port, monkeypatch):
    """The bf16-accumulated global mean is worse than the honest evaluation on every case
    it is tried on (what the margin of the bound is for)."""
    w = seeded_weights(Variant.from_id("1_1-p1-none"))
    x = collect.inputs(227)
    expected = golden.load("1_1-p1-none", 227)
    honest = bf16.logit_error(predict(w, x), expected)
    monkeypatch.setattr(sys.modules[__name__], "DEFECT", "bf16 global mean")
    assert bf16.logit_error(predict(w, x), expected) > 2 * honest


@pytest.fixture(scope="module")
def traced():
    """(float64 reference activations, honest bfloat16 ones) of 1_0-p1-complex at 227, two
    images: every pool overhangs, both bypasses."""
    from ports import numpy as ref

    weights = seeded_weights(Variant.from_id("1_0-p1-complex"))
    x = collect.inputs(227, count=2)
    return weights, x, ref.activations(ref.load(weights), x), bf16.activations(weights, x)


def test_the_bfloat16_trace_threshold_passes_the_honest_evaluation(traced):
    from conformance import trace

    assert trace.threshold("bfloat16") == pytest.approx(16 * 2.0 ** -8)
    _, _, reference, honest = traced
    r = trace.compare(reference, honest, "bfloat16")
    assert r["first_divergent"] is None
    worst = max(v["max_rel"] for v in r["layers"].values())
    assert 0 < worst < trace.threshold("bfloat16") / 3  # measured 4.2 u at most: 16 u


@pytest.mark.parametrize("layer", ["conv1", "fire5.expand3x3", "fire6.bypass", "conv10"])
def test_a_bfloat16_layer_off_by_more_than_its_threshold_is_named(traced, layer):
    from conformance import trace

    weights, x, reference, _ = traced
    error = 1.25 * trace.threshold("bfloat16")
    acts = bf16.activations(weights, x, lambda name, a: a * (1 + error) if name == layer else a)
    assert trace.compare(reference, acts, "bfloat16")["first_divergent"] == layer
