"""Framework releases: the drift report between two runs (``python -m devtools.drift``), on
synthetic result folders and on two folders that two ``conformance.collect`` processes wrote,
and the variables that run an environment against another release (tox.ini's ENV-release
twins, their defaults equal to pyproject.toml's extras; the pinned environments unchanged)."""

from __future__ import annotations

import configparser
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance import releases, results
from devtools import drift

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent


# --- the drift report ---------------------------------------------------------------------
def record(case_id: str, kind="golden", dtype="float32", error=None, max_abs=1e-6, **extra):
    name, _, size = case_id.rpartition("-" + dtype)[0].rpartition("-")
    out = {"id": case_id, "port": "flax", "kind": kind, "name": name if kind == "golden"
           else case_id.rsplit("-", 1)[0], "size": int(size) if kind == "golden" else 0,
           "dtype": dtype, "error": error}
    if error is None:
        out.update(max_abs=max_abs, max_rel=max_abs, atol=1e-4, rtol=0.0, ok=True,
                   top5_agree=2, images=2)
    out.update(extra)
    return out


def write_run(folder: Path, versions: dict, cases: list[dict], logits: dict, code="c0") -> None:
    folder.mkdir(parents=True)
    doc = {"schema": results.SCHEMA, "port": "flax",
           "key": {"code": code, "shared": "s0", "environment": json.dumps(versions)},
           "python": "3.11.7", "platform": "Linux", "versions": versions, "variables": {},
           "cases": cases}
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in logits.items()})
    doc["logits_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()  # as results.write
    (folder / "flax.json").write_text(json.dumps(doc))
    (folder / "flax.npz").write_bytes(buffer.getvalue())
    (folder / "matrix.json").write_text(json.dumps({"schema": 1, "records": []}))  # not a port


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    base = {c: rng.normal(0, 3, (2, 10)) for c in
            ("1_1-p0-none-224-float32", "1_1-p0-none-224-float64", "1_0-p1-none-227-float32",
             "caffe-real-v1_0-float32", "only-a-224-float32")}
    other = {k: v.copy() for k, v in base.items() if k != "only-a-224-float32"}
    other["1_1-p0-none-224-float32"][1, 3] += 2.5e-5       # drift, within 1e-4
    low = int(other["1_0-p1-none-227-float32"][0].argmin())
    other["1_0-p1-none-227-float32"][0, low] += 100.0      # beyond it, a new top-1 class
    cases_a = [record("1_1-p0-none-224-float32"), record("1_1-p0-none-224-float64", "golden",
               "float64", max_abs=2e-14), record("1_0-p1-none-227-float32"),
               record("caffe-real-v1_0-float32", "fixture"), record("only-a-224-float32"),
               record("grad-1_1-p0-none-40-float32", "grad", max_abs=None, max_rel=3e-6),
               record("steps-1_1-p0-none-40-float32", "steps", error="RuntimeError: boom")]
    for c in cases_a:  # training records carry max_rel only, and no logits
        if c["kind"] in ("grad", "steps"):
            c.pop("max_abs", None)
    cases_b = [dict(c) for c in cases_a if c["id"] != "only-a-224-float32"]
    cases_b[-2]["max_rel"] = 5e-6
    cases_b[-1] = record("steps-1_1-p0-none-40-float32", "steps", max_abs=None, max_rel=1e-5)
    cases_b[-1].pop("max_abs")
    cases_b.append(record("only-b-224-float32"))
    va = {"flax": "0.12.0", "jax": "0.9.0", "jaxlib": "0.9.0", "numpy": "2.4.6",
          "optax": "0.2.5", "pytest": "9.2.0"}
    vb = {**va, "flax": "0.12.8", "jax": "0.10.2", "jaxlib": "0.10.2", "optax": "0.2.8"}
    write_run(tmp_path / "old", va, cases_a, base)
    write_run(tmp_path / "new", vb, cases_b,
              {**other, "only-b-224-float32": base["only-a-224-float32"]})
    return tmp_path / "old", tmp_path / "new", base, other


def test_drift_per_case_versions_and_summary(runs):
    a, b, base, other = runs
    report = drift.compare(a, b)
    assert list(report["ports"]) == ["flax"]  # matrix.json is not a port's file
    p = report["ports"]["flax"]
    assert p["versions"] == {"python": ["3.11.7", "3.11.7"], "flax": ["0.12.0", "0.12.8"],
                             "jax": ["0.9.0", "0.10.2"], "jaxlib": ["0.9.0", "0.10.2"],
                             "numpy": ["2.4.6", "2.4.6"], "optax": ["0.2.5", "0.2.8"]}
    assert p["same_code"] and p["only_a"] == ["only-a-224-float32"]
    assert p["only_b"] == ["only-b-224-float32"]
    cases = {c["id"]: c for c in p["cases"]}
    for cid in ("1_1-p0-none-224-float32", "1_0-p1-none-227-float32"):
        expected = np.abs(base[cid].astype(np.float32).astype(np.float64)
                          - other[cid].astype(np.float32).astype(np.float64)).max()
        assert cases[cid]["max_abs"] == pytest.approx(expected, rel=1e-12)
        assert cases[cid]["drift"] == cases[cid]["max_abs"]  # float32: exact
    assert cases["1_1-p0-none-224-float32"]["max_abs"] == pytest.approx(2.5e-5, rel=0.05)
    assert cases["1_1-p0-none-224-float32"]["top1_same"] == 2
    assert cases["1_0-p1-none-227-float32"]["top1_same"] == 1
    assert cases["caffe-real-v1_0-float32"]["identical"]
    f64 = cases["1_1-p0-none-224-float64"]  # identical stored logits: bounded by the records
    assert f64["max_abs"] == 0 and f64["bound"] == pytest.approx(4e-14)
    assert f64["drift"] == pytest.approx(4e-14) and f64["resolution"] > 1e-7
    s = p["summary"]
    assert s["float32"]["cases"] == 3 and s["float32"]["worst"] == "1_0-p1-none-227-float32"
    assert s["float32"]["identical"] == 1 and s["float32"]["top1_changed"] == 1
    assert s["float32"]["beyond_tolerance"] == 1
    assert s["float64"]["drift"] == pytest.approx(4e-14)
    assert s["training"] == {"cases": 1, "max_error_a": 3e-6, "max_error_b": 5e-6,
                             "max_error_change": pytest.approx(2e-6)}
    assert s["failed"] == ["steps-1_1-p0-none-40-float32"]


def test_drift_command_prints_writes_json_and_plot(runs, tmp_path):
    a, b, _, _ = runs
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "devtools.drift", str(a), str(b),
                           "--labels", "jax 0.9.0,pinned", "--json", str(tmp_path / "d.json"),
                           "--plot", str(tmp_path / "d.png")], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "A = jax 0.9.0" in out and "B = pinned" in out
    assert re.search(r"jax\s+0\.9\.0 \| 0\.10\.2\s+<- differs", out)
    assert re.search(r"numpy\s+2\.4\.6 \| 2\.4\.6$", out, re.M)
    assert not re.search(r"^  pytest ", out, re.M)  # the same in both: not shown
    assert re.search(r"1_1-p0-none @224\s+float32\s+2\.5e-05", out)
    assert "summary float32: 3 cases, |A - B| 1.00e+02 (1_0-p1-none-227-float32)" in out
    assert "1 top-1 changes, 1 beyond the tolerance" in out
    assert "only in A: 1 cases (only-a-224-float32)" in out
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["schema"] == drift.SCHEMA and report["a"]["label"] == "jax 0.9.0"
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drift_refuses_what_it_cannot_compare(runs, tmp_path, capsys):
    a, _, _, _ = runs
    (tmp_path / "empty").mkdir()
    assert drift.main([str(a), str(tmp_path / "empty")]) == 2
    assert "no port in common" in capsys.readouterr().err
    assert drift.main([str(a), str(tmp_path / "absent")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert drift.main([str(a), str(a), "--ports", "torch"]) == 2
    assert "no result files for torch" in capsys.readouterr().err


def test_different_code_is_said(runs, tmp_path):
    a, b, _, _ = runs
    shutil.copytree(b, tmp_path / "other-code")
    doc = json.loads((tmp_path / "other-code" / "flax.json").read_text())
    doc["key"]["code"] = "c1"
    (tmp_path / "other-code" / "flax.json").write_text(json.dumps(doc))
    report = drift.compare(a, tmp_path / "other-code")
    assert not report["ports"]["flax"]["same_code"]
    assert "different code" in drift.text(report)


# --- two real runs ------------------------------------------------------------------------
PORT_MODULE = """
import os

import numpy as np
from ports import numpy as ref
from ports.numpy import activations, load

DTYPES = ("float32",)
SCALE = float(os.environ["DRIFT_SCALE"])  # what a framework release would change


def predict(model, x):
    return np.asarray(ref.predict(model, x)) * SCALE
"""
CASES = ("1_1-p0-none-224-float32", "1_0-p1-simple-227-float32")


def collect_run(tmp_path: Path, name: str, scale: float) -> tuple[Path, object]:
    """``python -m conformance.collect driftport.port`` in a process of its own: the NumPy
    reference in float32, its logits times ``scale`` (an environment variable, as a
    framework release would change them: the port's code, part of the record's key, is the
    same in both runs); results in ``tmp_path/name``."""
    package = tmp_path / f"src-{name}" / "driftport"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "port.py").write_text(PORT_MODULE)
    out = tmp_path / name
    env = {k: v for k, v in os.environ.items() if k not in releases.ALL}
    env.update(SQUEEZENET_RESULTS=str(out), PYTHONPATH=os.pathsep.join([str(package.parent),
                                                                        str(ROOT)]),
               DRIFT_SCALE=repr(scale))
    argv = [sys.executable, "-m", "conformance.collect", "driftport.port"]
    for case in CASES:
        argv += ["--case", case]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    return out, proc


def test_drift_between_two_collect_processes(tmp_path):
    exact, proc_a = collect_run(tmp_path, "exact", 1.0)
    assert proc_a.returncode == 0, proc_a.stdout + proc_a.stderr
    scaled, proc_b = collect_run(tmp_path, "scaled", 1.0 + 2e-5)  # beyond 1e-4 on big logits
    report = drift.compare(exact, scaled)
    p = report["ports"]["driftport.port"]
    assert report["a"]["label"] == report["b"]["label"] == "pinned"
    assert p["same_code"] and p["versions"]["numpy"][0] == p["versions"]["numpy"][1]
    cases = {c["id"]: c for c in p["cases"]}
    assert sorted(cases) == sorted(CASES)
    for case_id in CASES:
        a = results.read("driftport.port", exact)[1][case_id].astype(np.float64)
        b = results.read("driftport.port", scaled)[1][case_id].astype(np.float64)
        c = cases[case_id]
        assert c["max_abs"] == np.abs(a - b).max() > 0
        assert c["max_abs"] == pytest.approx(2e-5 * np.abs(a).max(), rel=0.05)
        assert c["error_a"] < 1e-4 and c["error_b"] > c["error_a"]  # each against the golden
        assert c["top1_same"] == c["images"] == 8
    s = p["summary"]["float32"]
    assert s["cases"] == 2 and s["drift"] == max(c["max_abs"] for c in cases.values())
    text = drift.text(report)
    assert f"summary float32: 2 cases, |A - B| {s['drift']:.2e} ({s['worst']})" in text


# --- the variables ------------------------------------------------------------------------
RELEASE_PIN = re.compile(r"^release: ([A-Za-z0-9_.\-\[\]]+)==\{env:(SQUEEZENET_[A-Z]+_VERSION):"
                         r"([^}]+)\}$")


def tox_ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    return ini


def lines(ini, section: str, key: str) -> list[str]:
    """A key's lines, ``{[testenv]deps}`` expanded, factor conditions left as written."""
    out = []
    for line in ini[section].get(key, "").splitlines():
        line = line.strip()
        if line == "{[testenv]deps}":
            out += [x.strip() for x in ini["testenv"]["deps"].splitlines() if x.strip()]
        elif line:
            out.append(line)
    return out


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[=<>!~;]", requirement)[0]


def test_every_framework_env_has_a_release_twin_pinned_by_default():
    ini = tox_ini()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    seen = set()
    for env, variables in releases.VARIABLES.items():
        section = f"testenv:{env}{{,-release}}"
        assert section in ini, f"tox.ini has no [{section}]"
        deps = lines(ini, section, "deps")
        pins = {}
        for line in deps:
            m = RELEASE_PIN.match(line)
            if m:
                pins[requirement_name(m.group(1))] = (m.group(1), m.group(2), m.group(3))
        # the variables of releases.py, each pin's default the extra's pin
        assert {d: v for d, (_, v, _) in pins.items()} == variables, env
        extra = "onnx" if env == "onnx" else env
        pinned = {requirement_name(r): r for r in extras[extra]}
        plain = {d.removeprefix("release: ") for d in deps
                 if not d.startswith("!release:") and "{env:" not in d}
        for dist, (requirement, _, default) in pins.items():
            if dist in pinned:
                assert pinned[dist] == f"{requirement}=={default}", (env, dist)
            else:  # torchvision: the pinned env has it in deps, not from the extra
                assert f"!release: {requirement}=={default}" in deps, (env, dist)
        # every other exact pin of the extra, the release env installs too
        for requirement in extras[extra]:
            if "==" in requirement and requirement_name(requirement) not in pins:
                assert requirement in plain, (env, requirement)
        # the pinned env installs the extra, the release env does not
        assert lines(ini, section, "extras")[-1] == f"!release: {extra}", env
        # its own directory per release; the pinned env's is tox's default one
        env_dir = lines(ini, section, "env_dir")
        assert env_dir[0] == "!release: {work_dir}{/}{env_name}", env
        for _, var, default in pins.values():
            assert f"{{env:{var}:{default}}}" in env_dir[1], (env, var)
        seen |= set(variables.values())
    assert seen == set(releases.ALL)
    readme = (ROOT / "README.md").read_text()
    for var in releases.ALL:  # every variable is documented
        assert var in readme, var


def tox_config(env: str, **variables) -> dict[str, list[str] | str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in releases.ALL and not k.startswith("TOX_") and k != "VIRTUAL_ENV"}
    proc = subprocess.run([sys.executable, "-m", "tox", "config", "-e", env, "-k", "deps",
                           "extras", "env_dir"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**clean, **variables})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out: dict[str, list[str] | str] = {}
    for key in ("deps", "extras"):
        found = re.search(rf"^{key} =(.*)\n((?:  .*\n?)*)", proc.stdout, re.M)
        out[key] = (found.group(1).split() + found.group(2).split()) if found else []
    out["env_dir"] = re.search(r"^env_dir = (.*)$", proc.stdout, re.M).group(1)
    return out


def test_tox_config_pinned_unchanged_and_the_release_in_its_own_directory():
    for variables in ({}, {"SQUEEZENET_JAX_VERSION": "0.9.0", "SQUEEZENET_FLAX_VERSION": ""}):
        pinned = tox_config("flax", **variables)  # an empty or unrelated variable: as today
        assert Path(pinned["env_dir"]) == ROOT / ".tox" / "flax"
        assert "flax" in pinned["extras"]
        assert not any(d.startswith(("flax", "jax")) for d in pinned["deps"])
    default = tox_config("flax-release")
    assert "flax==0.12.8" in default["deps"] and "jax[cpu]==0.10.2" in default["deps"]
    assert Path(default["env_dir"]) == ROOT / ".tox" / "flax-release" / "jax-0.10.2-flax-0.12.8"
    other = tox_config("flax-release", SQUEEZENET_JAX_VERSION="0.9.0",
                       SQUEEZENET_FLAX_VERSION="0.12.0")
    assert "flax==0.12.0" in other["deps"] and "jax[cpu]==0.9.0" in other["deps"]
    assert "flax" not in other["extras"] and "flax==0.12.8" not in other["deps"]
    assert Path(other["env_dir"]) == ROOT / ".tox" / "flax-release" / "jax-0.9.0-flax-0.12.0"
    torch = tox_config("keras-torch-release", SQUEEZENET_TORCH_VERSION="2.12.0")
    assert "torch==2.12.0" in torch["deps"] and "keras==3.15.1" in torch["deps"]
    assert Path(torch["env_dir"]) == (ROOT / ".tox" / "keras-torch-release"
                                      / "keras-3.15.1-torch-2.12.0")


def test_the_variables_choose_the_env_the_results_folder_and_are_checked():
    env = {"SQUEEZENET_JAX_VERSION": "0.9.0", "SQUEEZENET_FLAX_VERSION": "0.12.0",
           "SQUEEZENET_MXNET_VERSION": ""}
    assert releases.tox_env("flax", env) == "flax-release"
    assert releases.tox_env("keras-jax", env) == "keras-jax-release"
    assert releases.tox_env("torch", env) == "torch"  # not its framework
    assert releases.tox_env("mxnet", env) == "mxnet"  # empty: unset
    assert releases.tox_env("flax", {}) == "flax" and releases.tox_env("core", env) == "core"
    assert releases.label(env) == "flax-0.12.0_jax-0.9.0"
    assert releases.results_folder(Path("b"), {}) == Path("b")
    assert releases.results_folder(Path("b"), env) == Path("b/release/flax-0.12.0_jax-0.9.0")
    installed = {"flax": "0.12.8", "jax": "0.10.2", "torch": "2.13.0+cpu"}
    assert releases.mismatches(installed, {"SQUEEZENET_TORCH_VERSION": "2.13.0"}) == []
    assert releases.mismatches(installed, env) == [
        "flax 0.12.8 installed, SQUEEZENET_FLAX_VERSION=0.12.0",
        "jax 0.10.2 installed, SQUEEZENET_JAX_VERSION=0.9.0"]
    # a process given the variables writes to the release's folder, unless told otherwise
    code = "from conformance.harness import RESULTS; print(RESULTS)"
    clean = {k: v for k, v in os.environ.items() if k not in releases.ALL
             and k != "SQUEEZENET_RESULTS"}
    for extra, expected in (({}, ROOT / "build" / "conformance"),
                            (env, ROOT / "build" / "conformance" / "release"
                             / "flax-0.12.0_jax-0.9.0"),
                            ({**env, "SQUEEZENET_RESULTS": "/tmp/x"}, Path("/tmp/x"))):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**clean, **extra, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                             timeout=120, check=True).stdout.strip()
        assert Path(out) == expected
