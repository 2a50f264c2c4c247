"""The conformance test suite every port's test module instantiates.

    class TestTorch(PortSuite):
        port = "torch"

Each golden case (variant x input size x dtype) and each real-weights fixture is one test.
A case whose result was recorded by this very code in this very environment (same key, see
:mod:`conformance.results`; e.g. by the main job just before) is asserted from that record
instead of being computed again; every other case is computed and recorded at the end of
the session, for the matrix to gather: the same :class:`conformance.collect.Recorder` that
``python -m conformance.collect`` runs, one per port, held by the session fixture
``recorders`` (``conformance/conftest.py``).
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import pytest

from . import collect, harness
from .fixtures import SharedDataMissing, skip_missing


class PortSuite:
    port: str = ""

    def test_case(self, case: collect.Case, recorders: dict) -> None:
        if self.port not in recorders:
            recorders[self.port] = collect.Recorder(self.port)
        try:
            r = recorders[self.port].result(case)
        except SharedDataMissing as e:  # required, and absent
            skip_missing(e)
        if r.get("skipped"):  # recorded as not run: the shared ground truth is absent
            skip_missing(SharedDataMissing(r["skipped"]))
        what = f"Logits of {self.port} {case.dtype} on {case.name}" + \
            (f" at {case.size}" if case.size else "")
        assert not r.get("error"), f"{what}: {r['error']}"
        if case.kind in collect.TRAINING_KINDS:
            what = {"grad": "Gradients", "steps": "5 SGD steps"}[case.kind]
            assert r["ok"], (f"{what} of {self.port} {case.dtype} on {case.name}: "
                             f"{collect.describe(r)}")
            return
        assert r["ok"], (f"{what} disagree (atol={r['atol']:g}, rtol={r['rtol']:g}):\n"
                         f"{collect.report(r)}")
        if case.kind == "fixture":
            assert r.get("top1_ok", True), f"{what}: wrong top-1; top-5 {r['top5']}"
            assert r.get("top3_ok", True), f"{what}: wrong top-3; top-5 {r['top5']}"


# --- the layer trace ------------------------------------------------------------------------
TRACE_CASES = [("1_0-p1-complex", 227), ("1_1-p0-simple", 224), ("1_1-p1-none", 227)]
# A port's second path (its plain reference beside the tuned one, Gluon not hybridized)
# against the golden or the first path: both versions, both conv10 paddings, every bypass
# kind, complex at 227 (every pool pads there).  The matrix runs every golden case on the
# path ``load`` gives.
PATH_CASES = [("1_1-p0-complex", 227), ("1_0-p1-complex", 227), ("1_1-p1-simple", 224),
              ("1_0-p0-none", 224)]

def _mistake(weights, bug: str):
    """(weights, input transform, expected first divergent layer) of a porting mistake that
    lives in the weights or the input (``TraceSuite.test_porting_mistakes_are_named``)."""
    from ports.formats.canonical import Weights
    from ports.spec import Variant

    tensors = {k: v.copy() for k, v in weights.tensors.items()}
    keep, meta = (lambda x: x), dict(weights.meta)
    if bug == "flipped 3x3 kernel":      # correlation vs convolution, one layer
        tensors["fire5.expand3x3.weight"] = tensors["fire5.expand3x3.weight"][:, :, ::-1, ::-1]
        where = "fire5.expand3x3"
    elif bug == "kernel h and w swapped":  # OIHW -> HWIO written as a wrong transpose
        tensors["fire6.expand3x3.weight"] = tensors["fire6.expand3x3.weight"].transpose(
            0, 1, 3, 2)
        where = "fire6.expand3x3"
    elif bug == "bias dropped":
        tensors["fire4.squeeze.bias"] = np.zeros_like(tensors["fire4.squeeze.bias"])
        where = "fire4.squeeze"
    elif bug == "conv10 padding 0 for 1":
        v = weights.variant
        meta.update(Variant(v.version, v.num_classes, 0, v.bypass).to_meta())
        where = "conv10"
    elif bug == "RGB fed where BGR is expected":
        keep, where = (lambda x: x[:, ::-1].copy()), "conv1"
    else:  # pragma: no cover
        raise KeyError(bug)
    return Weights({k: np.ascontiguousarray(v) for k, v in tensors.items()}, meta), keep, where


MISTAKES = ("flipped 3x3 kernel", "kernel h and w swapped", "bias dropped",
            "conv10 padding 0 for 1", "RGB fed where BGR is expected")



@lru_cache(maxsize=len(TRACE_CASES))
def _trace_case(vid: str, size: int):
    """(seeded weights, 2 inputs [2,3,size,size], the float64 reference's activations) of a
    trace case, computed once per session (the tests read them; ports get copies of the
    input, ``x.astype``, or read it)."""
    from ports import numpy as ref
    from ports.seeded import seeded_weights
    from ports.spec import Variant

    from .inputs import inputs

    weights = seeded_weights(Variant.from_id(vid))
    x = inputs(size, count=2)
    acts = ref.activations(ref.load(weights), x)
    for array in acts.values():  # what every port is compared with
        array.flags.writeable = False
    return weights, x, acts


class TraceSuite:
    """``activations`` of a port (or engine): the spec's names in order, each agreeing with
    the float64 NumPy reference within the trace threshold of its dtype, on both paths, and
    ``predict`` unchanged by the call.

        class TestTorchTrace(TraceSuite):
            port = "torch"
    """

    port: str = ""
    paths = ("fast", "reference")  # a port with one path lists it once

    @pytest.fixture(params=[f"{v}@{s}" for v, s in TRACE_CASES])
    def case(self, request):
        vid, size = request.param.split("@")
        return _trace_case(vid, int(size))

    def test_activations_agree_with_the_reference(self, case, trace_path, trace_dtype):
        """(``trace_path`` and ``trace_dtype`` range over ``paths`` and the port's dtypes:
        conformance/conftest.py.)"""
        from .registry import PORTS
        from .trace import compare

        path, dtype = trace_path, trace_dtype
        weights, x, reference = case
        mod = PORTS[self.port].import_module()
        model = mod.load(weights, dtype, fast=(path == "fast"))
        x = collect.feed(x, dtype)
        before = np.asarray(mod.predict(model, x))
        acts = mod.activations(model, x)
        assert list(acts) == weights.variant.activation_names()
        for name, a in acts.items():
            assert isinstance(a, np.ndarray) and a.shape == reference[name].shape, name
            bad = int((~np.isfinite(a)).sum())
            assert not bad, f"{self.port} {dtype} {path}: {bad} of {a.size} values of " \
                            f"activation {name} are not finite"
        r = compare(reference, acts, dtype)
        worst = harness.worst({k: v["max_rel"] for k, v in r["layers"].items()})
        assert r["first_divergent"] is None, (
            f"{self.port} {dtype} {path}: first divergent layer {r['first_divergent']} "
            f"{r['layers'][r['first_divergent']]} (threshold {r['threshold']:.1e})")
        assert np.array_equal(np.asarray(mod.predict(model, x)), before)
        np.testing.assert_array_equal(acts["logits"], acts["pool10"])
        assert worst[1] <= r["threshold"], worst

    def test_a_subset_of_layers_in_network_order(self, case):
        from .registry import PORTS

        weights, x, _ = case
        mod = PORTS[self.port].import_module()
        model = mod.load(weights, "float32")
        acts = mod.activations(model, x, ["logits", "pool1"] if "pool1" in
                               weights.variant.activation_names() else ["logits", "conv1"])
        assert list(acts) == [n for n in weights.variant.activation_names() if n in acts]
        with pytest.raises(ValueError, match="not activations of SqueezeNet"):
            mod.activations(model, x, ["fire1"])

    @pytest.mark.parametrize("bug", MISTAKES)
    def test_porting_mistakes_are_named(self, bug):
        """A mistake made in the weights or the input, traced through this port: the first
        divergent layer is exactly the layer the mistake enters (1_0-p1-complex at 227)."""
        from .registry import PORTS
        from .trace import compare

        weights, x, reference = _trace_case("1_0-p1-complex", 227)
        wrong, feed, where = _mistake(weights, bug)
        mod = PORTS[self.port].import_module()
        dtype = PORTS[self.port].dtypes[0]
        acts = mod.activations(mod.load(wrong, dtype), feed(x).astype(dtype))
        assert compare(reference, acts, dtype)["first_divergent"] == where


class DropoutSuite:
    """The port's own dropout layer (``dropout(model, x, training)``, at the spec's rate):
    in training every kept value is its input divided by ``1 - p`` (Caffe's train-time
    scaling) within rounding and the fraction dropped over a large tensor is within a
    binomial bound of ``p``; at inference it is the identity.

        class TestTorchDropout(DropoutSuite):
            port = "torch"
    """

    port: str = ""

    def _model_and_x(self, dtype: str):
        from ports.seeded import seeded_weights
        from ports.spec import Variant

        from .registry import PORTS

        mod = PORTS[self.port].import_module()
        model = mod.load(seeded_weights(Variant.from_id("1_1-p0-none")), dtype)
        x = np.random.default_rng(7).uniform(0.5, 2.0, (8, 512, 13, 13)).astype(dtype)
        return mod, model, x

    def test_train_mode_scales_what_it_keeps_and_drops_p(self):
        from ports.spec import DROPOUT

        from .registry import PORTS

        for dtype in PORTS[self.port].dtypes:
            mod, model, x = self._model_and_x(dtype)
            y = np.asarray(mod.dropout(model, x, training=True))
            assert y.shape == x.shape
            kept = y != 0
            eps = np.finfo(np.dtype(dtype)).eps
            np.testing.assert_allclose(y[kept], x[kept] / (1 - DROPOUT), rtol=4 * eps, atol=0)
            n, p = x.size, DROPOUT
            dropped = int((~kept).sum())
            bound = 6 * np.sqrt(n * p * (1 - p))  # a 6-sigma binomial bound
            assert abs(dropped - n * p) <= bound, (dtype, dropped, n * p, bound)

    def test_inference_is_the_identity(self):
        from .registry import PORTS

        for dtype in PORTS[self.port].dtypes:
            mod, model, x = self._model_and_x(dtype)
            assert np.array_equal(np.asarray(mod.dropout(model, x, training=False)), x)


@cache
def _own_steps(mod, vid: str, port: str | None) -> dict:
    from . import training

    return training.steps_case(mod, vid, "float32", port)


def mistaken_steps_fail(mod, vid: str, run, label: str, port: str | None = None) -> None:
    """Issue 27's optimizer-convention check, for a port test module: ``run`` (a mistaken
    ``train_steps``, with its signature) on the float32 ``steps`` case ``vid`` is more than
    10x outside the float32 optimizer bound of Caffe's rule on its own numbers, while the
    port's own ``train_steps`` on the same case passes."""
    from . import training

    r = training.steps_case(mod, vid, "float32", port, run=run)
    own = _own_steps(mod, vid, port)
    bound = training.tolerance("float32", port=port)["optimizer"]
    print(f"{label}: optimizer_rel {r['optimizer_rel']:.3g} in {r['worst_update']} "
          f"(the port's own: {own['optimizer_rel']:.3g})")
    assert not r["ok"] and r["optimizer_rel"] > 10 * bound, (label, r)
    assert own["ok"], own


SPEC_SIZE = 41  # a floor-mode pool1 would differ from Caffe's ceil mode here, in both versions


def assert_network_is_spec(variant, params: dict, shapes: dict) -> None:
    """A port's network against :mod:`ports.spec` (issue 28): ``params`` ``{canonical name:
    shape}`` (through the port's name table) are ``variant.params()``; ``shapes`` ``{name:
    shape}`` of its activations on a ``SPEC_SIZE`` input are the spec's names in the spec's
    order, each map of the spec's size (ceil-mode pools, conv10's padding)."""
    assert params == variant.params()
    assert list(shapes) == variant.activation_names()
    sizes = variant.feature_sizes(SPEC_SIZE)
    for name, shape in shapes.items():
        if name in sizes and len(shape) == 4:
            assert tuple(shape[2:]) == (sizes[name],) * 2, (name, shape, sizes[name])


def assert_loads_bit_exact(expected: dict, *loaded) -> None:
    """Each of ``loaded`` (canonical :class:`~ports.formats.canonical.Weights`) holds exactly the
    tensors of ``expected``, bit for bit (a frozen file of ``conformance.frozen``)."""
    for got in loaded:
        assert set(got.tensors) == set(expected)
        for name, value in expected.items():
            assert np.array_equal(got[name], value), name
