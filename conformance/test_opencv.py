"""OpenCV DNN as an external Caffe engine: goldens and real-Caffe fixtures through the
project's own ``.caffemodel`` + ``.prototxt`` writer, and the original Caffe files."""

import cv2
import numpy as np
import pytest

from conformance import golden  # noqa: E402
from conformance.fixtures import CAFFE_REAL, shared_or_skip
from conformance.harness import assert_agrees, tolerance  # noqa: E402
from conformance.inputs import inputs  # noqa: E402
from conformance.suite import PortSuite, TraceSuite  # noqa: E402
from ports.formats import caffe, read  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant  # noqa: E402


class TestOpencv(PortSuite):
    port = "opencv"


_shared = shared_or_skip


def _forward(prototxt, caffemodel, x: np.ndarray) -> np.ndarray:
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setInput(np.ascontiguousarray(x, np.float32))
    return net.forward("pool10" if "pool10" in net.getLayerNames() else "pool_final") \
        .reshape(len(x), -1)


@pytest.mark.parametrize("original, prototxt, stem", [
    ("squeezenet_v1.0_deep_compression.caffemodel",
     "weights/deep-compression/SqueezeNet_deploy.prototxt", "squeezenet_v1.0_deep_compression"),
    ("squeezenet_v1.1_seeded.caffemodel", "weights/caffe/v1.1/deploy.prototxt",
     "squeezenet_v1.1_seeded"),
])
def test_our_files_compute_what_the_original_caffe_files_compute(tmp_path, original, prototxt,
                                                                  stem):
    """OpenCV on the files real Caffe wrote (with the release's prototxt) and OpenCV on our
    re-written pair give identical logits; both agree with real Caffe's own logits."""
    model = _shared(f"{CAFFE_REAL}/{original}")
    deploy = _shared(prototxt)
    with np.load(_shared(f"{CAFFE_REAL}/{stem}.caffe_logits.npz")) as data:
        x, expected = data["x"], data["logits"]
    ours = tmp_path / "ours.caffemodel"
    caffe.write(read(model), ours)
    theirs_logits = _forward(deploy, model, x)
    our_logits = _forward(caffe.prototxt_path(ours), ours, x)
    np.testing.assert_array_equal(our_logits, theirs_logits)
    atol, rtol = tolerance("opencv", "float32", "caffe-real")
    assert_agrees(our_logits, expected, atol, rtol, f"OpenCV on our {ours.name} ({stem})")


@pytest.mark.parametrize("vid", ["1_0-p1-complex", "1_1-p0-simple"])
def test_bypass_prototxt_runs_in_opencv(tmp_path, vid):
    """The Eltwise and bypass-conv layers we write mean in OpenCV what the spec means."""
    v = Variant.from_id(vid)
    path = tmp_path / "w.caffemodel"
    caffe.write(seeded_weights(v), path)
    logits = _forward(caffe.prototxt_path(path), path, inputs(227)[:2])
    atol, rtol = tolerance("opencv", "float32")
    assert_agrees(logits, golden.load(vid, 227)[:2], atol, rtol, f"OpenCV {vid}")


class TestOpenCVTrace(TraceSuite):
    """Intermediate outputs requested from the engine itself (see its ``activations``)."""

    port = "opencv"
    paths = ("fast",)  # the engine's own (optimised) graph, with the traced outputs kept


def test_marking_intermediate_outputs_moves_no_logit():
    """What the trace reports about the engine: marking every traced output leaves the
    logits where they were, up to float32 rounding."""
    from conformance.inputs import inputs
    from conformance.registry import PORTS
    from ports.seeded import seeded_weights
    from ports.spec import Variant

    mod = PORTS["opencv"].import_module()
    model = mod.load(seeded_weights(Variant.from_id("1_0-p1-complex")))
    effect = mod.marking_effect(model, inputs(227, count=2))
    assert effect["marked_logits_max_abs"] <= 1e-4 and effect["note"]

