"""The int8 judge, :mod:`conformance.quantized`, without any runtime: a simulated int8
network (seeded weights quantized per channel, every activation quantized per tensor from
the float64 reference's range) recomputes to itself exactly, and each check fails on its
planted defect.  The real quantizers are tested in ``conformance/test_int8.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance import quantized as Q
from ports import numpy as ref
from ports.seeded import seeded_weights
from ports.spec import Variant

SIZE = 64


def simulated(vid: str) -> tuple[Variant, Q.QuantizedRun, dict]:
    """An int8 run built layer by layer with :func:`Q.recompute` itself: weights quantized
    symmetric per output channel, activations asymmetric per tensor over the float64
    reference's range; returns (variant, run, float64 activations)."""
    variant = Variant.from_id(vid)
    weights = seeded_weights(variant)
    x = np.random.default_rng(0).normal(0, 50, (1, 3, SIZE, SIZE))
    floats = ref.activations(ref.load(weights, "float64"), x)
    convs = {}
    for c in variant.convs():
        w = weights.tensors[f"{c.name}.weight"].astype(np.float64)
        s = np.abs(w).reshape(len(w), -1).max(axis=1) / 127
        convs[c.name] = (np.rint(w / s[:, None, None, None]) * s[:, None, None, None],
                         weights.tensors[f"{c.name}.bias"].astype(np.float64))

    def params(a):
        lo, hi = min(float(a.min()), 0.0), max(float(a.max()), 0.0)
        scale = (hi - lo) / 255 or 1.0
        return scale, int(round(-128 - lo / scale))

    run = Q.QuantizedRun({"input": Q.quantize(x, *params(x))}, {"input": params(x)}, convs)
    for name in variant.activation_names():
        run.params[name] = params(floats[name])
        run.codes[name] = Q.recompute(variant, run, upto=name)[name]
    return variant, run, floats


@pytest.fixture(scope="module", params=["1_1-p0-none", "1_0-p1-complex"])
def sim(request):
    return simulated(request.param)


def test_quantize_rounds_half_to_even_and_clips():
    codes = Q.quantize(np.array([0.5, 1.5, 2.5, -1000.0, 1000.0, np.nan]), 1.0, 0)
    assert codes[:5].tolist() == [0.0, 2.0, 2.0, -128.0, 127.0] and math.isnan(codes[5])


def test_a_simulated_network_recomputes_to_itself(sim):
    variant, run, floats = sim
    names = variant.activation_names()
    local = Q.local(variant, run, names)
    assert all(m["max_codes"] == 0 for m in local.values()), local
    near = Q.against_float(run, floats, names)
    assert all(m["cosine"] > 0.9 and m["snr_db"] > 5 for m in near.values()), near


def test_one_code_passes_two_codes_fail(sim):
    """A runtime may round the other way (one code); two codes is a defect."""
    variant, run, _ = sim
    names = variant.activation_names()
    for name in (names[0], names[len(names) // 2], "logits"):
        for moved, flagged in ((1, False), (2, True)):
            codes = dict(run.codes)
            codes[name] = run.codes[name].copy()
            codes[name].flat[0] += moved if codes[name].flat[0] < 0 else -moved
            local = Q.local(variant, Q.QuantizedRun(codes, run.params, run.convs), names,
                            upto=name)
            assert (local[name]["max_codes"] > Q.step_bound()) == flagged, (name, moved)


def test_a_wrong_scale_fails_against_float(sim):
    variant, run, floats = sim
    names = variant.activation_names()
    params = dict(run.params)
    scale, zp = params[names[3]]
    params[names[3]] = (scale * 2, zp)
    bad = Q.against_float(Q.QuantizedRun(run.codes, params, run.convs), floats, names)
    bounds = {"min_top1": 0.0, "min_top5": 0.0, "min_cosine": 0.0, "min_snr_db": 8.0}
    rep = {"agreement": Q.agreement(floats["logits"], floats["logits"]), "float": bad,
           "local": {}}
    assert any(p.startswith(f"{names[3]}: SNR") for p in Q.verdict(rep, bounds))


def test_nan_fails_everywhere(sim):
    variant, run, floats = sim
    names = variant.activation_names()
    codes = dict(run.codes)
    codes[names[1]] = run.codes[names[1]].copy()
    codes[names[1]].flat[5] = np.nan
    bad = Q.QuantizedRun(codes, run.params, run.convs)
    bounds = {"min_top1": 0.0, "min_top5": 0.0, "min_cosine": 0.0, "min_snr_db": -1e9}
    logits = floats["logits"].copy()
    logits[0, 0] = np.nan
    rep = {"agreement": Q.agreement(floats["logits"], logits),
           "float": Q.against_float(bad, floats, names), "local": Q.local(variant, bad, names)}
    problems = Q.verdict(rep, bounds)
    assert any(p.startswith("logits: 1 image(s) with a non-finite logit") for p in problems)
    assert any(p.startswith(f"{names[1]}: 1 non-finite value(s) against") for p in problems)
    assert any(p.startswith(f"{names[2]}:") and "non-finite" in p for p in problems)


def test_agreement_counts_top1_and_top5():
    reference = np.array([[0.0, 1, 2, 3, 4, 5, 6], [6.0, 5, 4, 3, 2, 1, 0]])
    same = Q.agreement(reference, reference)
    assert (same["top1"], same["top5"], same["max_abs"]) == (1.0, 1.0, 0.0)
    wrong = reference.copy()
    wrong[1, 6] = 10.0  # image 1: class 6 wins, and enters the top 5 in place of class 4
    a = Q.agreement(reference, wrong)
    assert a["top1"] == 0.5 and a["top5"] == pytest.approx(0.9)
    assert a["per_image"] == [(6, 6), (0, 6)] and a["max_rel"] == pytest.approx(10 / 6)
    with pytest.raises(ValueError, match="expected"):
        Q.agreement(reference, reference[:1])
