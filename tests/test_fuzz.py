"""A short run of the home-made mutation engine (``tools/fuzz``'s default) over every reader
(``tools/fuzz`` runs the long ones; ``conformance/test_fuzz_atheris.py`` tests the atheris
engine in ``tox -e fuzz``), the rules both engines judge cases by, property tests of the
safetensors decoder, and the command line."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ports import formats, fuzz
from ports.errors import WeightsError
from ports.formats import safetensors
from ports.fuzz import atheris_engine, outcome

ROOT = Path(__file__).resolve().parent.parent
CASES = int(os.environ.get("SQUEEZENET_FUZZ_CASES", "150"))
NAMES = list(formats.FORMATS)


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory) -> dict:
    """One short campaign per codec, two at a time (each is mostly a worker subprocess,
    so threads are enough)."""
    out = tmp_path_factory.mktemp("fuzz")
    names = NAMES

    def one(name):
        return fuzz.fuzz(name, CASES, seed=0, out=out / name, log=lambda _: None,
                         progress_every=0)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(names, pool.map(one, names)))


@pytest.mark.parametrize("name", NAMES)
def test_short_fuzz_run_ends_every_case_in_success_or_weights_error(campaigns, name):
    s = campaigns[name]
    assert s.skipped is None, f"{name} cannot be fuzzed: {s.skipped}"
    assert s.cases == CASES
    assert not s.crashes, fuzz.format_summary(s)
    assert s.rejected > 0 and s.ok + s.rejected == CASES


# Cases that crashed a reader in earlier runs, by format: {seed: [case, ...]} (one or two per
# distinct crash; `tools/fuzz FORMAT --seed S --start I --cases 1` reruns one).  They are
# regenerated from the codec's own seed files, so they stay exact while its writer's output
# does not change.
KNOWN_CRASHERS = {
    "torch": {0: [266], 1: [972, 4023, 149, 912, 4151]},
    "onnx": {1: [393, 1623, 4661, 4601, 3872]},
    "mxnet": {1: [16656]},
    "keras": {0: [8, 11, 12, 66, 153, 181], 1: [22, 37, 42]},
    "chainer": {0: [6, 22, 116, 159]},
    "keras-h5": {0: [5082, 13831]},  # a string encoding that does not exist (h5py: TypeError)
}


@pytest.mark.parametrize("name", sorted(KNOWN_CRASHERS))
def test_cases_that_once_crashed_a_reader_now_end_in_success_or_weights_error(tmp_path, name):
    found = []
    for seed, cases in KNOWN_CRASHERS[name].items():
        s = fuzz.fuzz(name, 0, seed=seed, indices=cases, timeout=5.0, out=tmp_path,
                      log=lambda _: None, progress_every=0, hostile=False)
        assert s.skipped is None, s.skipped
        found += [f"--seed {seed} case {c['case']}: {c['kind']}: {c['msg']}" for c in s.crashes]
    assert not found, "\n".join(found)


def test_a_relative_out_folder_keeps_the_companion_files_in_reach(tmp_path, monkeypatch):
    """A case of a two-file format reads its mutated symbol file beside copies of the
    seed's params file; with ``--out`` relative to the caller's folder those links once
    dangled, and every case that got past the JSON was rejected for a missing params file."""
    monkeypatch.chdir(tmp_path)
    s = fuzz.fuzz("mxnet-export", 0, indices=range(40), out=Path("relative"),
                  log=lambda _: None, progress_every=0)
    assert not s.crashes, fuzz.format_summary(s)
    assert not [c for c in s.classes if "is missing" in c], fuzz.format_summary(s)
    assert any("does not match the symbol file" in c for c in s.classes), \
        fuzz.format_summary(s)


def test_a_type_error_of_our_own_in_an_hdf5_reader_stays_a_bug(tmp_path):
    """h5py's TypeError on a datatype it cannot map is the file's damage; a TypeError
    raised by our own parsing code is not, and must not be reported as a bad file."""
    import h5py

    from ports.formats import _hdf5

    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.attrs["x"] = 1

    def ours(f):
        raise TypeError("a bug of ours")

    with pytest.raises(TypeError, match="a bug of ours"):
        _hdf5.opened(str(path), None, ours, "keras")


def test_cases_are_deterministic_and_differ_between_seeds(tmp_path):
    seeds = fuzz.build_seeds("safetensors", tmp_path, log=lambda _: None)
    a = fuzz.Mutator(seeds, "safetensors", 7)
    b = fuzz.Mutator(seeds, "safetensors", 7)
    c = fuzz.Mutator(seeds, "safetensors", 8)
    for i in (0, 1, 99, 12345):
        assert a.case(i) == b.case(i)
    assert [a.case(i)[1] for i in range(5)] != [c.case(i)[1] for i in range(5)]
    # Most mutations land on structure (the header), not in the float data.
    header_end = 8 + struct.unpack("<Q", seeds[0].path.read_bytes()[:8])[0]
    hot = seeds[0].hot
    assert len(hot) > 1000 and (hot < header_end + 64).mean() > 0.95


def test_the_engine_reports_crashes_hangs_and_memory_blowups(tmp_path, monkeypatch):
    """A planted reader that misbehaves on chosen inputs is caught three ways, its inputs
    are saved, and the campaign goes on in a fresh worker."""
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(
        "import signal, time, zlib\n"
        "import numpy as np\n"
        "from ports.formats import safetensors as s\n"
        "real = s.read\n"
        "def read(path, *, variant=None):\n"
        "    data = open(path, 'rb').read()\n"
        "    tag = zlib.crc32(data) % 24 if 'seeds' not in str(path) else 0\n"
        "    if tag == 1: raise IndexError('planted')\n"
        "    if tag == 2: time.sleep(60)\n"
        "    if tag == 3: np.ones(1 << 34, np.uint8)\n"
        "    if tag == 4:\n"
        "        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
        "        time.sleep(60)\n"
        "    return real(path)\n"
        "s.read = read\n")
    monkeypatch.setenv("PYTHONPATH", f"{plant}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    # The first case index of each misbehaviour (cases are a pure function of the seeds).
    seeds = fuzz.build_seeds("safetensors", tmp_path / "o" / "seeds", log=lambda _: None)
    mutator = fuzz.Mutator(seeds, "safetensors", 11)
    first: dict[int, int] = {}
    for i in range(1000):
        tag = zlib.crc32(mutator.case(i)[1]) % 24
        if tag in (1, 2, 3, 4):
            first.setdefault(tag, i)
        if len(first) == 4:
            break
    cases = max(first.values()) + 1
    s = fuzz.fuzz("safetensors", cases, seed=11, timeout=1.0, memory_mb=512,
                  out=tmp_path / "o", log=lambda _: None, progress_every=0)
    kinds = {c["case"]: c["kind"] for c in s.crashes}
    assert kinds[first[1]] == "exception" and kinds[first[2]] == "timeout", kinds
    assert kinds[first[3]] == "memory" and kinds[first[4]] == "hang/killed", kinds
    assert s.ok + s.rejected + len(s.crashes) == cases
    saved = [c for c in s.crashes if "file" in c]
    assert saved and all(Path(c["file"]).is_file() for c in saved)
    assert all(Path(c["file"]).with_suffix(".txt").is_file() or
               Path(str(c["file"]).rsplit(".", 1)[0] + ".txt").is_file() for c in saved)


def test_tools_fuzz_command_line(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "fuzz")]
    r = subprocess.run([*tool, "safetensors", "--cases", "20",
                        "--seed", "1", "--out", str(tmp_path), "--progress", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "safetensors: 20 cases" in r.stdout and "0 crashes" in r.stdout
    summary = json.loads((tmp_path / "summary-safetensors-mutation-s1.json").read_text())
    assert summary["cases"] == 20 and summary["crashes"] == []
    assert summary["engine"] == "mutation"
    bad = subprocess.run([*tool, "nonsense"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown format" in bad.stderr
    if atheris_engine.available() is not None:  # one line that says where atheris is
        r = subprocess.run([*tool, "safetensors", "--engine", "atheris", "--cases", "1",
                            "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "atheris is not installed" in r.stderr, r.stderr
        assert "tox -e fuzz" in r.stderr


def test_the_fuzzer_is_not_part_of_the_installed_package():
    """The fuzzer sits beside the converter, in ``ports/fuzz/`` (left out of the wheel:
    ``tests/test_installed.py``); nothing else in ports/ imports it, nor the suite."""
    assert not (ROOT / "ports" / "cli" / "fuzz.py").exists()
    imports = re.compile(r"^\s*(from|import)\s+(conformance|devtools|\.+fuzz|ports\.fuzz)\b",
                         re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "ports").rglob("*.py")
                 if "fuzz" not in p.relative_to(ROOT).parts and imports.search(p.read_text())]
    assert not offenders, offenders


# --- how a case is judged (both engines) -------------------------------------------------------
def _raised(e: BaseException) -> BaseException:
    try:
        raise e
    except BaseException as caught:  # noqa: BLE001 - to get a traceback
        return caught


def test_a_weights_error_is_a_rejection_and_anything_else_a_crash():
    r = outcome.classify(_raised(WeightsError("bad header 12", path="x", format="f")))
    assert r == {"status": "rejected", "cls": "bad header N", "msg": "x (f): bad header 12"}
    assert not outcome.is_crash(WeightsError("bad"))
    for e, kind in ((IndexError("i"), "exception"), (MemoryError(), "memory"),
                    (outcome.CaseTimeout("late"), "timeout")):
        r = outcome.classify(_raised(e))
        assert r["status"] == "crash" and r["kind"] == kind and r["tb"], r
        assert outcome.is_crash(e)


def test_a_memory_error_turned_into_a_weights_error_is_still_a_crash():
    def reader():
        try:
            raise MemoryError("4 GiB")
        except MemoryError as e:
            raise WeightsError("cannot read") from e

    e = _raised_by(reader)
    assert outcome.is_crash(e)
    r = outcome.classify(e)
    assert r["kind"] == "memory" and "MemoryError" in r["tb"]


def _raised_by(f) -> BaseException:
    try:
        f()
    except BaseException as e:  # noqa: BLE001
        return e
    raise AssertionError("did not raise")


def test_an_atheris_crash_file_is_renamed_noted_and_replayable(tmp_path):
    """libFuzzer's ``crash-SHA1`` becomes ``FORMAT-atheris-KIND-SHA{ext}`` with a note that
    says how to replay it, and ``tools/fuzz --replay`` reads it like any case (this needs
    no atheris: the file is only bytes)."""
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    artifact = crashes / "safetensors-atheris-crash-0123"
    artifact.write_bytes(b"\x08" + bytes(7) + b"{}")
    crash = {"artifact": str(artifact), "kind": "exception", "case": 7, "log": "LOG",
             "msg": "IndexError: planted", "tb": 'File "/x/safetensors.py", line 3, in read'}
    record = atheris_engine._keep_crash("safetensors", ".safetensors", crash, crashes, {}, 0)
    kept = Path(record["file"])
    assert kept.parent == crashes and kept.name.startswith("safetensors-atheris-exception-")
    assert kept.suffix == ".safetensors" and not artifact.exists()
    assert record["signature"] == "exception|IndexError|safetensors.py:3"
    note = (crashes / (kept.name[:-len(".safetensors")] + ".txt")).read_text()
    assert f"replay: tools/fuzz safetensors --replay {kept}" in note
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz"), "safetensors",
                        "--replay", str(kept), "--out", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and '"status": "rejected"' in r.stdout, r.stdout + r.stderr


# --- safetensors: properties ------------------------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_safetensors_decode_arbitrary_bytes(blob):
    try:
        safetensors.decode(blob)
    except WeightsError:
        pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "I64", "f32", 3]) | _json_values,
    "shape": st.lists(st.integers(-3, 2**41), max_size=9) | _json_values,
    "data_offsets": st.lists(st.integers(-5, 2**65), min_size=0, max_size=3) | _json_values,
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.dictionaries(st.text(max_size=12), _entry | _json_values, max_size=4),
       meta=_json_values, data=st.binary(max_size=256), fake_len=st.integers(0, 2**64 - 1)
       | st.none())
def test_safetensors_decode_structured_headers(header, meta, data, fake_len):
    header = dict(header)
    if meta is not None:
        header["__metadata__"] = meta
    text = json.dumps(header).encode()
    n = len(text) if fake_len is None else fake_len
    blob = struct.pack("<Q", n) + text + data
    try:
        w = safetensors.decode(blob)
    except WeightsError:
        return
    total = sum(t.nbytes for t in w.tensors.values())
    assert total <= len(data)


def test_safetensors_rejects_deep_nesting():
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(WeightsError, match="JSON|nested"):
        safetensors.decode(struct.pack("<Q", len(deep)) + deep)


def test_safetensors_refuses_a_tensor_named_twice():
    """A valid file whose header lists conv1.bias twice: which one is meant is not said."""
    from ports.seeded import seeded_weights
    from ports.spec import Variant

    blob = safetensors.encode(seeded_weights(Variant("1_1", 10)))
    n = struct.unpack("<Q", blob[:8])[0]
    header = blob[8:8 + n].decode()
    i = header.index('"conv1.bias":')
    j = header.index("}", i) + 1
    dup = (header[:j] + "," + header[i:j] + header[j:]).encode()
    dup += b" " * (-len(dup) % 8)
    with pytest.raises(WeightsError, match="header names 'conv1.bias' twice"):
        safetensors.decode(struct.pack("<Q", len(dup)) + dup + blob[8 + n:])


def test_safetensors_read_does_not_load_a_huge_file_with_a_bad_header(tmp_path):
    """The header is checked before the data is read: a 2 GiB sparse file costs nothing."""
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 12) + b'{"a": 1}    ')
        f.truncate(2 << 30)
    r = fuzz.replay("safetensors", path, memory_mb=256, out=tmp_path / "work")
    assert r["status"] == "rejected", r
    assert r["secs"] < 1.0
