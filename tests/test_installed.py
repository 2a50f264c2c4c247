"""The package as a user gets it: a wheel installed into a fresh virtualenv, used from a
folder outside the checkout, through its console scripts and ``python -m`` entry points."""

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
COMMANDS = ("convert", "fetch", "classify")


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
    shutil.copytree(ROOT / "ports", source / "ports",
                    ignore=shutil.ignore_patterns("__pycache__"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist",
                  source], cwd=tmp)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("squeezenet_ports-*.whl")
    venv.EnvBuilder(with_pip=True).create(tmp / "venv")
    bin_dir = tmp / "venv" / "bin"
    done = _run([bin_dir / "python", "-m", "pip", "install", "-q", wheel,
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
