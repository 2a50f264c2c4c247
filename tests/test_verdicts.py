"""A verdict belongs to a run (issue 27): a port passes only when its ``collect`` process
exited 0, every case expected of it is in its record, the run that wrote the record
finished, every value is finite and the record is current by its key (our code and the
port's own).  Each test plants one defect in a tiny out-of-tree port (written to
``tmp_path``, run in this interpreter) and shows that ``conformance.collect`` and the matrix
exit non-zero naming the port and the case, in run and ``--no-run`` mode.

The tiny port answers every golden case with the golden logits, and every training case
with Caffe's rule on a small made-up case whose reference it installs in
``conformance.training`` (the real network has 52 tensors); the shared ground truth is
pointed at an empty folder, so its real-weights cases are recorded as not run.
Environment variables plant the defects:
``TINY_KILL_AT=N`` (SIGKILL at the Nth logits call), ``TINY_EXIT0_AT=N`` (exit 0 there),
``TINY_NAN=logit|grad|weights|loss``, ``TINY_PRECISION=bf16`` (the precision it says it
computed in).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import harness, training
from conformance.fixtures import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
PORT = "tinyport.net"
NAN_CASE = "1_1-p0-none-224-float32"

TINY = '''"""A port that knows the answers: golden logits and a made-up training reference."""
import os
import signal
from types import SimpleNamespace

import numpy as np

from conformance import golden, training
from ports._api import Step

DTYPES = ("float32",)
NAMES = ("conv1.weight", "fire5.squeeze.weight", "conv10.weight")
_calls = [0]


def _case(vid):
    """(start weights: three small float32 tensors, gradient) of a made-up training case."""
    rng = np.random.default_rng(len(vid))
    start = {n: rng.normal(size=(4, 3)).astype(np.float32) for n in NAMES}
    return start, {n: rng.normal(size=(4, 3)) for n in NAMES}


def _case_data(name, real=training.case_data):
    from ports.seeded import seeded_weights
    from ports.spec import Variant

    if name in training.FIXTURE_LABELS:
        return real(name)  # needs the shared ground truth (here: not run)
    start = SimpleNamespace(tensors=_case(name)[0], meta=seeded_weights(Variant.from_id(name)).meta,
                            variant=Variant.from_id(name))  # not SqueezeNet: no Weights
    return start, np.zeros((4, 3, 40, 40), np.float32), np.arange(4)


def _decided(weights, tensors, x, labels, acts):  # the same gradient at every weight
    return 7.0, _case(weights.variant.id)[1]


# the real float64 reference is seconds a case, and its network has 52 tensors
training.case_data, training.decided = _case_data, _decided


def load(weights, dtype="float32", fast=True):
    return weights.variant.id


def predict(model, x):
    _calls[0] += 1
    if _calls[0] == int(os.environ.get("TINY_KILL_AT", 0)):
        os.kill(os.getpid(), signal.SIGKILL)
    if _calls[0] == int(os.environ.get("TINY_EXIT0_AT", 0)):
        os._exit(0)
    out = golden.load(model, x.shape[-1]).astype(np.float32)
    if os.environ.get("TINY_NAN") == "logit" and model == "1_1-p0-none" and x.shape[-1] == 224:
        out[3, 17] = np.nan
    return out


def activations(model, x, layers=None):
    return {}


def precision(model):  # what an engine that picks its own precision says it computed in
    return os.environ.get("TINY_PRECISION", "float32")


def loss_and_grads(model, x, labels):
    grads = {k: v.copy() for k, v in _case(model)[1].items()}
    if os.environ.get("TINY_NAN") == "grad":
        grads["fire5.squeeze.weight"][1, 2] = np.nan
    return 7.0, grads


def train_steps(model, x, labels, lrs, momentum, weight_decay):
    """Caffe's rule on the made-up gradient, in float64 from the float32 start."""
    w, g = _case(model)
    w = {k: t.astype(np.float64) for k, t in w.items()}
    v = {k: np.zeros_like(t) for k, t in w.items()}
    out = []
    for i, lr in enumerate(lrs, 1):
        v = {k: momentum * v[k] + lr * (g[k] + weight_decay * w[k]) for k in w}
        w = {k: w[k] - v[k] for k in w}
        loss = 7.0
        if os.environ.get("TINY_NAN") == "weights" and i >= 4:
            w["conv10.weight"] = np.full_like(w["conv10.weight"], np.nan)
        if os.environ.get("TINY_NAN") == "loss" and i == 5:
            loss = float("nan")
        out.append(Step(loss, g, dict(v), dict(w)))
    return out
'''


@pytest.fixture
def tiny(tmp_path):
    """(the port's source file, an environment running it: results in ``tmp_path/out``,
    the shared ground truth an empty folder)."""
    package = tmp_path / "src" / "tinyport"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "net.py").write_text(TINY)
    (tmp_path / "shared").mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TINY_", "SQUEEZENET_"))}
    env.update(SQUEEZENET_RESULTS=str(tmp_path / "out"), SQUEEZENET_SHARED=str(tmp_path / "shared"),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path / "src")]),
               PYTHONDONTWRITEBYTECODE="1")
    return package / "net.py", env


def _run(env: dict, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env={**env, **extra},
                          text=True, capture_output=True, timeout=600)


def collect(env, **extra):
    return _run(env, "conformance.collect", PORT, **extra)


def matrix(env, *flags, **extra):
    return _run(env, "conformance.matrix", "--ports", PORT, "--jobs", "1", *flags, **extra)


def _failed(out: subprocess.CompletedProcess) -> str:
    """The reason the matrix gives for the port, asserting it exited 1 and listed it."""
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"ports failed to run: {PORT}" in out.stdout, out.stdout
    return out.stdout.split(f"\n  {PORT}: ", 1)[1].splitlines()[0]


def _record(env) -> tuple[Path, dict]:
    path = Path(env["SQUEEZENET_RESULTS"]) / f"{PORT}.json"
    return path, json.loads(path.read_text())


def _expected() -> list[str]:
    from conformance.collect import cases

    return [c.id for c in cases(PORT)]


@pytest.fixture
def on_path(tiny, monkeypatch):
    """The tiny port importable in this process too; importing it replaces
    ``training.case_data`` and ``training.decided``, which are put back afterwards (for the
    tests that follow)."""
    monkeypatch.syspath_prepend(str(tiny[0].parent.parent))
    monkeypatch.setattr(training, "case_data", training.case_data)
    monkeypatch.setattr(training, "decided", training.decided)
    return tiny


def test_a_complete_run_passes_and_lists_what_did_not_run(on_path):
    """The baseline: every case recorded, finished, in both modes; the real-weights cases
    (no shared ground truth) are on the report's first line and listed as not run, and
    fail it under SQUEEZENET_REQUIRE_SHARED=1."""
    _, env = on_path
    made = collect(env)
    assert made.returncode == 0, made.stdout + made.stderr
    _, doc = _record(env)
    assert doc["finished"] is True and len(doc["cases"]) == len(_expected())
    for flags in ((), ("--no-run",)):
        out = matrix(env, *flags)
        assert out.returncode == 0, out.stdout + out.stderr
        lines = out.stdout.splitlines()  # the report begins after the run's log
        first = lines[lines.index("") + 1]
        real = [c for c in _expected() if any(f.name in c for f in FIXTURES if f.files)]
        assert len(real) >= 3
        assert first.startswith(f"NOT RUN: {len(real)} real-weights cases did not run"), first
        assert f"{PORT:<12} caffe-real-v1_0-float32: shared data" in out.stdout
        assert f"{len(real)} not run; ports failed to run: none" in out.stdout
    required = matrix(env, "--no-run", SQUEEZENET_REQUIRE_SHARED="1")
    assert required.returncode == 1 and "NOT RUN" in required.stdout


def test_a_port_killed_part_way(on_path):
    _, env = on_path
    killed = collect(env, TINY_KILL_AT="17")
    assert killed.returncode == -9
    _, doc = _record(env)
    assert doc["finished"] is False and len(doc["cases"]) == 16
    n = len(_expected())
    why = _failed(matrix(env, TINY_KILL_AT="17", SQUEEZENET_RECOMPUTE="1"))
    assert why.startswith(f"exit -9 after 16 of {n} cases"), why
    assert f"did not finish (16 of {n} cases recorded; not recorded: {_expected()[16]}" in why
    why = _failed(matrix(env, "--no-run"))
    assert f"did not finish (16 of {n} cases recorded; not recorded: " in why, why


def test_a_port_that_exits_0_part_way(on_path):
    """Exit status 0 is not enough: the record must be this run's, finished, complete."""
    _, env = on_path
    why = _failed(matrix(env, TINY_EXIT0_AT="17"))
    assert why.startswith(f"exit 0 after 16 of {len(_expected())} cases"), why
    assert "did not finish" in why
    assert "did not finish" in _failed(matrix(env, "--no-run"))


def test_a_crashed_port_with_an_older_complete_record(on_path):
    _, env = on_path
    assert collect(env).returncode == 0
    crashed = collect(env, TINY_KILL_AT="3", SQUEEZENET_RECOMPUTE="1")
    assert crashed.returncode == -9
    why = _failed(matrix(env, TINY_KILL_AT="3", SQUEEZENET_RECOMPUTE="1"))
    assert why.startswith(f"exit -9 after 2 of {len(_expected())} cases"), why
    assert "did not finish" in _failed(matrix(env, "--no-run"))


def test_a_record_missing_one_case(on_path):
    _, env = on_path
    assert collect(env).returncode == 0
    path, doc = _record(env)
    gone = doc["cases"].pop(5)["id"]
    path.write_text(json.dumps(doc))
    n = len(_expected())
    assert _failed(matrix(env, "--no-run")).endswith(
        f"{n - 1} of {n} cases recorded; not recorded: {gone}")
    # a run fills it in (computes that case alone) and passes
    again = collect(env)
    assert again.returncode == 0 and f"{n - 1} of {n} cases recorded" in again.stdout


def test_a_record_of_other_code_of_ours(on_path):
    _, env = on_path
    assert collect(env).returncode == 0
    path, doc = _record(env)
    doc["key"]["code"] = "0" * 64  # as if an older commit had made it
    path.write_text(json.dumps(doc))
    assert "computed from other code than this checkout's" in _failed(
        matrix(env, "--no-run"))
    # run mode never reuses it: recomputed, and a port that now dies is named
    why = _failed(matrix(env, TINY_KILL_AT="1"))
    assert why.startswith(f"exit -9 after 0 of {len(_expected())} cases"), why
    again = collect(env)
    assert again.returncode == 0 and "reusing" not in again.stdout


def test_a_record_of_other_code_of_the_port(on_path):
    """The key covers an out-of-tree port's own files: after they change, its old record
    is neither gathered nor reused."""
    source, env = on_path
    assert collect(env).returncode == 0
    source.write_text(source.read_text().replace('DTYPES = ("float32",)',
                                                 'DTYPES = ("float32",)  # changed'))
    why = _failed(matrix(env, "--no-run"))
    assert "other code than this checkout's ports/ and conformance/ and the port's own" \
        in why, why
    # a change that breaks the port: recomputed, not reused, and it fails
    out = matrix(env, TINY_NAN="logit")
    assert out.returncode == 1 and "reusing" not in out.stdout, out.stdout
    assert f"{PORT} {NAN_CASE}: NOT FINITE: 1 of 8000 logits" in out.stdout


@pytest.mark.parametrize("nan, case, named", [
    ("logit", NAN_CASE, "NOT FINITE: 1 of 8000 logits"),
    ("grad", "grad-1_0-p0-none-40-float32", "NOT FINITE: fire5.squeeze.weight (1 of 12)"),
    ("weights", "steps-1_0-p0-none-40-float32",
     "NOT FINITE: step 4 conv10.weight weights (12 of 12)"),
    ("loss", "steps-1_0-p0-none-40-float32", "NOT FINITE: step 5 loss (1 of 1)"),
])
def test_a_nan_anywhere_fails(on_path, nan, case, named):
    """A NaN logit, a NaN gradient of a tensor other than the first, NaN weights after
    step 4 (nothing after it is compared), a NaN loss alone at step 5: collect and the matrix fail,
    naming the case and the tensor; gathered, the record is refused naming the case."""
    _, env = on_path
    made = collect(env, TINY_NAN=nan)
    assert made.returncode == 1
    assert f"{PORT} {case}: {named} MISMATCH" in made.stdout, made.stdout
    out = matrix(env, TINY_NAN=nan)
    assert f"  {case}: {named} MISMATCH" in out.stdout, out.stdout  # collect's summary
    why = _failed(out)
    assert why.startswith(f"exit 1 after {len(_expected())} of {len(_expected())} cases; "
                          f"not finite or incomplete in ") and f"{case} (" in why, why
    why = _failed(matrix(env, "--no-run"))
    assert "not finite or incomplete in " in why, why
    assert f"{case} (" in why, why


def test_a_float32_case_computed_in_another_precision_fails(on_path):
    """An engine that says it computed a float32 case in bfloat16 (OpenVINO's default on a
    CPU with AVX512-BF16) gets no float32 verdict: every case is an error naming the
    precision, and the matrix fails the port; honest ``f32`` is recorded and passes."""
    _, env = on_path
    made = collect(env, TINY_PRECISION="bf16")
    assert made.returncode == 1
    assert f"{NAN_CASE}: ERROR RuntimeError: {PORT} computed a float32 case in bf16" \
        in made.stdout, made.stdout
    out = matrix(env, TINY_PRECISION="bf16")
    assert out.returncode == 1 and "computed a float32 case in bf16" in out.stdout, out.stdout
    assert collect(env, TINY_PRECISION="f32", SQUEEZENET_RECOMPUTE="1").returncode == 0
    _, doc = _record(env)
    golden = [r for r in doc["cases"] if r["kind"] == "golden"]
    assert golden and all(r["precision"] == "f32" for r in golden)
    out = matrix(env, "--no-run")
    assert out.returncode == 0 and f"{PORT:<12} float32 cases in f32" in out.stdout, out.stdout


def test_the_worst_error_treats_nan_as_the_worst():
    assert harness.worst({"a": 1e-3, "b": math.nan, "c": 1.0}) == ("b", pytest.approx(math.nan,
                                                                    nan_ok=True))
    assert harness.worst({"a": 1e-3, "c": 1.0}) == ("c", 1.0)
    assert harness.worst({"a": 0.0}) == ("a", 0.0)


def test_relative_errors_of_a_nan_tensor_are_nan():
    import numpy as np

    expected = {"a": np.ones(3), "b": np.ones(3)}
    actual = {"a": np.ones(3), "b": np.array([1.0, np.nan, 1.0])}
    errors = training.relative_errors(actual, expected)
    assert errors["a"] == 0.0 and math.isnan(errors["b"])
    assert training.nonfinite(actual) == ["b (1 of 3)"]
