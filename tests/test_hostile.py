"""Hostile inputs: pickled payloads are refused without running, every reader refuses
garbage with WeightsError, and declared sizes cannot make a reader allocate unboundedly."""

from __future__ import annotations

import io
import os
import pickle
import random
import signal
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from ports import formats, fuzz
from ports.errors import WeightsError
from ports.spec import Variant

ROOT = Path(__file__).resolve().parent.parent


def _codec_exists(name: str) -> bool:
    return (ROOT / "ports" / "formats" / f"{formats.FORMATS[name].module}.py").exists()


def _need(name: str) -> None:
    """Fail (not skip) when a codec or its dependency is missing."""
    assert _codec_exists(name), f"ports/formats/{formats.FORMATS[name].module}.py is missing"
    why = fuzz.availability(name)
    assert why is None, why


@contextmanager
def deadline(seconds: float):
    """Fail the test if the block runs longer than ``seconds`` (a hang in a reader)."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"no result within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def refuse(path, name: str, match: str | None = None) -> WeightsError:
    with deadline(30), pytest.raises(WeightsError, match=match) as info:
        formats.read(path, name)
    return info.value


# --- payloads that would run code if unpickled ---------------------------------------------
class OpenMarker:
    """Unpickling calls ``open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class SystemMarker:
    """Unpickling runs a shell command creating the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


PAYLOADS = {"open": OpenMarker, "os.system": SystemMarker}


def _seed_file(name: str, directory: Path) -> Path:
    dest = directory / f"valid{formats.FORMATS[name].extensions[0]}"
    fuzz.write_seeded(name, Variant("1_1", 10), dest)
    formats.read(dest, name)  # sanity: the untouched file is fine
    return dest


def _rezip(src: Path, dest: Path, replace: dict[str, bytes], add: dict[str, bytes] = ()) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = replace.get(info.filename, zin.read(info))
            zout.writestr(info.filename, data, compress_type=info.compress_type)
        for member, data in dict(add).items():
            zout.writestr(member, data)


def _object_npy(payload) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([payload, 1], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_npz_object_array_is_refused_without_unpickling(tmp_path, payload):
    _need("chainer")
    marker = tmp_path / "marker"
    evil = PAYLOADS[payload](marker)
    # (1) an .npz that is only the object array
    bare = tmp_path / "bare.npz"
    np.savez(bare, **{"conv1/W": np.array([evil, 1], dtype=object)})
    # (2) a valid chainer file whose conv1/W is replaced by the object array
    valid = _seed_file("chainer", tmp_path)
    swapped = tmp_path / "swapped.npz"
    _rezip(valid, swapped, {"conv1/W.npy": _object_npy(evil)})
    # (3) a valid chainer file with an extra object member
    extra = tmp_path / "extra.npz"
    _rezip(valid, extra, {}, {"evil.npy": _object_npy(evil)})
    for path in (bare, swapped, extra):
        e = refuse(path, "chainer")
        assert not marker.exists(), f"{path.name}: the pickled payload ran"
        assert "not unpickled" in str(e) or "object" in str(e), str(e)
    # Control: the payload does run when unpickled, so the test can see it.
    np.load(bare, allow_pickle=True)["conv1/W"]
    assert marker.exists()


def _torch_pickle_of(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _raw_global_pickle(module: str, name: str, arg: str) -> bytes:
    """A protocol-0 pickle calling ``module.name(arg)`` (hand-written, as an attacker would)."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_pth_with_reduce_payload_is_refused_without_running(tmp_path, payload):
    _need("torch")
    from collections import OrderedDict

    marker = tmp_path / "marker"
    evil = PAYLOADS[payload](marker)
    valid = _seed_file("torch", tmp_path)
    with zipfile.ZipFile(valid) as z:
        pkl_name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
    archive = pkl_name.split("/")[0]
    pickles = {
        "object": _torch_pickle_of(evil),
        "in-state-dict": _torch_pickle_of(OrderedDict([("features.0.weight", evil)])),
        "hand-written": _raw_global_pickle("os", "system", f"touch '{marker}'"),
        "builtins.exec": _raw_global_pickle("builtins", "exec",
                                            f"open({str(marker)!r}, 'w').close()"),
    }
    for label, pkl in pickles.items():
        path = tmp_path / f"{label}.pth"
        _rezip(valid, path, {pkl_name: pkl})
        refuse(path, "torch")
        assert not marker.exists(), f"{label}: the pickled payload ran"
    # A bare zip (no tensors at all) and a legacy raw pickle.
    bare = tmp_path / "bare.pth"
    with zipfile.ZipFile(bare, "w") as z:
        z.writestr(f"{archive}/data.pkl", _torch_pickle_of(evil))
        z.writestr(f"{archive}/version", "3\n")
        z.writestr(f"{archive}/byteorder", "little")
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(_torch_pickle_of(evil))
    for path in (bare, legacy):
        refuse(path, "torch")
        assert not marker.exists(), f"{path.name}: the pickled payload ran"
    # Control: plain pickle would have run it.
    pickle.loads(_torch_pickle_of(evil))
    assert marker.exists()


# --- garbage -------------------------------------------------------------------------------
ALL = list(formats.FORMATS)


@pytest.mark.parametrize("name", ALL)
def test_every_reader_refuses_an_empty_file(tmp_path, name):
    _need(name)
    path = tmp_path / f"empty{formats.FORMATS[name].extensions[0]}"
    path.write_bytes(b"")
    refuse(path, name)


@pytest.mark.parametrize("name", ALL)
def test_every_reader_refuses_random_bytes(tmp_path, name):
    _need(name)
    rng = random.Random(f"random-bytes/{name}")
    for size in (1, 7, 8, 100, 4096, 1 << 20):
        path = tmp_path / f"random{size}{formats.FORMATS[name].extensions[0]}"
        path.write_bytes(rng.randbytes(size))
        refuse(path, name)


@pytest.mark.parametrize("name", ALL)
def test_every_reader_refuses_a_valid_start_followed_by_junk(tmp_path, name):
    """The first bytes of a real file (magic numbers, headers) and then random junk."""
    _need(name)
    seeds = fuzz.build_seeds(name, tmp_path / "seeds", log=lambda _: None)
    rng = random.Random(f"magic-junk/{name}")
    blob = seeds[0].path.read_bytes()
    for keep in (4, 8, 16, 64, 512):
        path = tmp_path / f"junk{keep}{formats.FORMATS[name].extensions[0]}"
        path.write_bytes(blob[:keep] + rng.randbytes(4096))
        refuse(path, name)


@pytest.mark.parametrize("name", ALL)
def test_every_reader_refuses_a_directory_and_a_missing_file(tmp_path, name):
    _need(name)
    directory = tmp_path / f"dir{formats.FORMATS[name].extensions[0]}"
    directory.mkdir()
    refuse(directory, name)
    refuse(tmp_path / f"missing{formats.FORMATS[name].extensions[0]}", name)


@pytest.mark.parametrize("name", ALL)
def test_every_reader_refuses_a_fifo_without_blocking(tmp_path, name):
    _need(name)
    fifo = tmp_path / f"fifo{formats.FORMATS[name].extensions[0]}"
    os.mkfifo(fifo)
    refuse(fifo, name)  # opening a FIFO for reading would block forever


# --- declared sizes vs. memory ---------------------------------------------------------------
def _deflated_zip_member(z: zipfile.ZipFile, member: str, header: bytes, zeros: int) -> None:
    """Add ``member`` = ``header`` + ``zeros`` zero bytes, deflated (a small 'zip bomb')."""
    info = zipfile.ZipInfo(member)
    info.compress_type = zipfile.ZIP_DEFLATED
    block = bytes(1 << 20)
    with z.open(info, "w", force_zip64=True) as f:
        f.write(header)
        for _ in range(zeros // len(block)):
            f.write(block)


def _npy_header(shape: tuple) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _bounded(path: Path, name: str, memory_mb: int = 256) -> dict:
    """Read ``path`` in a fuzz worker whose address space may grow by ``memory_mb`` only."""
    return fuzz.replay(name, path, timeout=60, memory_mb=memory_mb,
                       out=path.parent / "fuzz-work")


def test_npz_member_inflating_to_a_huge_array_is_refused_within_bounded_memory(tmp_path):
    _need("chainer")
    valid = _seed_file("chainer", tmp_path)
    bomb = tmp_path / "bomb.npz"
    n = 512 << 20  # 512 MiB of float32 zeros behind a ~0.5 MiB member
    with zipfile.ZipFile(valid) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for info in zin.infolist():
            if info.filename != "conv1/W.npy":
                zout.writestr(info.filename, zin.read(info), compress_type=info.compress_type)
        _deflated_zip_member(zout, "conv1/W.npy", _npy_header((n // 4,)), n)
    assert bomb.stat().st_size < 8 << 20
    r = _bounded(bomb, "chainer")
    assert r["status"] == "rejected", r


def test_pth_storage_inflating_to_a_huge_record_is_refused_within_bounded_memory(tmp_path):
    _need("torch")
    valid = _seed_file("torch", tmp_path)
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(valid) as zin:
        infos = zin.infolist()
        storages = sorted((i for i in infos if "/data/" in i.filename),
                          key=lambda i: i.file_size)
        target = storages[-1].filename
        with zipfile.ZipFile(bomb, "w") as zout:
            for info in infos:
                if info.filename != target:
                    zout.writestr(info.filename, zin.read(info),
                                  compress_type=info.compress_type)
            _deflated_zip_member(zout, target, b"", 512 << 20)
    r = _bounded(bomb, "torch")
    assert r["status"] == "rejected", r


def test_h5_dataset_declaring_a_huge_shape_is_refused_within_bounded_memory(tmp_path):
    """An HDF5 dataset of 2**30 float32 whose chunks were never written takes a few KB on
    disk; reading it would fill 4 GiB with the fill value."""
    _need("keras")
    import h5py

    valid = _seed_file("keras", tmp_path)
    bomb = tmp_path / "bomb.weights.h5"
    bomb.write_bytes(valid.read_bytes())
    with h5py.File(bomb, "r+") as f:
        datasets = []
        f.visititems(lambda k, v: datasets.append(k) if isinstance(v, h5py.Dataset) else None)
        target = max(datasets, key=lambda k: f[k].size)
        shape = f[target].shape
        del f[target]
        huge = (1 << 30) // max(1, int(np.prod(shape[1:]))) if len(shape) > 1 else 1 << 30
        f.create_dataset(target, shape=(huge, *shape[1:]), dtype="<f4",
                         chunks=(1, *shape[1:]) if len(shape) > 1 else (1 << 16,))
    assert bomb.stat().st_size < 16 << 20
    r = _bounded(bomb, "keras")
    assert r["status"] == "rejected", r


def test_onnx_external_data_outside_the_model_is_refused(tmp_path):
    """An initializer may point at external data; a path leaving the model's folder (or
    any external data, for a converter) must not be read."""
    _need("onnx")
    import onnx

    valid = _seed_file("onnx", tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(64 * 3 * 3 * 3, dtype="<f4").tobytes())
    sub = tmp_path / "models"
    sub.mkdir()
    model = onnx.load(str(valid))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data) or len(t.float_data))
    for location in ("../secret.bin", str(secret), "/etc/passwd"):
        t = onnx.TensorProto()
        t.CopyFrom(init)
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        entry = t.external_data.add()
        entry.key, entry.value = "location", location
        m = onnx.ModelProto()
        m.CopyFrom(model)
        for i, old in enumerate(m.graph.initializer):
            if old.name == init.name:
                m.graph.initializer[i].CopyFrom(t)
        path = sub / "external.onnx"
        path.write_bytes(m.SerializeToString())
        r = _bounded(path, "onnx", memory_mb=1024)
        assert r["status"] == "rejected", (location, r)


# --- the isolated reader (HDF5) -----------------------------------------------------------
def test_isolated_reader_survives_a_crash_a_hang_and_a_memory_blowup():
    """What libhdf5 may do on a crafted file, done on purpose in the helper process: the
    caller gets a SandboxError each time and the next call gets a fresh helper."""
    import json
    import time

    from ports.formats import _sandbox

    caps = {"memory_bytes": 64 << 20, "seconds": 2.0}
    with pytest.raises(_sandbox.SandboxError, match="crashed .signal SIGABRT"):
        _sandbox.isolated(os.abort, **caps)
    start = time.monotonic()
    with pytest.raises(_sandbox.SandboxError, match="did not finish within 2 s"):
        _sandbox.isolated(time.sleep, 60, **caps)
    assert time.monotonic() - start < 20
    with pytest.raises(_sandbox.SandboxError, match="needs more than 64 MiB"):
        _sandbox.isolated(bytearray, 1 << 33, **caps)
    with pytest.raises(_sandbox.SandboxError, match="JSONDecodeError"):
        _sandbox.isolated(json.loads, "{not json", **caps)
    # anything but a ValueError escaping the reader is a bug in it, not a bad file
    with pytest.raises(_sandbox.ReaderBug, match="TypeError"):
        _sandbox.isolated(os.path.join, 1, 2, **caps)


def test_isolated_reader_is_one_helper_reused_never_a_fork(tmp_path, monkeypatch):
    """The HDF5 reader runs in a helper process started with fork+exec (subprocess) and
    reused; os.fork of the caller, which may run TensorFlow or JAX thread pools, is never
    called.  Threads take turns."""
    import threading

    from ports.formats import _sandbox

    def no_fork():
        raise AssertionError("os.fork called")

    monkeypatch.setattr(os, "fork", no_fork)
    _sandbox._close()  # the next read starts a helper, under the patch
    path = _seed_file("keras", tmp_path)
    want = formats.read(path, "keras")
    helper = _sandbox._helper
    assert helper is not None and helper.proc.pid != os.getpid()
    results, errors = [], []

    def reader():
        try:
            for _ in range(5):
                results.append(formats.read(path, "keras"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 15
    assert all(r.tensors.keys() == want.tensors.keys() and
               all(np.array_equal(r[k], want[k]) for k in want.tensors) for r in results)
    assert _sandbox._helper is helper, "the helper was not reused"


# --- the error type and the command line ----------------------------------------------------
def test_weights_error_keeps_its_fields_through_pickle():
    e = WeightsError("conv1.weight: bad", path="/x/w.pth", format="torch")
    again = pickle.loads(pickle.dumps(e))
    assert (again.reason, again.path, again.format, str(again)) == \
        ("conv1.weight: bad", "/x/w.pth", "torch", "/x/w.pth (torch): conv1.weight: bad")


def test_cli_prints_one_line_and_exits_2_or_shows_the_traceback_with_debug(tmp_path, capsys):
    from ports.cli import EXIT_BAD_INPUT, run

    def main(args):
        raise WeightsError("line one\nline two", path=args[0], format="torch")

    assert run(main, ["w.pth"], prog="convert") == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == "convert: error: w.pth (torch): line one line two\n"

    def missing(args):
        open(tmp_path / "nope.pth", "rb")

    assert run(missing, [], prog="convert") == EXIT_BAD_INPUT
    assert capsys.readouterr().err == \
        f"convert: error: {tmp_path / 'nope.pth'}: No such file or directory\n"
    with pytest.raises(WeightsError):
        run(main, ["w.pth", "--debug"], prog="convert")


def test_every_tool_turns_a_bad_file_into_one_line_and_status_2(tmp_path):
    """The executables in tools/ that take a weights file (run as a user would)."""
    import subprocess
    import sys

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    tools = {"convert": [str(bad), str(tmp_path / "out.pth")]}
    for tool, args in tools.items():
        exe = ROOT / "tools" / tool
        assert exe.exists(), f"tools/{tool} is missing"
        r = subprocess.run([sys.executable, str(exe), *args], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2, (tool, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_every_refusal_names_the_file_and_format_once(tmp_path, name):
    """Through ``ports.formats.read``, the one place that names them, every bad input of
    docs/bad-inputs.md ends in ``FILE (format): reason``: FILE the file read, or the file of
    the pair (a params file) it is about; the reason names neither again."""
    from ports.fuzz.bad_inputs import hostile_files

    _need(name)
    refused = 0
    for label, path in hostile_files(name, tmp_path):
        try:
            with deadline(30):
                formats.read(path, name)
            continue
        except WeightsError as e:
            err = e
        refused += 1
        assert err.format == name and err.path is not None, (label, str(err))
        assert str(err) == f"{err.path} ({name}): {err.reason}", label
        assert Path(err.path).parent == Path(path).parent, (label, str(err))
        assert err.path not in err.reason and f"({name}): " not in err.reason, (label, str(err))
    assert refused > 5


def test_docs_bad_inputs_is_what_tools_fuzz_table_writes_and_the_readme_links_to_it(tmp_path):
    """docs/bad-inputs.md is exactly what ``tools/fuzz --table docs/bad-inputs.md`` writes
    from the readers as they are (rerun it after changing a message); README links to it."""
    assert (ROOT / "docs" / "bad-inputs.md").read_text() == fuzz.bad_inputs_table(tmp_path)
    assert "](docs/bad-inputs.md)" in (ROOT / "README.md").read_text()
