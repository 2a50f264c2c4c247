"""The LiteRT interpreter running our ``.tflite`` export: goldens on every variant in
float32, the layer trace, batches and sizes, and a planted defect."""

import ai_edge_litert  # noqa: F401  (the litert environment runs this module)
import numpy as np
import pytest

from conformance import golden
from conformance.engines import litert as lrengine
from conformance.harness import assert_agrees, tolerance
from conformance.inputs import inputs
from conformance.suite import PortSuite, TraceSuite
from ports.formats import tflite
from ports.seeded import seeded_weights
from ports.spec import Variant


class TestLitert(PortSuite):
    port = "litert"


class TestLitertTrace(TraceSuite):
    """Every intermediate tensor kept by the interpreter (see ``activations``)."""

    port = "litert"
    paths = ("fast",)


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_and_size(batch):
    """One interpreter resized between calls: sizes and batches in any order."""
    model = lrengine.load(seeded_weights(Variant("1_1")))
    atol, rtol = tolerance("litert", "float32")
    for size in (224, 227, 224):
        assert_agrees(lrengine.predict(model, inputs(size)[:batch]),
                      golden.load("1_1-p0-none", size)[:batch], atol, rtol,
                      f"LiteRT batch {batch} at {size}")


def test_it_computes_in_float32():
    assert lrengine.precision(lrengine.load(seeded_weights(Variant("1_1")))) == "float32"


def test_a_file_the_converter_wrote_runs_as_the_one_the_engine_built(tmp_path):
    """tools/convert's .tflite is the engine's flatbuffer, byte for byte."""
    from ports import formats

    w = seeded_weights(Variant("1_0", 1000, 1, "complex"))
    path = tmp_path / "w.tflite"
    formats.write(w, path)
    assert path.read_bytes() == lrengine.load(w).flatbuffer
    model = lrengine.load(path)
    atol, rtol = tolerance("litert", "float32")
    assert_agrees(lrengine.predict(model, inputs(227)[:2]),
                  golden.load("1_0-p1-complex", 227)[:2], atol, rtol, "converted .tflite")
    assert tflite.decode(path.read_bytes()).variant == w.variant


def test_float64_is_refused():
    with pytest.raises(ValueError, match="float32 only"):
        lrengine.load(seeded_weights(Variant("1_1")), dtype="float64")


def test_a_one_percent_error_in_one_tensor_fails():
    w = seeded_weights(Variant("1_1"))
    tensors = dict(w.tensors)
    tensors["fire9.expand3x3.weight"] = tensors["fire9.expand3x3.weight"] * np.float32(1.01)
    atol, rtol = tolerance("litert", "float32")
    with pytest.raises(AssertionError):
        assert_agrees(lrengine.predict(lrengine.load(type(w)(tensors, w.meta)), inputs(224)[:2]),
                      golden.load("1_1-p0-none", 224)[:2], atol, rtol, "planted")
