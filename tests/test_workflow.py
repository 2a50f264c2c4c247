"""The GitHub Actions workflow fits the gathering step, and gathering works on files that
separate processes produced.

A schema check (the ``lint`` environment) proves the workflow is well-formed; it does not
prove the jobs fit together.  These tests read the workflow and check that every port job
runs exactly the port the gathering step expects, in the tox environment it names, and
uploads exactly the files the gathering step reads; then they run the gathering step on
result files computed by another process, as the download step would lay them out.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conformance import results
from conformance.registry import PORTS

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "conformance.yml"
MATRIX_CMD = 'python -m tox -e matrix -- --ports "$PORT"'
GATHER_CMD = "python -m tox -e matrix -- --no-run"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(job: dict) -> list[dict]:
    return job["steps"]


def _step_running(job: dict, command: str) -> dict:
    found = [s for s in _steps(job) if s.get("run", "").strip() == command]
    assert len(found) == 1, f"expected one step running {command!r}, found {len(found)}"
    return found[0]


def _uses(job: dict, action: str) -> list[dict]:
    return [s for s in _steps(job) if s.get("uses", "").split("@")[0] == action]


def _listed() -> dict:
    """What the workflow's ``list`` job hands the others: ``{"ports": [...], "envs": [...]}``."""
    out = subprocess.run([sys.executable, "-m", "conformance.registry", "--github-output"],
                         cwd=ROOT, text=True, capture_output=True, timeout=120, check=True)
    return {k: json.loads(v) for k, v in (line.split("=", 1) for line in out.stdout.splitlines())}


def test_the_job_lists_come_from_the_registry_and_tox_ini(workflow):
    """The port and test jobs are listed by the ``list`` job from the port registry and
    tox.ini: a new port or environment needs no edit here."""
    job = workflow["jobs"]["list"]
    step = _step_running(job, 'python -m conformance.registry --github-output >> '
                              '"$GITHUB_OUTPUT"')
    assert job["outputs"] == {"ports": f"${{{{ steps.{step['id']}.outputs.ports }}}}",
                              "envs": f"${{{{ steps.{step['id']}.outputs.envs }}}}"}
    assert workflow["jobs"]["port"]["needs"] == "list"
    assert workflow["jobs"]["test"]["needs"] == "list"
    assert _listed()["ports"] == list(PORTS)


def test_one_job_per_port_of_the_matrix(workflow):
    port_job = workflow["jobs"]["port"]
    assert port_job["strategy"]["matrix"]["port"] == "${{ fromJSON(needs.list.outputs.ports) }}"
    assert port_job["strategy"]["fail-fast"] is False  # one failing port hides no other


def test_every_test_environment_is_a_job(workflow):
    """What CI runs: every environment of tox.ini's env_list but the matrix (the port and
    gathering jobs) is a job of its own, with the shared ground truth as the ports see it."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    env_list = [e.strip() for e in ini["tox"]["env_list"].split(",")]
    job = workflow["jobs"]["test"]
    assert job["strategy"]["matrix"]["env"] == "${{ fromJSON(needs.list.outputs.envs) }}"
    assert _listed()["envs"] == [e for e in env_list if e != "matrix"]
    assert job["strategy"]["fail-fast"] is False
    step = _step_running(job, 'python -m tox -e "$ENV"')
    assert step["env"]["ENV"] == "${{ matrix.env }}"
    assert len([s for s in _steps(job) if s.get("with", {}).get("path") == "shared"]) == 1
    # with the ground-truth repository a missing file fails; without it, "not run"
    assert workflow["env"]["SQUEEZENET_REQUIRE_SHARED"] == \
        "${{ vars.SQUEEZENET_SHARED_REPO != '' && '1' || '0' }}"


def test_port_jobs_run_the_main_job_for_their_port(workflow):
    job = workflow["jobs"]["port"]
    step = _step_running(job, MATRIX_CMD)
    assert step["env"]["PORT"] == "${{ matrix.port }}"
    # `tox -e matrix` is what runs conformance.matrix, and it takes --ports / --no-run
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    assert ini["testenv:matrix"]["commands"].strip() == "python -m conformance.matrix {posargs}"


def test_uploaded_files_are_what_gathering_reads(workflow, tmp_path):
    job = workflow["jobs"]["port"]
    (upload,) = [s for s in _uses(job, "actions/upload-artifact")]
    assert upload["if"] == "always()"  # a failing port still hands over its results
    paths = upload["with"]["path"].strip().splitlines()
    assert upload["with"]["name"] == "results-${{ matrix.port }}"
    for port in PORTS:
        expected = [p.relative_to(tmp_path).as_posix() for p in results.paths(port, tmp_path)]
        assert [p.replace("${{ matrix.port }}", port) for p in paths] == \
            [f"build/conformance/{e}" for e in expected]
    # ... and build/conformance is where the matrix looks by default
    from conformance.harness import RESULTS
    if "SQUEEZENET_RESULTS" not in os.environ:
        assert RESULTS == ROOT / "build" / "conformance"


def test_gathering_job_downloads_every_port_and_gathers(workflow):
    job = workflow["jobs"]["matrix"]
    assert job["needs"] == "port" and job["if"] == "always()"
    (download,) = _uses(job, "actions/download-artifact")
    assert download["with"]["pattern"] == "results-*"
    assert download["with"]["path"] == "build/conformance"
    assert download["with"]["merge-multiple"] is True
    gather = _step_running(job, GATHER_CMD)
    assert _steps(job).index(gather) > _steps(job).index(download)
    # both jobs see the shared ground truth the same way, or neither does
    for name in ("port", "matrix"):
        assert len([s for s in _steps(workflow["jobs"][name])
                    if s.get("with", {}).get("path") == "shared"]) == 1
    assert workflow["env"]["SQUEEZENET_SHARED"] == "${{ github.workspace }}/shared"


def _python(*args: str, results_dir: Path, **extra: str) -> subprocess.CompletedProcess:
    # the shared folder these tests name is empty on purpose: its cases are not run (CI's
    # SQUEEZENET_REQUIRE_SHARED=1 would make that an error)
    env = {**{k: v for k, v in os.environ.items() if k != "SQUEEZENET_REQUIRE_SHARED"},
           "SQUEEZENET_RESULTS": str(results_dir), "PYTHONPATH": str(ROOT), **extra}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)


CASE = "1_1-p0-none-224-float64"


TINY = '''"""An out-of-tree port that answers every golden case with the golden logits."""
from conformance import golden


def load(weights, dtype="float32", fast=True):
    return weights.variant.id


def predict(model, x):
    return golden.load(model, x.shape[-1]).astype("float32")
'''


def test_gathering_results_made_by_another_process(tmp_path):
    """A port's complete record, made by another process and laid out as the download step
    does, gathers with every expected case (the real-weights ones listed as not run here,
    without the shared ground truth); the same record missing one case does not."""
    from conformance.collect import cases

    (tmp_path / "src" / "tinyout").mkdir(parents=True)
    (tmp_path / "src" / "tinyout" / "__init__.py").write_text("")
    (tmp_path / "src" / "tinyout" / "net.py").write_text(TINY)
    (tmp_path / "shared").mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path / "src")]),
           "SQUEEZENET_SHARED": str(tmp_path / "shared")}
    port, job_dir, gathered = "tinyout.net", tmp_path / "job", tmp_path / "gathered"
    made = _python("conformance.collect", port, results_dir=job_dir, **env)
    assert made.returncode == 0, made.stdout + made.stderr
    gathered.mkdir()  # what actions/download-artifact with merge-multiple does
    for path in results.paths(port, job_dir):
        shutil.copy(path, gathered / path.name)
    out = _python("conformance.matrix", "--no-run", "--ports", port, results_dir=gathered,
                  **env)
    assert out.returncode == 0, out.stdout + out.stderr
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        expected = [c.id for c in cases(port)]
    finally:
        sys.path.remove(str(tmp_path / "src"))
    from conformance.fixtures import FIXTURES

    real = tuple(f.name for f in FIXTURES if f.files)  # they read the shared ground truth
    ran = [c for c in expected if not c.startswith(real)]
    assert f"{len(ran)} / {len(ran)} cases agree, {len(expected) - len(ran)} not run; " \
        f"ports failed to run: none" in out.stdout, out.stdout
    summary = json.loads((gathered / "matrix.json").read_text())
    assert sorted(r["id"] for r in summary["records"]) == sorted(ran)
    assert sorted(r["id"] for r in summary["not_run"]) == sorted(set(expected) - set(ran))
    doc = json.loads((gathered / f"{port}.json").read_text())
    doc["cases"] = doc["cases"][1:]
    (gathered / f"{port}.json").write_text(json.dumps(doc))
    out = _python("conformance.matrix", "--no-run", "--ports", port, results_dir=gathered,
                  **env)
    assert out.returncode == 1
    assert f"{len(expected) - 1} of {len(expected)} cases recorded; not recorded: " \
        f"{sorted(expected)[0]}" in out.stdout, out.stdout


def test_gathering_refuses_results_of_other_code_and_missing_ports(tmp_path):
    job_dir = tmp_path / "job"
    made = _python("conformance.collect", "numpy", "--case", CASE, results_dir=job_dir)
    assert made.returncode == 0, made.stdout + made.stderr
    doc_path = results.paths("numpy", job_dir)[0]
    doc = json.loads(doc_path.read_text())
    doc["key"]["code"] = "0" * 64  # as if an older commit's job had made it
    doc_path.write_text(json.dumps(doc))
    out = _python("conformance.matrix", "--no-run", "--ports", "numpy,torch",
                  results_dir=job_dir)
    assert out.returncode == 1
    assert "ports failed to run: numpy, torch" in out.stdout
    assert "computed from other code than this checkout's" in out.stdout
    assert "torch: no results in" in out.stdout


def test_a_test_session_that_reuses_every_record_leaves_the_file_alone(tmp_path):
    """The port test modules record what they compute when the session ends (the
    ``recorders`` fixture); a session that only reused current records must not rewrite the
    file (the matrix, gathering beside the tests, once found its run's record replaced):
    the second run of the same case leaves the file byte for byte as the first wrote it."""
    env = {**{k: v for k, v in os.environ.items() if k != "SQUEEZENET_REQUIRE_SHARED"},
           "SQUEEZENET_RESULTS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "conformance/test_numpy.py", "-k", f"TestNumpy and {CASE}"]
    written = []
    for _ in range(2):
        done = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True,
                              timeout=600)
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
        path = tmp_path / "numpy.json"
        written.append((path.read_bytes(), path.stat().st_mtime_ns))
    assert written[1] == written[0]
    assert [r["id"] for r in json.loads(written[0][0])["cases"]] == [CASE]
