"""Our ``.tflite`` writer against Keras's own LiteRT export of the same weights (keras-tf:
``model.export(path, format="litert")`` needs TensorFlow's converter).  Both files run in
TensorFlow's LiteRT interpreter (``tf.lite.Interpreter``, the runtime inside TensorFlow,
not our engine's ``ai-edge-litert``), on the same input; Keras's file is read back by our
reader.  Every variant (Keras expresses them all), each at the input size of its
golden case."""

import numpy as np
import pytest
import tensorflow as tf

from conformance import golden
from conformance.harness import assert_agrees, tolerance
from conformance.inputs import inputs
from conformance.registry import keras_port
from ports import keras as port
from ports.formats import tflite
from ports.layouts import nchw_to_nhwc
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

CASES = [(v.id, 227 if i % 2 else 224) for i, v in enumerate(all_variants())]


def _run(flatbuffer: bytes, x_nchw: np.ndarray) -> np.ndarray:
    interp = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
    x = np.ascontiguousarray(nchw_to_nhwc(x_nchw), np.float32)
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(index, x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """vid -> (weights, Keras's .tflite bytes)."""
    assert keras_port() == "keras-tf"
    out = {}
    for vid, _ in CASES:
        w = seeded_weights(Variant.from_id(vid))
        path = tmp_path_factory.mktemp("litert") / f"{vid}.tflite"
        port.load(w).export(str(path), format="litert")
        out[vid] = w, path.read_bytes()
    return out


@pytest.mark.parametrize("vid, size", CASES)
def test_keras_export_reads_back_bit_exact(exported, vid, size):
    w, keras_file = exported[vid]
    back = tflite.decode(keras_file)
    assert back.variant == w.variant
    assert all(back[k].tobytes() == w[k].tobytes() for k in w.tensors)


@pytest.mark.parametrize("vid, size", CASES)
def test_our_file_computes_what_keras_export_computes(exported, vid, size):
    w, keras_file = exported[vid]
    x = inputs(size)[:2]
    ours, theirs = _run(tflite.encode(w), x), _run(keras_file, x)
    atol, rtol = tolerance("litert", "float32")
    assert_agrees(ours, theirs, atol, rtol, f"our .tflite vs Keras's export, {vid} at {size}")
    assert_agrees(ours, golden.load(vid, size)[:2], atol, rtol, f"our .tflite, {vid}")


def test_a_one_percent_error_in_our_file_is_caught(exported):
    vid, size = CASES[0]
    w, keras_file = exported[vid]
    tensors = dict(w.tensors)
    tensors["fire9.expand3x3.weight"] = tensors["fire9.expand3x3.weight"] * np.float32(1.01)
    x = inputs(size)[:2]
    atol, rtol = tolerance("litert", "float32")
    with pytest.raises(AssertionError):
        assert_agrees(_run(tflite.encode(type(w)(tensors, w.meta)), x), _run(keras_file, x),
                      atol, rtol, "planted")
