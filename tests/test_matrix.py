"""The main job fails loudly: a port that cannot run is named with its first error line.

``conformance.collect`` exits non-zero when a case errors or disagrees; the matrix lists a
port whose every case errored (its framework missing) or whose tox environment could not be
made (its Python missing) under "ports failed to run", and exits non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import toxenv
from conformance.collect import cases

ROOT = Path(__file__).resolve().parent.parent
CASE = "1_1-p0-none-224-float32"


def _python(*args: str, results_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SQUEEZENET_RESULTS": str(results_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)


def test_a_port_without_its_framework_fails_collect_and_the_matrix(tmp_path):
    """This environment has no torch: the torch port's cases error, and both commands say
    so and fail."""
    collect = _python("conformance.collect", "torch", results_dir=tmp_path)
    assert collect.returncode == 1, collect.stdout + collect.stderr
    assert f"torch: 0 / {len(cases('torch'))} cases agree" in collect.stdout
    assert "ERROR ModuleNotFoundError: No module named 'torch'" in collect.stdout
    matrix = _python("conformance.matrix", "--no-run", "--ports", "torch",
                     results_dir=tmp_path)
    assert matrix.returncode == 1
    assert "ports failed to run: torch" in matrix.stdout
    assert ("torch: every case errored; first: ModuleNotFoundError: No module named 'torch'"
            in matrix.stdout)
    assert json.loads((tmp_path / "matrix.json").read_text())["failed"]["torch"]


def test_collect_exits_nonzero_on_a_disagreement(tmp_path):
    """A recorded disagreement (here: a golden case whose stored record says the logits
    were off) is reported, not passed over, when the results are gathered."""
    collect = _python("conformance.collect", "numpy", "--case", "1_1-p0-none-224-float64",
                      results_dir=tmp_path)
    assert collect.returncode == 0, collect.stdout + collect.stderr
    doc = json.loads((tmp_path / "numpy.json").read_text())
    doc["cases"][0].update(ok=False, mismatches=3)
    (tmp_path / "numpy.json").write_text(json.dumps(doc))
    again = _python("conformance.collect", "numpy", "--case", "1_1-p0-none-224-float64",
                    results_dir=tmp_path)  # reuses the (current) record, and fails on it
    assert again.returncode == 1 and "MISMATCH" in again.stdout
    # gathered, a record of one case is not a verdict on the numpy port (tests/
    # test_verdicts.py gathers complete records of an out-of-tree port)
    matrix = _python("conformance.matrix", "--no-run", "--ports", "numpy",
                     results_dir=tmp_path)
    assert matrix.returncode == 1 and "ports failed to run: numpy" in matrix.stdout
    assert f"1 of {len(cases('numpy'))} cases recorded" in matrix.stdout


def test_a_stale_record_is_recomputed(tmp_path):
    """A record whose key differs (other code, versions or data) is never reused."""
    first = _python("conformance.collect", "numpy", "--case", "1_1-p0-none-224-float64",
                    results_dir=tmp_path)
    assert first.returncode == 0
    doc = json.loads((tmp_path / "numpy.json").read_text())
    doc["key"]["environment"] = "stale"
    doc["cases"][0].update(ok=False)
    (tmp_path / "numpy.json").write_text(json.dumps(doc))
    again = _python("conformance.collect", "numpy", "--case", "1_1-p0-none-224-float64",
                    results_dir=tmp_path)
    assert again.returncode == 0 and "reusing" not in again.stdout, again.stdout
    assert json.loads((tmp_path / "numpy.json").read_text())["key"]["environment"] != "stale"


def test_a_missing_interpreter_is_named(tmp_path):
    """Real tox, asked for an environment pinned to a Python this machine lacks: the
    matrix's tox plumbing reports which interpreter is needed, in one line."""
    (tmp_path / "tox.ini").write_text("[tox]\nskip_missing_interpreters = false\n"
                                      "[testenv:old]\nbase_python = python3.99\n"
                                      "skip_install = true\ncommands = python -V\n")
    code, lines = toxenv.stream([sys.executable, "-m", "tox", "run", "-e", "old", "--notest"],
                                "old", lambda line: None, cwd=tmp_path)
    assert code != 0
    assert toxenv.missing_interpreter(lines) == "python3.99", lines


def test_environments_are_built_ahead_while_ports_compute(monkeypatch, tmp_path, capsys):
    """One thread creates the environments in turn while the ports already built compute:
    with one computing port, the next environments are ready before the first port is
    done; an environment that cannot be created names its port, and the others still run."""
    import threading
    import time

    from conformance import matrix

    events, lock = [], threading.Lock()

    def note(what):
        with lock:
            events.append(what)

    def ensure(env, log):
        time.sleep(0.1)
        if env == "keras-tf":
            raise toxenv.EnvError("tox env keras-tf needs python3.99")
        note(f"built {env}")

    def run(env, argv, log):
        note(f"run {env}")
        time.sleep(1.0)
        note(f"ran {env}")
        return 0, []

    monkeypatch.setattr(matrix.toxenv, "ensure", ensure)
    monkeypatch.setattr(matrix.toxenv, "ensure_existing", lambda envs, log: [])
    monkeypatch.setattr(matrix.toxenv, "run", run)
    monkeypatch.setattr(matrix.results, "read", lambda port: ({}, {}))
    monkeypatch.setattr(matrix.results, "verdict", lambda *args: None)
    monkeypatch.setattr(matrix, "gather", lambda ports, check=False: ([], {}, {}))
    monkeypatch.setattr(matrix, "RESULTS", tmp_path)
    code = matrix.main(["--ports", "torch,keras-tf,flax", "--jobs", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "ports failed to run: keras-tf" in out and "needs python3.99" in out, out
    # flax first (it compiles every case: conformance.matrix.schedule), then torch, keras-tf
    assert events.index("built torch") < events.index("ran flax"), events
    assert events[-2:] == ["run torch", "ran torch"] and "run keras-tf" not in events, events


TWO_ENVS = ("[tox]\nskip_missing_interpreters = false\n"
            "[testenv:a]\nskip_install = true\ncommands = python -V\n"
            "[testenv:b]\nskip_install = true\ncommands = python -V\n"
            "[testenv:old]\nbase_python = python3.99\nskip_install = true\n"
            "commands = python -V\n")


def test_existing_environments_are_brought_up_to_date_in_one_tox_run(tmp_path, monkeypatch):
    """Real tox: environments not yet created are left to ``ensure`` (one at a time, so a
    first run computes while the next installs); once they exist, one ``tox run`` brings
    them all up to date and ``ensure`` then passes over them; an interpreter this machine
    lacks has no ``env_python``."""
    (tmp_path / "tox.ini").write_text(TWO_ENVS)
    monkeypatch.setattr(toxenv, "RUN_LOCK", tmp_path / "tox-run.lock")
    monkeypatch.setattr(toxenv, "_ENSURED", set())
    found = toxenv.config(["a", "old"], cwd=tmp_path)
    assert found["a"]["env_dir"] == str(tmp_path / ".tox" / "a")
    assert found["a"]["env_python"] == str(tmp_path / ".tox" / "a" / "bin" / "python")
    assert "env_python" not in found["old"], found
    logged = []
    assert toxenv.ensure_existing(["a", "b"], logged.append, cwd=tmp_path) == []
    assert not logged and toxenv._ENSURED == set()
    created = toxenv.stream([sys.executable, "-m", "tox", "run", "-e", "a,b", "--notest"],
                            "a,b", lambda line: None, cwd=tmp_path)
    assert created[0] == 0, created[1]
    assert toxenv.ensure_existing(["a", "b", "old"], logged.append, cwd=tmp_path) == ["a", "b"]
    assert toxenv._ENSURED == {"a", "b"} and "tox run -e a,b --notest" in logged[0], logged
    monkeypatch.setattr(toxenv, "_ensure", lambda env, log: pytest.fail(f"ran tox for {env}"))
    assert toxenv.ensure("a") == 0.0


def test_tox_runs_take_turns_across_processes(tmp_path, monkeypatch):
    """Two processes that bring environments up to date (the matrix, a bench started by
    hand): a ``tox run`` in one waits while the other holds the checkout's lock."""
    import time

    lock = tmp_path / "tox-run.lock"
    monkeypatch.setattr(toxenv, "RUN_LOCK", lock)
    hold = ("import sys, time\nfrom pathlib import Path\nfrom conformance.results import "
            "file_lock\nwith file_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n"
            "    time.sleep(1.5)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with toxenv._tox_run_turn():
        waited = time.monotonic() - start
    assert holder.wait(timeout=60) == 0 and waited >= 1.0, waited


def test_schedule_is_longest_first(monkeypatch):
    """Ports run longest first: by their recorded seconds, and on a fresh clone (no records)
    the JAX ports (they compile every case) first, then the other training ports."""
    from conformance import matrix
    from conformance.registry import PORTS

    seconds: dict[str, float] = {}

    def read(port):
        cases = [{"seconds": seconds[port]}] if port in seconds else []
        return ({"cases": cases} if cases else None), {}

    monkeypatch.setattr(matrix.results, "read", read)
    ports = list(PORTS)[:10]
    order = matrix.schedule(ports)
    jax_ports = [p for p in ports if PORTS[p].compiles]
    assert sorted(order[:2]) == sorted(jax_ports) == ["flax", "keras-jax"]
    training = [p for p in ports if PORTS[p].training and not PORTS[p].compiles]
    assert order[2:2 + len(training)] == training  # registry order among equals
    assert set(order[2 + len(training):]) == {"numpy", "opencv", "onnxruntime"}
    seconds.update({"opencv": 900.0, "flax": 10.0})
    assert matrix.schedule(ports)[:2] == ["opencv", "flax"]


def test_help_says_what_ports_accepts(capsys):
    """``--ports`` takes built-in names, entry-point names and module paths: --help says
    so, naming every built-in port and the entry-point group."""
    from conformance import matrix
    from conformance.registry import BUILT_IN, ENTRY_POINTS

    with pytest.raises(SystemExit) as exit_:
        matrix.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "built-in port name (" + ", ".join(p.name for p in BUILT_IN) + ";" in text, text
    assert f"'{ENTRY_POINTS}' entry-point group" in text, text
    assert "dotted module path that imports here and has load() and predict()" in text, text
