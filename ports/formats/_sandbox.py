"""Run a reader of untrusted data in a helper process with a memory cap and a deadline.

Some parsers (the HDF5 C library behind h5py) can segfault, hang inside C code, or allocate
gigabytes on a crafted file, and no Python ``except`` catches that.  :func:`isolated` runs
``func(*args)`` in a helper process instead: a fresh interpreter started once with
``subprocess`` (fork immediately followed by exec, so nothing of the caller -- in particular
no TensorFlow, JAX or BLAS thread pool, and no lock another thread held -- is inherited) and
reused for every call.  For each call the helper caps its own address space (``RLIMIT_AS``:
its current size plus ``memory_bytes``) and its CPU time (``RLIMIT_CPU``), and the caller
kills it at the deadline; a helper that crashed, hung or was killed is replaced by a fresh
one on the next call.  Calls from several threads take turns.

Requests and results travel over the helper's stdin and stdout as length-prefixed frames,
without pickle: a request is JSON (the function's module and name, JSON arguments, the caps)
plus optional raw bytes; a result is float32 tensors and string metadata as
``u64 header length | JSON header | raw float32 data``, or an error message.

Where there are no POSIX pipes and resource limits (Windows), ``func`` runs in-process.
"""

from __future__ import annotations

import atexit
import importlib
import json
import math
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

_OK, _ERR, _READY, _BUG = b"K", b"E", b"R", b"B"
_FRAME = struct.Struct("<cQ")    # kind, body length
STARTUP_SECONDS = 120.0         # a fresh helper imports numpy and the reader's module


def _pack(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> bytes:
    arrays = {k: np.ascontiguousarray(v, dtype="<f4") for k, v in tensors.items()}
    header = json.dumps({"meta": meta,
                         "tensors": [[k, list(v.shape)] for k, v in arrays.items()]}).encode()
    return struct.pack("<Q", len(header)) + header + b"".join(a.tobytes() for a in arrays.values())


def _unpack(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    tensors, offset = {}, 0
    for name, shape in header["tensors"]:
        count = math.prod(shape)
        tensors[name] = np.frombuffer(data[offset:offset + 4 * count], "<f4").reshape(shape) \
            .astype(np.float32)
        offset += 4 * count
    if offset != len(data):
        raise ValueError("sandbox result has trailing bytes")
    return tensors, header["meta"]


def _address_space() -> int:
    """Current virtual memory size of this process in bytes (0 if unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class ReaderBug(RuntimeError):
    """The isolated reader raised something other than its judgement of the file (not a
    ``ValueError``): a bug in the reader, reported as such rather than as a bad file."""


class SandboxError(Exception):
    """The isolated reader died, ran out of memory or time, or raised: ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the helper's side ---------------------------------------------------------------------
def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _send(fd: int, kind: bytes, body: bytes = b"") -> None:
    _write_all(fd, _FRAME.pack(kind, len(body)) + body)


class _Limits:
    """This process's memory and CPU caps for one call, put back afterwards."""

    def __init__(self, memory_bytes: int, seconds: float) -> None:
        self.memory_bytes, self.seconds, self.saved = memory_bytes, seconds, []

    def __enter__(self) -> None:
        try:
            import resource
        except ImportError:  # pragma: no cover - non-POSIX
            return
        base = _address_space()
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        for which, soft in ((resource.RLIMIT_AS, base + self.memory_bytes if base else None),
                            (resource.RLIMIT_CPU, math.ceil(used + self.seconds) + 1)):
            old = resource.getrlimit(which)
            if soft is None:
                continue
            hard = old[1]
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            try:
                resource.setrlimit(which, (soft, hard))
                self.saved.append((which, old))
            except (ValueError, OSError):
                pass

    def __exit__(self, *exc) -> None:
        import resource

        for which, old in reversed(self.saved):
            resource.setrlimit(which, old)


def _call(request: dict, data: bytes | None) -> bytes:
    module, _, name = request["call"].partition(":")
    func = importlib.import_module(module)
    for part in name.split("."):
        func = getattr(func, part)
    kwargs = {} if data is None else {"data": data}
    with _Limits(request["memory"], request["seconds"]):
        try:
            tensors, meta = func(*request["args"], **kwargs)
            return _OK + _pack(tensors, meta)
        except MemoryError:
            return _ERR + f"needs more than {request['memory'] >> 20} MiB of memory".encode()
        except BaseException as e:  # noqa: BLE001 - everything is reported to the caller
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            # A ValueError (WeightsError among them) is the reader's judgement of the file;
            # anything else escaping the reader is a bug in it, said as one.
            kind = _ERR if isinstance(e, ValueError) else _BUG
            return kind + str(reason).encode("utf-8", "replace")


def _serve() -> None:
    """The helper's main loop: ``python -c 'from ports.formats._sandbox import _serve; _serve()'``
    with the modules to import first as arguments."""
    requests, results = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # a stray print must not corrupt the result frames
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, ValueError, OSError):  # pragma: no cover
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C is the caller's
    for module in sys.argv[2:]:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the call itself will report it
            pass
    _send(results, _READY)
    while True:
        head = _read_exact(requests, _FRAME.size)
        if head is None:
            return  # the caller has gone
        _, length = _FRAME.unpack(head)
        request = json.loads(_read_exact(requests, length))
        data = None if request["data"] is None else _read_exact(requests, request["data"])
        result = _call(request, data)
        _send(results, result[:1], result[1:])


# --- the caller's side ---------------------------------------------------------------------
class _Helper:
    """One helper process, owned by the process that started it."""

    def __init__(self, preload: list[str]) -> None:
        root = str(Path(__file__).resolve().parents[2])
        code = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from ports.formats._sandbox import _serve; _serve()")
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        self.owner = os.getpid()
        self.proc = subprocess.Popen([sys.executable, "-c", code, root, *preload],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     close_fds=True)
        kind, body = self.receive(STARTUP_SECONDS, "starting the reader")
        if kind != _READY:  # pragma: no cover - _serve sends nothing else first
            self.kill()
            raise SandboxError("the reader did not start")

    def send(self, request: bytes, data: bytes | None) -> None:
        try:
            _write_all(self.proc.stdin.fileno(), _FRAME.pack(b"Q", len(request)) + request)
            if data is not None:
                _write_all(self.proc.stdin.fileno(), data)
        except OSError:  # BrokenPipeError: it died
            raise SandboxError(self.death()) from None

    def receive(self, seconds: float, doing: str = "reading") -> tuple[bytes, bytes]:
        """The next frame, within ``seconds`` (else the helper is killed)."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + seconds
        chunks: list[bytes] = []
        have, want, kind = 0, _FRAME.size, None
        while have < want:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise SandboxError(f"{doing} did not finish within {seconds:g} s")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, min(want - have, 1 << 20))
            if not chunk:
                raise SandboxError(self.death())
            chunks.append(chunk)
            have += len(chunk)
            if kind is None and have >= _FRAME.size:
                head = b"".join(chunks)
                kind, length = _FRAME.unpack(head[:_FRAME.size])
                chunks, have, want = [head[_FRAME.size:]], have - _FRAME.size, length
        return kind, b"".join(chunks)

    def death(self) -> str:
        """Why the helper went away (it is reaped)."""
        self.kill(wait_only=True)
        status = self.proc.returncode
        if status is not None and status < 0:
            sig = -status
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            return f"the reader crashed (signal {name})"
        return "the reader exited without a result"

    def kill(self, wait_only: bool = False) -> None:
        if self.proc.poll() is None and not wait_only:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - it exited or was killed
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        """Let it finish (end of input), then make sure it has."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


_lock = threading.Lock()
_helper: _Helper | None = None


@atexit.register
def _close() -> None:
    global _helper
    if _helper is not None and _helper.owner == os.getpid():
        _helper.close()
    _helper = None


def isolated(func: Callable[..., tuple[dict, dict]], *args, data: bytes | None = None,
             memory_bytes: int, seconds: float, preload: tuple[str, ...] = ()
             ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``func(*args) -> (tensors, meta)`` (``func(*args, data=data)`` when ``data`` is given)
    run in the helper process.  ``func`` must be a module-level function and ``args``
    JSON values; ``preload``: modules a fresh helper imports before it takes calls (the
    deadline then covers the call alone).

    A ``ValueError`` (``WeightsError``) in ``func`` comes back as :class:`SandboxError`
    carrying its message (its ``reason`` when it has one); so do a crash (signal), exceeding
    ``memory_bytes`` beyond the helper's address space, or running past ``seconds``.  Any
    other exception is a bug in ``func``: :class:`ReaderBug`.
    """
    if os.name != "posix":  # pragma: no cover - no select() on pipes, no rlimits
        return func(*args, **({} if data is None else {"data": data}))
    global _helper
    request = json.dumps({"call": f"{func.__module__}:{func.__qualname__}", "args": list(args),
                          "memory": int(memory_bytes), "seconds": float(seconds),
                          "data": None if data is None else len(data)}).encode()
    with _lock:
        if _helper is None or _helper.owner != os.getpid() or _helper.proc.poll() is not None:
            if _helper is not None and _helper.owner == os.getpid():
                _helper.kill()
            _helper = None  # a helper inherited through fork is the parent's: left alone
            _helper = _Helper([*preload, func.__module__])
        helper = _helper
        try:
            helper.send(request, data)
            kind, body = helper.receive(seconds)
        except BaseException:
            # A crash, a deadline, or the caller interrupted (an alarm, KeyboardInterrupt):
            # the helper's state is unknown, so it goes.
            helper.kill()
            _helper = None
            raise
    if kind == _ERR:
        raise SandboxError(body.decode("utf-8", "replace"))
    if kind == _BUG:
        raise ReaderBug(body.decode("utf-8", "replace"))
    return _unpack(body)
