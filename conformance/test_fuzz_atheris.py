"""The atheris engine (``tools/fuzz``'s default), in ``python3 -m tox -e fuzz``: a short
run of every reader, and a planted reader whose crashes, hangs and memory blow-ups it must
catch, keep and let ``tools/fuzz --replay`` reproduce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import atheris  # noqa: F401 - this module is for the environment that has it
import pytest

from ports import formats
from ports.fuzz import atheris_engine, format_summary

ROOT = Path(__file__).resolve().parent.parent
CASES = int(os.environ.get("SQUEEZENET_FUZZ_CASES", "150"))


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_a_short_atheris_run_ends_every_case_in_success_or_weights_error(tmp_path, name):
    s = atheris_engine.fuzz(name, CASES, out=tmp_path, log=lambda _: None, progress_every=0)
    assert s.skipped is None, s.skipped
    assert s.engine == "atheris" and s.cases == CASES, format_summary(s)
    assert not s.crashes, format_summary(s)
    assert s.rejected > 0 and s.ok + s.rejected == CASES
    corpus = sorted((tmp_path / "corpus" / name).iterdir())
    assert len(corpus) >= len(s.seeds), "the seed files are the corpus"


PLANT = """
import time, zlib
import numpy as np
from ports.formats import safetensors as s
real = s.read
def read(path, *, variant=None):
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) % 2:  # the seeds have even sizes
        tag = zlib.crc32(data) % 3
        if tag == 0: raise IndexError('planted')
        if tag == 1: time.sleep(60)
        if tag == 2: np.ones(1 << 34, np.uint8)
    return real(path)
s.read = read
"""


def test_atheris_catches_crashes_hangs_and_memory_blowups_and_they_replay(tmp_path,
                                                                          monkeypatch):
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(PLANT)
    monkeypatch.setenv("PYTHONPATH", f"{plant}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    s = atheris_engine.fuzz("safetensors", 400, timeout=1.0, memory_mb=512, out=tmp_path / "o",
                            log=lambda _: None, progress_every=0, max_crashes=9)
    kinds = {c["kind"] for c in s.crashes}
    assert {"exception", "timeout", "memory"} <= kinds, format_summary(s)
    assert s.cases == s.ok + s.rejected + len(s.crashes) or s.stopped_early
    kept = [Path(c["file"]) for c in s.crashes if "file" in c]
    assert kept and all(p.is_file() and p.name.startswith("safetensors-atheris-") for p in kept)
    by_kind = {c["kind"]: Path(c["file"]) for c in s.crashes if "file" in c}
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz"), "safetensors",
                        "--replay", str(by_kind["exception"]), "--out", str(tmp_path / "r"),
                        "--timeout-per-case", "1"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    outcome = json.loads(r.stdout[:r.stdout.index("\n}") + 2])
    assert outcome["kind"] == "exception" and "planted" in outcome["msg"]
