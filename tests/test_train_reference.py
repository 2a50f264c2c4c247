"""The float64 NumPy backward and Caffe's SGD step: against central finite differences on
every variant, against the stored training goldens, and the solver rule itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conformance import golden, training
from ports import numpy as ref
from ports.numpy import train
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

VARIANTS = [v.id for v in all_variants(10)]


@pytest.mark.parametrize("vid", VARIANTS)
def test_backward_agrees_with_central_finite_differences(vid):
    """One entry of every parameter tensor (a different one per variant), perturbed by
    +-1e-7 in float64 (small enough that no ReLU or max-pool choice flips on this input):
    the analytic gradient agrees with (L(w + e) - L(w - e)) / 2e to 1e-7 absolute + 1e-5
    relative.  Two 27x27 images: every
    layer, pool and bypass is exercised (v1.0's smallest input is 21)."""
    rng = np.random.default_rng(VARIANTS.index(vid))
    model = ref.load(seeded_weights(Variant.from_id(vid)))
    x = rng.standard_normal((2, 3, 27, 27))
    labels = np.array([1, 7])
    _, grads = train.loss_and_grads(model, x, labels)
    eps = 1e-7
    checked = 0
    for name, param in model.params.items():
        flat = param.reshape(-1)
        for i in rng.choice(flat.size, size=1):
            base = flat[i]
            flat[i] = base + eps
            up, _ = train.softmax_cross_entropy(ref.forward(model, x), labels)
            flat[i] = base - eps
            down, _ = train.softmax_cross_entropy(ref.forward(model, x), labels)
            flat[i] = base
            numeric, analytic = (up - down) / (2 * eps), grads[name].reshape(-1)[i]
            assert abs(numeric - analytic) <= 1e-7 + 1e-5 * abs(analytic), (name, i)
            checked += 1
    assert checked == len(model.params)


def test_a_wrong_backward_rule_fails_the_finite_difference_check():
    """The check can fail: a gradient off by a factor of two (a typical slip, e.g. averaging
    the two halves of a concatenation's gradient) is caught at the largest entry."""
    model = ref.load(seeded_weights(Variant.from_id("1_1-p0-none-c10")))
    x = np.random.default_rng(0).standard_normal((2, 3, 33, 33))
    labels = np.array([1, 7])
    _, grads = train.loss_and_grads(model, x, labels)
    name = "fire2.expand1x1.weight"
    w = model.params[name]
    wrong = grads[name] * 0.5  # a typical slip: averaging the two halves' gradients
    i = int(np.argmax(np.abs(grads[name])))
    base = w.reshape(-1)[i]
    w.reshape(-1)[i] = base + 1e-7
    up, _ = train.softmax_cross_entropy(ref.forward(model, x), labels)
    w.reshape(-1)[i] = base - 1e-7
    down, _ = train.softmax_cross_entropy(ref.forward(model, x), labels)
    numeric = (up - down) / 2e-7
    assert abs(numeric - wrong.reshape(-1)[i]) > 1e-7 + 1e-5 * abs(numeric)


def test_train_steps_follow_caffes_solver_rule():
    """Two steps with different rates, against the rule written out on the gradients the
    reference reports: v = m v + lr (g + wd w), w = w - v."""
    weights = seeded_weights(Variant.from_id("1_1-p0-none-c10"))
    x = np.random.default_rng(1).standard_normal((2, 3, 33, 33))
    labels = np.array([3, 4])
    model = ref.load(weights)
    losses, end = train.train_steps(model, x, labels, [0.01, 0.005], 0.9, 2e-4)
    expect = ref.load(weights)
    v = {k: np.zeros_like(p) for k, p in expect.params.items()}
    for lr in (0.01, 0.005):
        _, g = train.loss_and_grads(expect, x, labels)
        for k in expect.params:
            v[k] = 0.9 * v[k] + lr * (g[k] + 2e-4 * expect.params[k])
            expect.params[k] = expect.params[k] - v[k]
    for k in end:
        np.testing.assert_allclose(end[k], expect.params[k], rtol=0, atol=1e-15)
    assert len(losses) == 2 and losses[1] < losses[0]


@pytest.mark.parametrize("vid", golden.VARIANTS)
def test_the_reference_reproduces_the_stored_training_goldens(vid):
    stored = np.load(golden.train_path(vid))
    now = training.golden_summary(vid)
    assert set(stored.files) == set(now)
    for key in now:
        np.testing.assert_allclose(now[key], stored[key], rtol=1e-10, atol=1e-15,
                                   err_msg=f"{vid} {key}")


def test_poly_schedule_changes_every_step():
    lrs = training.poly_lrs()
    assert len(lrs) == training.STEPS and lrs[0] == training.BASE_LR
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(training.BASE_LR * (1 - 4 / 10) ** 0.5)


def test_reference_dropout_keeps_scaled_values_and_drops_about_half():
    model = ref.load(seeded_weights(Variant.from_id("1_1-p0-none-c10")))
    x = np.random.default_rng(2).uniform(1, 2, (4, 512, 14, 14))
    y = train.dropout(model, x, training=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.5, rtol=1e-15)
    n, p = x.size, 0.5
    assert abs((~kept).sum() - n * p) <= 5 * np.sqrt(n * p * (1 - p))
    assert np.array_equal(train.dropout(model, x, training=False), x)


# Kinks: float32 decisions that may tip (ports/numpy/kinks.py).
KINK_VID = "1_0-p1-complex"


def _tipped(vid: str, kind: str = "relu"):
    """The reference gradients with the first fragile decision of ``vid`` (of ``kind``)
    that changes them flipped, as a float32 port whose rounding tipped it would compute
    them, and that decision.  (Most fragile decisions change nothing: a conv1 element that
    no pool window picks gets no gradient on either side.)"""
    from ports.numpy import kinks

    model = ref.load(seeded_weights(Variant.from_id(vid)))
    x, labels = training.batch()
    tape = train._Tape(model)
    _, dlogits = train.softmax_cross_entropy(tape.run(x.astype(np.float64)), labels)
    decisions = kinks.fragile(tape, training.tolerance("float32")["kink"])
    base = tape.backward(dlogits)
    for d in decisions:
        if (d.other == -1) == (kind == "relu"):
            grads = tape.backward(dlogits, d.flip)
            if any(not np.array_equal(grads[k], base[k]) for k in base):
                return tape, dlogits, d, grads
    raise AssertionError(f"{vid}: no fragile {kind} decision changes the gradient")


def test_a_flipped_relu_decision_moves_only_its_own_element():
    """Flipping one ReLU decision changes the bias gradient of the conv it follows by that
    element's incoming gradient, in its own channel only, and no gradient of a later
    layer."""
    tape, dlogits, d, flipped = _tipped(KINK_VID)
    base = tape.backward(dlogits)
    names = list(Variant.from_id(KINK_VID).params())
    moved = [k for k in names if not np.array_equal(base[k], flipped[k])]
    assert f"{d.site}.bias" in moved
    later = names[names.index(f"{d.site}.bias") + 1:]
    assert not set(moved) & set(later), moved
    db = flipped[f"{d.site}.bias"] - base[f"{d.site}.bias"]
    assert np.count_nonzero(db) == 1 and db[d.index[1]] != 0


def test_a_tipped_decision_passes_only_with_the_slack_and_a_real_bug_still_fails():
    """A float32 gradient on the other side of a fragile decision: relative error ~1e-2
    without the slack (a failure at 1e-4), within rounding with it.  A gradient off by 1e-3
    of its largest entry where no fragile decision reaches still fails, as does the flip of a
    decision that float32 cannot tip (margin ~ the layer's scale)."""
    r = training.reference(KINK_VID)
    _, _, d, flipped = _tipped(KINK_VID)
    as_f32 = {k: v.astype(np.float32) for k, v in flipped.items()}
    raw = max(training.relative_errors(as_f32, r["grad"]).values())
    kept = max(training.relative_errors(as_f32, r["grad"], r["slack-grad"]).values())
    assert raw > 1e-3 and kept < 1e-6, (raw, kept)
    record = training.compare_grad(np.float32(r["loss"]), as_f32, KINK_VID, "float32")
    assert record["ok"] and record["raw_rel"] == raw and json.loads(json.dumps(record))
    steps = training.compare_steps(np.float32(r["losses"]), r["end"], KINK_VID, "float32")
    assert steps["ok"] and json.loads(json.dumps(steps))  # the records are plain JSON

    bug = dict(as_f32)
    name = "conv10.weight"
    free = np.flatnonzero(r["slack-grad"][name] == 0)
    assert free.size > 0.9 * r["slack-grad"][name].size  # the slack touches few entries
    bug[name] = bug[name].copy()
    bug[name].reshape(-1)[free[0]] += np.float32(1e-3 * np.abs(r["grad"][name]).max())
    assert max(training.relative_errors(bug, r["grad"], r["slack-grad"]).values()) > 5e-4

    model = ref.load(seeded_weights(Variant.from_id(KINK_VID)))
    x, labels = training.batch()
    tape = train._Tape(model)
    _, dlogits = train.softmax_cross_entropy(tape.run(x.astype(np.float64)), labels)
    site = "conv1"
    z = next(s for kind, layer, s in tape.steps if kind == "relu" and layer.of == site)
    firm = tuple(int(i) for i in np.unravel_index(np.argmax(z), z.shape))
    from ports.numpy.kinks import Decision

    wrong = tape.backward(dlogits, Decision(site, firm).flip)
    assert max(training.relative_errors(wrong, r["grad"], r["slack-grad"]).values()) > 1e-4


def test_every_case_has_few_fragile_decisions():
    """The slack stays narrow: a handful of the ~3e5 decisions per pass (at most 100 for
    the gradient, 500 over five steps)."""
    for vid in ("1_0-p0-none", "1_1-p1-complex"):
        n_grad, n_end = training.reference(vid)["fragile"]
        assert 0 < n_grad <= 100 and n_grad <= n_end <= 500, (vid, n_grad, n_end)
