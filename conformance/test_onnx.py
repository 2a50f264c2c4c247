"""ONNX export and ONNX Runtime: goldens on every variant, plus codec checks that need ORT."""

import onnx
import onnxruntime  # noqa: F401  (the onnx environment runs this module)
import pytest

from conformance import golden
from conformance.engines import onnxruntime as ortengine
from conformance.harness import assert_agrees, tolerance
from conformance.inputs import inputs
from conformance.suite import PortSuite, TraceSuite
from ports.formats import onnx as onnx_format
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

VARIANTS = [v.id for v in all_variants()]


class TestOnnxruntime(PortSuite):
    port = "onnxruntime"


@pytest.mark.parametrize("vid", VARIANTS)
def test_export_passes_the_checker_and_names_everything(vid):
    w = seeded_weights(Variant.from_id(vid))
    model = onnx.load_from_string(onnx_format.encode(w))
    onnx.checker.check_model(model, full_check=True)
    g = model.graph
    assert [i.name for i in g.input] == ["input"] and [o.name for o in g.output] == ["logits"]
    dims = g.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]
    assert [i.name for i in g.initializer] == list(w.variant.params())
    pools = [n for n in g.node if n.op_type == "MaxPool"]
    assert pools and all(a.i == 1 for n in pools for a in n.attribute if a.name == "ceil_mode")
    conv10 = [n for n in g.node if n.op_type == "Conv"][-1]
    pads = next(list(a.ints) for a in conv10.attribute if a.name == "pads")
    assert pads == [w.variant.final_conv_padding] * 4


@pytest.mark.parametrize("vid", VARIANTS)
def test_export_reimports_bit_exact(vid):
    w = seeded_weights(Variant.from_id(vid))
    back = onnx_format.decode(onnx_format.encode(w))
    assert back.variant == w.variant and back.meta == w.meta
    assert all(back[k].tobytes() == w[k].tobytes() for k in w.tensors)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_dynamic_batch_and_size(batch):
    w = seeded_weights(Variant("1_1"))
    model = ortengine.load(w)
    for size in (224, 227):
        x = inputs(size)[:batch]
        atol, rtol = tolerance("onnxruntime", "float32")
        assert_agrees(ortengine.predict(model, x), golden.load("1_1-p0-none", size)[:batch],
                      atol, rtol, f"ORT batch {batch} at {size}")


def test_float64_is_refused():
    with pytest.raises(ValueError, match="float32 only"):
        ortengine.load(seeded_weights(Variant("1_1")), dtype="float64")


def test_bench_runs_the_reference_worker(tmp_path, monkeypatch):
    """tools/bench end to end for ONNX Runtime alone, with this interpreter (no tox)."""
    import json
    import sys

    from devtools import bench
    from devtools.bench.config import QUICK_BATCHES

    monkeypatch.setattr(bench, "OUT", tmp_path)
    assert bench.main(["--quick", "--ports", "onnxruntime", "--threads", "1", "--no-plot",
                       "--rounds", "1", "--python", f"onnx={sys.executable}"]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    ort = result["ports"]["onnxruntime"]
    # --quick measures batch 1 and a small batch (the full bench 1 and 32)
    assert set(ort["batches"]) == set(map(str, QUICK_BATCHES)) == {"1", "4"}
    assert not result["not_run"]
    for rec in ort["batches"].values():
        assert rec["images_per_s"] > 0 and rec["ratio_to_onnxruntime"] == 1.0
        assert rec["gflops"] == pytest.approx(rec["images_per_s"] * 2 * 349_151_936 / 1e9)
        assert rec["fraction_of_peak"] == pytest.approx(
            rec["gflops"] / result["machine"]["peak_gflops"])


class TestOnnxTrace(TraceSuite):
    """Intermediate outputs requested from the engine itself (see its ``activations``)."""

    port = "onnxruntime"
    paths = ("fast",)  # the engine's own (optimised) graph, with the traced outputs kept


def test_marking_intermediate_outputs_moves_no_logit():
    """What the trace reports about the engine: marking every traced output leaves the
    logits where they were, up to float32 rounding."""
    from conformance.inputs import inputs
    from conformance.registry import PORTS
    from ports.seeded import seeded_weights
    from ports.spec import Variant

    mod = PORTS["onnxruntime"].import_module()
    model = mod.load(seeded_weights(Variant.from_id("1_0-p1-complex")))
    effect = mod.marking_effect(model, inputs(227, count=2))
    assert effect["marked_logits_max_abs"] <= 1e-4 and effect["note"]

