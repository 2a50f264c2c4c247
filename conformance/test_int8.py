"""int8 post-training static quantization of the real Deep Compression v1.0 weights, in ONNX
Runtime (``quantize_static``, QDQ) and LiteRT (ai-edge-quantizer, full integer), judged by
:mod:`conformance.quantized` with the ``[int8]`` bounds of ``tolerances.toml``; and each
check shown to fail on a planted defect.  ``tox -e int8``; the shared folder is needed
(``SQUEEZENET_SHARED``; skipped without it unless ``SQUEEZENET_REQUIRE_SHARED=1``).

Small on purpose (about 20 s): calibration on the centre views of 3 photos, the report on
chelsea and coffee (true classes 285 and 967), the layers on coffee.  ``tools/int8`` is the
full measurement.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance import int8_images as images
from conformance import quantized as Q
from conformance.fixtures import DC_NET, shared_or_skip
from conformance.harness import tolerances_table

ENGINES = ("onnxruntime", "litert")
# the interpreter that keeps every tensor (the layer trace) warns that it is for debugging
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:ai_edge_litert.interpreter")


@pytest.fixture(scope="module")
def weights():
    from ports.formats import read

    return read(shared_or_skip(DC_NET))


@pytest.fixture(scope="module")
def data(weights):
    from ports import numpy as ref

    calibration, _ = images.inputs(images.QUICK_CALIBRATION, images.QUICK_VIEWS)
    x, labels = images.inputs(images.QUICK_REPORT, images.QUICK_VIEWS)
    reference = ref.predict(ref.load(weights, "float64"), x.astype(np.float64))
    return calibration, x, labels, reference


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, weights, data, tmp_path_factory):
    """(name, int8 logits on the report views, QuantizedRun on coffee, float32 activations
    of the same runtime on coffee)."""
    calibration, x, _, _ = data
    out = tmp_path_factory.mktemp(request.param)
    from ports.formats import write

    if request.param == "onnxruntime":
        from conformance.engines import int8_onnxruntime as int8
        from conformance.engines import onnxruntime as f32

        write(weights, out / "f.onnx")
        int8.quantize(out / "f.onnx", out / "q.onnx", list(calibration[:, None]))
        model = int8.load(out / "q.onnx", weights.variant)
    else:
        from conformance.engines import int8_litert as int8
        from conformance.engines import litert as f32

        write(weights, out / "f.tflite")
        int8.quantize((out / "f.tflite").read_bytes(), out / "q.tflite",
                      list(calibration[:, None]))
        model = int8.load(out / "q.tflite", weights.variant)
    coffee = x[1:2]
    return (request.param, int8.predict(model, x), int8.int8_run(model, coffee),
            f32.activations(f32.load(weights), coffee))


def bounds() -> dict:
    return tolerances_table()["int8"]


def report(weights, data, engine) -> dict:
    _, logits, run, floats = engine
    names = weights.variant.activation_names()
    return {"agreement": Q.agreement(data[3], logits),
            "float": Q.against_float(run, floats, names),
            "local": Q.local(weights.variant, run, names)}


def planted(run: Q.QuantizedRun, name: str, change) -> Q.QuantizedRun:
    """A copy of ``run`` whose activation ``name`` has had ``change`` applied to its
    dequantized values (codes written back, no rounding)."""
    scale, zp = run.params[name]
    codes = dict(run.codes)
    codes[name] = change(run.dequantized(name)) / scale + zp
    return Q.QuantizedRun(codes, run.params, run.convs, run.qrange)


# --- the real quantization ------------------------------------------------------------------
def test_quantized_model_passes_the_verdict(weights, data, engine):
    problems = Q.verdict(report(weights, data, engine), bounds())
    assert not problems, f"{engine[0]} int8: " + "; ".join(problems)


def test_true_classes_kept(data, engine):
    """chelsea and coffee keep the classes real Caffe gives them (285, 967)."""
    _, _, labels, _ = data
    _, logits, _, _ = engine
    want = [images.TRUE_CLASS[label.split("#")[0]] for label in labels]
    assert list(logits.argmax(axis=1)) == want, f"{engine[0]} int8 top-1 vs {labels}"


def test_every_layer_is_its_inputs_requantized(weights, engine):
    """Each int8 layer equals the layer recomputed in float64 from its own int8 inputs and
    weights, within one step: the runtime's own int8 arithmetic checked (not only the end)."""
    _, _, run, _ = engine
    names = weights.variant.activation_names()
    local = Q.local(weights.variant, run, names)
    worst = max(local.values(), key=lambda m: m["max_codes"])
    assert worst["max_codes"] <= Q.step_bound(), local


# --- planted defects ------------------------------------------------------------------------
def test_one_percent_in_a_layer_is_flagged_beyond_a_step(weights, engine):
    """1 % added to one layer's dequantized activation (all of it scaled by 1.01): in every
    layer where that is more than the bound plus one more step at the layer's largest value
    (so that no 1-step rounding of the runtime could hide it; on coffee about half the
    layers: elsewhere the largest value is under 200 steps from the zero point and 1 % of it
    is rounding), the layer check names exactly that layer first (the layers after it,
    which read it, are not recomputed: they do not matter to "first").  In a few layers
    through the network, the largest element moved by the bound plus one step is flagged
    too."""
    _, _, run, _ = engine
    names = weights.variant.activation_names()
    limit = Q.step_bound()
    honest = [n for n in names
              if np.abs(run.dequantized(n)).max() * 0.01 / run.params[n][0] > limit + 1]
    assert honest, "1 % is within a step everywhere: no honest plant"
    for name in honest:
        bad = planted(run, name, lambda d: d * 1.01)
        local = Q.local(weights.variant, bad, names, upto=name)
        flagged = [n for n in local if local[n]["max_codes"] > limit]
        assert flagged == [name], (name, flagged)
    for name in (names[0], "fire4.expand3x3", "fire9", "conv10", "logits"):
        moved = (limit + 1) * run.params[name][0]
        bad = planted(run, name, lambda d, moved=moved: d + np.where(d == d.max(), moved, 0))
        local = Q.local(weights.variant, bad, names, upto=name)
        flagged = [n for n in local if local[n]["max_codes"] > limit]
        assert flagged == [name], (name, flagged)


def test_nan_anywhere_fails(weights, data, engine):
    _, logits, run, floats = engine
    names = weights.variant.activation_names()
    for name in ("input", names[0], names[len(names) // 2], "logits"):
        bad = planted(run, name, lambda d: np.where(np.arange(d.size).reshape(d.shape) == 7,
                                                     np.nan, d))
        rep = {"agreement": Q.agreement(data[3], logits),
               "float": Q.against_float(bad, floats, names),
               "local": Q.local(weights.variant, bad, names)}
        problems = Q.verdict(rep, bounds())
        assert any("non-finite" in p for p in problems), (name, problems)
    nan_float = dict(floats, **{"fire5": np.full_like(floats["fire5"], np.nan)})
    rep = {"agreement": Q.agreement(data[3], logits),
           "float": Q.against_float(run, nan_float, names),
           "local": Q.local(weights.variant, run, names)}
    assert any(p.startswith("fire5: ") for p in Q.verdict(rep, bounds()))
    nan_logits = logits.copy()
    nan_logits[0, 3] = np.nan
    rep["float"] = Q.against_float(run, floats, names)
    agree = Q.agreement(data[3], nan_logits)
    assert agree["nonfinite"] == 1 and agree["top1"] <= 0.5
    assert any("non-finite logit" in p for p in Q.verdict(dict(rep, agreement=agree),
                                                          bounds()))


def test_a_wrong_top1_counts_against_agreement(weights, data, engine):
    _, logits, run, floats = engine
    reference = data[3]
    good = Q.agreement(reference, logits)
    wrong = logits.copy()
    other = (int(reference[0].argmax()) + 1) % wrong.shape[1]
    wrong[0, other] = wrong[0].max() + 1.0
    bad = Q.agreement(reference, wrong)
    assert bad["top1"] == pytest.approx(good["top1"] - 1 / len(logits))
    assert bad["per_image"][0][1] == other
    assert bounds()["min_top1"] > 1 - 1 / len(logits), "the bound must notice one image"
    names = weights.variant.activation_names()
    rep = {"agreement": bad, "float": Q.against_float(run, floats, names),
           "local": Q.local(weights.variant, run, names)}
    assert any("top-1 agreement" in p for p in Q.verdict(rep, bounds()))


def test_a_calibration_photo_in_the_report_is_refused():
    images.check_disjoint(images.CALIBRATION, images.REPORT)
    images.check_disjoint(images.QUICK_CALIBRATION, images.QUICK_REPORT)
    assert {"skimage:chelsea", "skimage:coffee"} <= set(images.REPORT)
    reused = images.REPORT + (images.CALIBRATION[2],)
    with pytest.raises(ValueError, match="hubble_deep_field"):
        images.check_disjoint(images.CALIBRATION, reused)
