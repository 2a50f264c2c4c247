"""OpenVINO running our ONNX export: goldens on every variant in float32, the layer trace,
the precision it ran in, and the bench against ONNX Runtime."""

import numpy as np
import openvino  # noqa: F401  (the openvino environment runs this module)
import pytest

from conformance import golden
from conformance.engines import openvino as ovengine
from conformance.harness import assert_agrees, tolerance
from conformance.inputs import inputs
from conformance.suite import PortSuite, TraceSuite
from ports.seeded import seeded_weights
from ports.spec import Variant


class TestOpenvino(PortSuite):
    port = "openvino"


class TestOpenvinoTrace(TraceSuite):
    """Intermediate tensors added as outputs of a copy of the model (see ``activations``)."""

    port = "openvino"
    paths = ("fast",)


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_and_size(batch):
    model = ovengine.load(seeded_weights(Variant("1_1")))
    for size in (224, 227):
        atol, rtol = tolerance("openvino", "float32")
        assert_agrees(ovengine.predict(model, inputs(size)[:batch]),
                      golden.load("1_1-p0-none", size)[:batch], atol, rtol,
                      f"OpenVINO batch {batch} at {size}")


def test_it_computes_in_float32_whatever_the_cpu_would_choose():
    """The hint is set on every compiled model and the compiled model says f32; a model
    compiled without it reports the CPU's default (bf16 on AVX512-BF16/AMX machines), which
    the engine would have recorded, not hidden."""
    model = ovengine.load(seeded_weights(Variant("1_1")))
    assert ovengine.precision(model) == "f32"
    default = openvino.Core().compile_model(model.model, "CPU")
    chosen = str(default.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    model.compiled = default
    assert ovengine.precision(model) == chosen  # what was run is what is said


def test_float64_is_refused():
    with pytest.raises(ValueError, match="'float64' not supported \\(float32, bfloat16\\)"):
        ovengine.load(seeded_weights(Variant("1_1")), dtype="float64")


def test_bfloat16_is_the_plugins_bf16_mode_and_says_so():
    """``dtype="bfloat16"`` compiles with the ``bf16`` hint; the precision recorded is what the
    compiled model reports (``bf16`` on this project's CPUs with AVX512-BF16; a CPU without
    it would report ``f32``, which collect turns into an error), and its logits move by
    bfloat16's rounding, not float32's."""
    w = seeded_weights(Variant("1_1"))
    model = ovengine.load(w, dtype="bfloat16")
    assert model.hint == "bf16"
    assert ovengine.precision(model) == str(
        model.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    x, expected = inputs(227)[:2], golden.load("1_1-p0-none", 227)[:2]
    err = np.abs(ovengine.predict(model, x) - expected).max() / np.abs(expected).max()
    f32 = np.abs(ovengine.predict(ovengine.load(w), x) - expected).max() / np.abs(expected).max()
    if ovengine.precision(model) == "bf16":
        assert 1e-4 < err < 8 * 2.0 ** -8 and f32 < 1e-5, (err, f32)


def test_a_one_percent_error_in_one_tensor_fails():
    """The planted defect the float32 verdict must catch: fire9.expand3x3's weight 1 % off."""
    w = seeded_weights(Variant("1_1"))
    tensors = dict(w.tensors)
    tensors["fire9.expand3x3.weight"] = tensors["fire9.expand3x3.weight"] * np.float32(1.01)
    bad = type(w)(tensors, w.meta)
    atol, rtol = tolerance("openvino", "float32")
    with pytest.raises(AssertionError):
        assert_agrees(ovengine.predict(ovengine.load(bad), inputs(224)[:2]),
                      golden.load("1_1-p0-none", 224)[:2], atol, rtol, "planted")
