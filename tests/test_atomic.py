"""Atomic output: a killed writer leaves the old file or none, racing writers never mix,
existing files are kept unless overwriting is asked for, every codec's writer is atomic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ports import formats
from ports.errors import WeightsError
from ports.formats._io import (
    STALE_AFTER,
    atomic_write,
    remove_stale_temps,
    stale_temps,
    temp_prefix,
)

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 64 * 1024

# A writer that announces each chunk on stdout and then sleeps, so the test can kill it
# at a known point of the write.
SLOW_WRITER = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from ports.formats._io import atomic_write
dest, chunks = sys.argv[1], int(sys.argv[2])
def slow(f):
    for i in range(chunks):
        f.write(bytes([i % 251]) * {CHUNK})
        f.flush()
        print(i, flush=True)
        time.sleep(0.02)
atomic_write(dest, slow)
print("done", flush=True)
"""


def _start_slow_writer(dest: Path, chunks: int = 2000) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(dest), str(chunks)],
                            stdout=subprocess.PIPE, text=True)


def _wait_for_chunk(proc: subprocess.Popen, n: int) -> None:
    for _ in range(n + 1):  # bounded: one line per chunk
        line = proc.stdout.readline()
        assert line, f"writer exited early (status {proc.wait()})"


def _temps(dest: Path) -> list[Path]:
    return sorted(p for p in dest.parent.iterdir()
                  if p.name.startswith(temp_prefix(dest)) and p.name.endswith(".part"))


@pytest.mark.parametrize("after_chunks", [0, 5, 40])
@pytest.mark.parametrize("previous", [False, True])
def test_sigkill_mid_write_leaves_no_destination_or_the_previous_file(tmp_path, after_chunks,
                                                                      previous):
    dest = tmp_path / "w.safetensors"
    old = b"the previous file\n" * 100
    if previous:
        dest.write_bytes(old)
    proc = _start_slow_writer(dest)
    try:
        _wait_for_chunk(proc, after_chunks)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    if previous:
        assert dest.read_bytes() == old
    else:
        assert not dest.exists()
    # The killed writer's temporary remains (nothing can remove it at SIGKILL) ...
    leftovers = _temps(dest)
    assert len(leftovers) == 1
    part = leftovers[0]
    assert part.name.startswith(f".w.safetensors.{proc.pid}.") and part.name.endswith(".part")
    # ... and is never taken for the destination or for a weights file.
    with pytest.raises(WeightsError, match="cannot tell the format"):
        formats.detect(part)
    assert part.stat().st_size >= (after_chunks + 1) * CHUNK
    # Fresh: not stale yet (a slow writer may just be between writes).
    assert stale_temps(dest) == []
    # Once old enough, the next write to the same destination removes it.
    past = time.time() - STALE_AFTER - 5
    os.utime(part, (past, past))
    assert stale_temps(dest) == [part]
    atomic_write(dest, b"new contents")
    assert dest.read_bytes() == b"new contents"
    assert _temps(dest) == []


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    dest = tmp_path / "w.pth"
    proc = _start_slow_writer(dest)
    try:
        _wait_for_chunk(proc, 2)
        (part,) = _temps(dest)
        past = time.time() - 10 * STALE_AFTER
        os.utime(part, (past, past))
        assert remove_stale_temps(dest, older_than=0) == []
        assert part.exists()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_temporaries_of_other_destinations_are_left_alone(tmp_path):
    dest = tmp_path / "a.npz"
    other = tmp_path / ".a.npz.x.part"         # no pid: not one of ours
    similar = tmp_path / ".a.npzz.999999.abc.part"  # another destination's name
    for p in (other, similar):
        p.write_bytes(b"keep")
        os.utime(p, (0, 0))
    atomic_write(dest, b"x")
    assert other.exists() and similar.exists()


RACER = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from ports.formats._io import atomic_write
dest, index, go, overwrite = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
payload = (f"writer {{index:02d}}\\n".encode() * 40000)
def slow(f):
    for i in range(0, len(payload), 50000):
        f.write(payload[i:i + 50000])
        f.flush()
        time.sleep(0.001)
for _ in range(2000):  # start together (bounded wait)
    if go.exists():
        break
    time.sleep(0.005)
try:
    atomic_write(dest, slow, overwrite=overwrite)
    print("won")
except FileExistsError:
    print("exists")
"""


def _payload(index: int) -> bytes:
    return f"writer {index:02d}\n".encode() * 40000


@pytest.mark.parametrize("overwrite", [True, False])
def test_racing_writers_never_produce_a_mixed_file(tmp_path, overwrite):
    dest = tmp_path / "race.safetensors"
    go = tmp_path / "go"
    n = 20
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(dest), str(i), str(go),
                               "1" if overwrite else "0"], stdout=subprocess.PIPE, text=True)
             for i in range(n)]
    time.sleep(0.5)
    go.touch()
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    content = dest.read_bytes()
    matches = [i for i in range(n) if content == _payload(i)]
    assert len(matches) == 1, f"final file is not exactly one writer's payload ({len(content)} B)"
    if overwrite:
        assert outputs.count("won") == n
    else:
        assert outputs.count("won") == 1 and outputs.count("exists") == n - 1
        assert outputs[matches[0]] == "won"
    assert _temps(dest) == [], "racing writers left temporaries behind"


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    dest = tmp_path / "w.onnx"
    dest.write_bytes(b"precious")
    called = []
    with pytest.raises(FileExistsError, match="already exists"):
        atomic_write(dest, lambda f: called.append(f), overwrite=False)
    assert dest.read_bytes() == b"precious"
    assert called == [], "content was produced although the destination exists"
    assert _temps(dest) == []
    atomic_write(dest, b"replaced", overwrite=True)
    assert dest.read_bytes() == b"replaced"


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path):
    dest = tmp_path / "w.params"
    dest.write_bytes(b"old")

    def broken(f):
        f.write(b"half of it")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(dest, broken)
    assert dest.read_bytes() == b"old"
    assert _temps(dest) == []


def test_permissions_are_kept_when_replacing(tmp_path):
    dest = tmp_path / "w.msgpack"
    atomic_write(dest, b"one")
    assert dest.stat().st_mode & 0o777 == 0o644
    os.chmod(dest, 0o600)
    atomic_write(dest, b"two")
    assert dest.stat().st_mode & 0o777 == 0o600


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write(tmp_path / "no" / "such" / "w.npz", b"x")


# --- every codec's writer ------------------------------------------------------------------
# No bytecode written under the file-size cap: with SIGXFSZ ignored a write past the cap is
# cut short without an error, and Python would rename the cut .pyc of a module imported here
# for the first time (environments are installed without compiling) into place for every
# later process ("marshal data too short").
WRITE_LIMITED = f"""
import resource, signal, sys
sys.dont_write_bytecode = True
sys.path.insert(0, {str(ROOT)!r})
from ports import formats
from ports.fuzz.seeds import quantized
from ports.seeded import seeded_weights
from ports.spec import Variant
weights = quantized(seeded_weights(Variant("1_1", 10)))  # every codec can store these
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    formats.write(weights, sys.argv[1], sys.argv[2])
except BaseException as e:
    print("failed:", type(e).__name__, e)
else:
    print("written")
"""


def _writable_formats() -> list[str]:
    out = []
    for name, fmt in formats.FORMATS.items():
        if (ROOT / "ports" / "formats" / f"{fmt.module}.py").exists():
            out.append(name)
    return out


@pytest.mark.parametrize("previous", [False, True])
@pytest.mark.parametrize("name", _writable_formats())
def test_every_writer_fails_without_touching_the_destination(tmp_path, name, previous):
    """A write that fails half-way (here: the file-size limit) leaves no partial file."""
    codec = formats.codec(name)
    if not hasattr(codec, "write"):
        pytest.skip(f"{name} is read-only")
    dest = tmp_path / f"w{formats.FORMATS[name].extensions[0]}"
    if previous:
        dest.write_bytes(b"previous")
    r = subprocess.run([sys.executable, "-c", WRITE_LIMITED, str(dest), name],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("failed:"), r.stdout
    assert "WeightsError" not in r.stdout, f"{name} could not encode the test weights: {r.stdout}"
    if previous:
        assert dest.read_bytes() == b"previous", f"{name} writer damaged the previous file"
    else:
        assert not dest.exists(), f"{name} writer left a partial {dest.name}: {r.stdout}"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in (dest.name,)]
    assert leftovers == [], f"{name} writer left {leftovers}"


@pytest.mark.parametrize("name", _writable_formats())
def test_every_writer_keeps_an_existing_file_unless_overwrite(tmp_path, name):
    from ports.fuzz.seeds import quantized
    from ports.seeded import seeded_weights
    from ports.spec import Variant

    codec = formats.codec(name)
    if not hasattr(codec, "write"):
        pytest.skip(f"{name} is read-only")
    dest = tmp_path / f"w{formats.FORMATS[name].extensions[0]}"
    dest.write_bytes(b"previous")
    with pytest.raises(FileExistsError):
        formats.write(quantized(seeded_weights(Variant("1_1", 10))), dest, name,
                      overwrite=False)
    assert dest.read_bytes() == b"previous"
