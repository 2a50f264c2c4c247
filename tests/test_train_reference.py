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
    """Two entries of every parameter tensor whose gradient is not zero (a different
    draw per variant, among the entries at least 1e-3 of the tensor's largest), perturbed by
    +-1e-7 in float64 (small enough that no ReLU or max-pool choice flips on this input):
    the analytic gradient agrees with (L(w + e) - L(w - e)) / 2e to 1e-7 absolute + 1e-5
    relative.  Two 27x27 images: every layer, pool and bypass is exercised (v1.0's smallest
    input is 21)."""
    rng = np.random.default_rng(VARIANTS.index(vid))
    model = ref.load(seeded_weights(Variant.from_id(vid)))
    x = rng.standard_normal((2, 3, 27, 27))
    labels = np.array([1, 7])
    _, grads = train.loss_and_grads(model, x, labels)
    eps = 1e-7
    checked = 0
    for name, param in model.params.items():
        flat, g = param.reshape(-1), grads[name].reshape(-1)
        alive = np.flatnonzero(np.abs(g) >= 1e-3 * np.abs(g).max())
        for i in rng.choice(alive, size=min(2, alive.size), replace=False):
            base = flat[i]
            flat[i] = base + eps
            up, _ = train.softmax_cross_entropy(ref.forward(model, x), labels)
            flat[i] = base - eps
            down, _ = train.softmax_cross_entropy(ref.forward(model, x), labels)
            flat[i] = base
            numeric, analytic = (up - down) / (2 * eps), g[i]
            assert analytic != 0 and abs(numeric - analytic) <= 1e-7 + 1e-5 * abs(analytic), \
                (name, i, numeric, analytic)
            checked += 1
    assert checked == 2 * len(model.params)


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
    steps = train.train_steps(model, x, labels, [0.01, 0.005], 0.9, 2e-4)
    expect = ref.load(weights)
    v = {k: np.zeros_like(p) for k, p in expect.params.items()}
    for step, lr in zip(steps, (0.01, 0.005)):
        _, g = train.loss_and_grads(expect, x, labels)
        for k in expect.params:
            v[k] = 0.9 * v[k] + lr * (g[k] + 2e-4 * expect.params[k])
            expect.params[k] = expect.params[k] - v[k]
            np.testing.assert_allclose(step.grad[k], g[k], rtol=0, atol=1e-15)
            np.testing.assert_allclose(step.velocity[k], v[k], rtol=0, atol=1e-15)
            np.testing.assert_allclose(step.weights[k], expect.params[k], rtol=0, atol=1e-15)
    assert len(steps) == 2 and steps[1].loss < steps[0].loss


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


# Decisions: the gradient of the linear piece a float32 port chose (training.decided).
TIPPED_VID = "1_0-p1-complex"


def tipped(vid: str = TIPPED_VID):
    """A training pass on the other side of a kink, made deterministic (whether float32
    tips one depends on the machine's BLAS and its threads): the first ReLU decision within
    1e-5 of its kink whose flip moves the gradient by more than 1e-3 of some tensor.
    Returns (weights, x, labels, that decision, the loss and float32 gradient of the other
    side, the reference's activations, which do not show the flip, and activations that
    do)."""
    weights, x, labels = training.case_data(vid)
    model = ref.load(weights)
    acts = ref.activations(model, x)
    _, base = training.decided(weights, weights.tensors, x, labels, None)
    for kink in train.kinks(model, x, 1e-5):
        if kink.pair:
            continue
        loss, other = training.decided(weights, weights.tensors, x, labels, None, [kink])
        if max(training.relative_errors(other, base).values()) > 1e-3:
            shown = dict(acts)
            shown[kink.site] = acts[kink.site].copy()
            shown[kink.site][kink.index] = 0.0 if acts[kink.site][kink.index] > 0 else 1e-30
            return (weights, x, labels, kink, loss,
                    {k: g.astype(np.float32) for k, g in other.items()}, acts, shown)
    raise AssertionError(f"{vid}: no decision near its kink moves the gradient")


def test_the_references_own_decisions_give_its_own_gradient_exactly():
    weights, x, labels = training.case_data("1_1-p0-complex")
    model = ref.load(weights)
    loss, grads = train.loss_and_grads(model, x, labels)
    decided = training.decided(weights, weights.tensors, x, labels,
                               ref.activations(model, x))
    assert decided[0] == loss
    assert all(np.array_equal(decided[1][k], grads[k]) for k in grads)


def test_a_port_on_the_other_side_of_a_kink_is_compared_on_its_own_side():
    """A gradient of the other side of a decision near its kink: against the reference's
    own decisions it is more than 1e-3 off (a correct gradient of the other piece), through
    the port's activations showing that decision it is within float32 rounding, and the
    record passes with nothing left to find."""
    weights, x, labels, kink, loss, grads, acts, shown = tipped()
    _, own = training.decided(weights, weights.tensors, x, labels, None)
    _, through = training.decided(weights, weights.tensors, x, labels, shown)
    raw = max(training.relative_errors(grads, own).values())
    kept = max(training.relative_errors(grads, through).values())
    assert raw > 1e-3 and kept < 1e-6, (raw, kept)
    record = training.compare_grad(weights, x, labels, loss, grads, shown, "float32",
                                   training.tolerance("float32"))
    assert record["ok"] and record["tipped"] == [], record
    assert json.loads(json.dumps(record))  # the record is plain JSON


def test_decisions_that_no_forward_pass_took_fail():
    """Activations that also claim a decision far from any kink (conv1's largest ReLU output
    reported as zero) do not explain that gradient: the record fails."""
    weights, x, labels, kink, loss, grads, acts, shown = tipped()
    wrong = dict(shown)
    wrong["conv1"] = shown["conv1"].copy()
    wrong["conv1"].reshape(-1)[np.argmax(shown["conv1"])] = 0
    assert not training.compare_grad(weights, x, labels, loss, grads, wrong, "float32",
                                     training.tolerance("float32"))["ok"]


def test_decisions_of_refuses_activations_of_another_shape():
    weights, x, labels = training.case_data("1_1-p0-none")
    acts = ref.activations(ref.load(weights), x[:2])
    with pytest.raises(ValueError, match="activations of"):
        training.decided(weights, weights.tensors, x, labels, acts)


# --- distillation: the soft-target loss the compressed network is fine-tuned with --------------

def test_distillation_is_the_kl_divergence_and_its_gradient_is_exact():
    """The loss is ``T**2`` times the mean KL divergence of the tempered softmaxes, written
    out independently here; it is 0 when the logits differ from the teacher's by a constant
    per image; its gradient agrees with central finite differences at T = 1 and T = 4."""
    rng = np.random.default_rng(0)
    logits, teacher = rng.normal(0, 3, (3, 7)), rng.normal(0, 3, (3, 7))
    for t in (1.0, 4.0):
        p = np.exp(teacher / t) / np.exp(teacher / t).sum(1, keepdims=True)
        q = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
        loss, grad = train.distillation(logits, teacher, t)
        assert loss == pytest.approx(t * t * np.mean(np.sum(p * np.log(p / q), 1)), rel=1e-12)
        eps = 1e-6
        for i in np.ndindex(logits.shape):
            up, down = logits.copy(), logits.copy()
            up[i] += eps
            down[i] -= eps
            numeric = (train.distillation(up, teacher, t)[0]
                       - train.distillation(down, teacher, t)[0]) / (2 * eps)
            assert abs(numeric - grad[i]) <= 1e-8, (t, i, numeric, grad[i])
    shifted = teacher + np.array([[1.0], [-2.0], [30.0]])
    assert train.distillation(shifted, teacher)[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="teacher logits"):
        train.distillation(logits, teacher[:2])
    with pytest.raises(ValueError, match="temperature"):
        train.distillation(logits, teacher, 0.0)


def test_a_distillation_gradient_without_its_temperature_factor_fails_the_check():
    """The finite-difference check above can fail: dropping the factor ``T`` (a common slip
    when tempering a softmax) is caught at T = 4."""
    rng = np.random.default_rng(1)
    logits, teacher = rng.normal(0, 3, (2, 5)), rng.normal(0, 3, (2, 5))
    _, grad = train.distillation(logits, teacher, 4.0)
    wrong = grad / 4.0
    up, down = logits.copy(), logits.copy()
    up[0, 0] += 1e-6
    down[0, 0] -= 1e-6
    numeric = (train.distillation(up, teacher, 4.0)[0]
               - train.distillation(down, teacher, 4.0)[0]) / 2e-6
    assert abs(numeric - grad[0, 0]) <= 1e-8 < abs(numeric - wrong[0, 0])


def test_distill_loss_and_grads_back_propagates_the_distillation_gradient():
    """Every parameter's distillation gradient agrees with central finite differences of
    the distillation loss of the reference's forward pass (one entry per tensor)."""
    rng = np.random.default_rng(2)
    model = ref.load(seeded_weights(Variant.from_id("1_0-p1-complex-c10")))
    x = rng.standard_normal((2, 3, 27, 27))
    teacher = rng.normal(0, 1, (2, 10))
    _, grads = train.distill_loss_and_grads(model, x, teacher, 2.0)
    for name, param in model.params.items():
        flat, g = param.reshape(-1), grads[name].reshape(-1)
        i = int(np.argmax(np.abs(g)))
        base = flat[i]
        flat[i] = base + 1e-7
        up, _ = train.distillation(ref.forward(model, x), teacher, 2.0)
        flat[i] = base - 1e-7
        down, _ = train.distillation(ref.forward(model, x), teacher, 2.0)
        flat[i] = base
        numeric = (up - down) / 2e-7
        assert g[i] != 0 and abs(numeric - g[i]) <= 1e-7 + 1e-5 * abs(g[i]), (name, numeric, g[i])
