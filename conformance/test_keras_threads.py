"""Reading Keras ``.weights.h5`` files while the Keras port computes on the same backend.

The HDF5 reader runs in a helper process (``ports.formats._sandbox``: libhdf5 may crash or hang on a
crafted file).  The helper must be started without forking this process: fork copies one
thread of a process whose TensorFlow / JAX / PyTorch thread pools and locks are in use
(the child can deadlock; Python 3.12+ and JAX warn about it on every such fork).  Here one
thread loads a weights file 200 times through ``ports.formats.read`` while another runs
``ports.keras.predict`` in a loop: no hang, no warning, the right tensors every time.
Runs in the keras-tf, keras-jax and keras-torch environments.
"""

import faulthandler
import os
import threading
import warnings

import numpy as np

if os.environ.get("KERAS_BACKEND") not in ("tensorflow", "jax", "torch"):
    raise RuntimeError("set KERAS_BACKEND to tensorflow, jax or torch "
                       "(tox -e keras-tf, keras-jax, keras-torch)")

import ports.keras as kport  # noqa: E402
from ports import formats  # noqa: E402
from ports.formats import _sandbox  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant  # noqa: E402

READS = 200
HANG_SECONDS = 600  # far beyond what the test needs: a hang ends the run with tracebacks


def _no_fork():
    raise AssertionError("os.fork() called while the backend's threads run")


def test_reading_keras_files_while_the_backend_predicts_in_another_thread(tmp_path,
                                                                           monkeypatch):
    variant = Variant("1_1", 10)
    weights = seeded_weights(variant)
    path = tmp_path / "w.weights.h5"
    formats.write(weights, path)
    model = kport.load(weights)
    x = np.random.default_rng(0).random((2, 3, 48, 48), dtype=np.float32)
    expected = kport.predict(model, x)  # warm: the backend's thread pools exist now
    monkeypatch.setattr(os, "fork", _no_fork)
    _sandbox._close()  # the helper starts below, while the other thread predicts

    stop, started = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    predictions = [0]

    def predict_loop() -> None:
        try:
            while not stop.is_set():
                got = kport.predict(model, x)
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
                predictions[0] += 1
                started.set()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            started.set()

    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    worker = threading.Thread(target=predict_loop, daemon=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning, in either thread, fails the test
            # ... but one that Keras' torch backend gives on every predict (numpy 2 asks
            # torch.Tensor.__array__ for a copy keyword it lacks), unrelated to reading
            warnings.filterwarnings("ignore", r"__array__ implementation doesn't accept a "
                                    "copy keyword", DeprecationWarning)
            worker.start()
            assert started.wait(120), "predict did not run"
            for i in range(READS):
                back = formats.read(path)
                assert back.variant == variant, i
                assert back.tensors.keys() == weights.tensors.keys(), i
                for k, t in weights.tensors.items():
                    assert back[k].tobytes() == t.tobytes(), (i, k)
            stop.set()
            worker.join(120)
    finally:
        stop.set()
        faulthandler.cancel_dump_traceback_later()
    assert not worker.is_alive(), "predict did not stop"
    assert not errors, errors
    assert predictions[0] > 1
    assert _sandbox._helper is not None and _sandbox._helper.proc.poll() is None
