"""The float64 NumPy backward and Caffe's SGD step: against central finite differences on
every variant, against the stored training goldens, and the solver rule itself."""

from __future__ import annotations

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
