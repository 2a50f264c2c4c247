"""The package as a user gets it: a wheel installed into a fresh virtualenv, used from a
folder outside the checkout, through its console scripts and ``python -m`` entry points;
and the conformance suite (``squeezenet-ports[conformance]``) run there on somebody else's
port, an out-of-tree package registered by an entry point or named by its module path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_or_skip

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("convert", "fetch", "classify", "compress")


def _run(cmd: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh virtualenv holding the wheel built from this checkout."""
    tmp = tmp_path_factory.mktemp("installed")
    source = tmp / "source"  # a copy: building writes build/ and *.egg-info beside the code
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("ports", "conformance"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist",
                  source], cwd=tmp)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("squeezenet_ports-*.whl")
    venv.EnvBuilder(with_pip=True).create(tmp / "venv")
    bin_dir = tmp / "venv" / "bin"
    done = _run([bin_dir / "python", "-m", "pip", "install", "-q", f"{wheel}[conformance]",
                 f"numpy=={np.__version__}"], cwd=tmp)
    assert done.returncode == 0, done.stderr
    return bin_dir


def test_console_scripts_and_module_entry_points_answer(installed, tmp_path):
    for name in COMMANDS:
        script = _run([installed / f"squeezenet-{name}", "--help"], cwd=tmp_path)
        assert script.returncode == 0 and "usage:" in script.stdout, (name, script.stderr)
        module = _run([installed / "python", "-m", f"ports.cli.{name}", "--help"],
                      cwd=tmp_path)
        assert module.returncode == 0 and module.stdout == script.stdout, (name, module)


def test_installed_package_is_not_the_checkout(installed, tmp_path):
    where = _run([installed / "python", "-c", "import ports; print(ports.__file__)"],
                 cwd=tmp_path)
    assert where.returncode == 0 and "site-packages" in where.stdout, where.stdout
    # the suite's goldens come along; the fuzzer and the developer tools do not
    probe = ("import importlib.util as u; print([m for m in ('conformance.golden', "
             "'ports.fuzz', 'devtools') if u.find_spec(m)])")
    found = _run([installed / "python", "-c", probe], cwd=tmp_path)
    assert found.stdout.strip() == "['conformance.golden']", found.stdout + found.stderr


def test_installed_commands_convert_and_list(installed, tmp_path):
    net = shared_or_skip("weights/deep-compression/compressed_SqueezeNet.net")
    out = tmp_path / "dc.safetensors"
    done = _run([installed / "squeezenet-convert", net, out], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "SqueezeNet 1_0-p1-none, 52 tensors, 1,248,424 parameters" in done.stdout
    assert out.stat().st_size > 4_000_000
    again = _run([installed / "squeezenet-convert", net, out], cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.startswith("convert: error: ")
    listed = _run([installed / "squeezenet-fetch", "--list"], cwd=tmp_path)
    assert listed.returncode == 0 and "deep-compression-v1.0" in listed.stdout


GOOD = '''"""A third party's SqueezeNet: float32, built on nothing of ours but the weights."""
from ports import numpy as _np_impl

DTYPES = ("float32",)


def load(source, dtype="float32", **kwargs):
    return _np_impl.load(source, dtype)


def predict(model, x, batch_size=32):
    return _np_impl.predict(model, x)
'''

# the planted semantic bug: conv10's padding ignored (torchvision's geometry for Caffe's v1.0)
BAD = GOOD + '''

def load(source, dtype="float32", **kwargs):
    from ports._api import weights
    from ports.spec import Variant

    w = weights(source)
    v = w.variant
    model = _np_impl.SqueezeNet(Variant(v.version, v.num_classes, 0, v.bypass), dtype=dtype)
    model.params = {k: t.astype(dtype) for k, t in w.tensors.items()}
    return model
'''


def _package(root: Path, name: str, code: str) -> Path:
    """An installable package ``name`` whose module ``name.net`` is the port, registered
    as ``name`` in the ``squeezenet_ports.ports`` entry-point group."""
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "net.py").write_text(code)
    (root / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = '
        f'"setuptools.build_meta"\n[project]\nname = "{name}"\nversion = "1.0"\n'
        f'[project.entry-points."squeezenet_ports.ports"]\n{name} = "{name}.net"\n'
        f'[tool.setuptools]\npackages = ["{name}"]\n')
    return root


CASES = ["1_0-p1-none-224-float32", "1_1-p0-none-227-float32"]


@pytest.fixture(scope="module")
def third_party(installed, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("third")
    for name, code in (("goodport", GOOD), ("badport", BAD)):
        src = _package(tmp / name, name, code)
        done = _run([installed / "python", "-m", "pip", "install", "-q", src], cwd=tmp)
        assert done.returncode == 0, done.stderr
    return installed


def _collect(bin_dir: Path, port: str, cwd: Path) -> subprocess.CompletedProcess:
    args = [x for case in CASES for x in ("--case", case)]
    return _run([bin_dir / "python", "-m", "conformance.collect", port, *args], cwd=cwd)


def _expected(bin_dir: Path) -> list[str]:
    """The ids of every case the installed suite expects of goodport."""
    done = _run([bin_dir / "python", "-c", "from conformance.collect import cases; "
                 "print('\\n'.join(c.id for c in cases('goodport')))"], cwd=bin_dir)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_an_out_of_tree_port_passes_through_the_installed_suite(third_party, tmp_path):
    by_entry_point = _collect(third_party, "goodport", tmp_path)
    assert by_entry_point.returncode == 0, by_entry_point.stdout + by_entry_point.stderr
    assert "goodport: 2 / 2 cases agree" in by_entry_point.stdout
    by_module = _collect(third_party, "goodport.net", tmp_path)
    assert by_module.returncode == 0 and "goodport.net: 2 / 2" in by_module.stdout
    doc = (tmp_path / "build" / "conformance" / "goodport.json").read_text()
    assert '"schema": 1' in doc  # the results land under the current directory
    # a record of two of the port's cases stands for no verdict: gathered, it is refused
    gathered = _run([third_party / "python", "-m", "conformance.matrix", "--no-run",
                     "--ports", "goodport"], cwd=tmp_path)
    assert gathered.returncode == 1, gathered.stdout + gathered.stderr
    assert "ports failed to run: goodport" in gathered.stdout
    assert f"2 of {len(_expected(third_party))} cases recorded" in gathered.stdout


def test_a_planted_semantic_bug_fails_with_its_case_named(third_party, tmp_path):
    bad = _collect(third_party, "badport", tmp_path)
    assert bad.returncode == 1
    assert "badport: 1 / 2 cases agree" in bad.stdout
    assert "1_0-p1-none-224-float32: max abs" in bad.stdout and "MISMATCH" in bad.stdout
