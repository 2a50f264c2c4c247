"""Run a reader of untrusted data in a forked child with a memory cap and a deadline.

Some parsers (the HDF5 C library behind h5py) can segfault, hang inside C code, or allocate
gigabytes on a crafted file, and no Python ``except`` catches that.  :func:`isolated` runs
``func(*args)`` in a child process made by ``fork``: the child caps its address space
(``RLIMIT_AS``), its CPU time (``RLIMIT_CPU``), and is killed by the parent at a deadline.
The child returns float32 tensors and string metadata over a pipe in a small, length-checked
binary form (no pickle): ``u64 header length | JSON header | raw float32 data``.

Where ``fork`` is unavailable (Windows), ``func`` runs in-process.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import struct
import time
from typing import Callable

import numpy as np

_OK, _ERR = b"K", b"E"


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


class SandboxError(Exception):
    """The isolated reader died, ran out of memory or time, or raised: ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def isolated(func: Callable[..., tuple[dict, dict]], *args, memory_bytes: int,
             seconds: float) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``func(*args) -> (tensors, meta)`` run in a forked child.

    An exception in ``func`` comes back as :class:`SandboxError` carrying its message; so do a
    crash (signal), exceeding ``memory_bytes`` beyond the current address space, or running
    past ``seconds``.
    """
    if not hasattr(os, "fork"):  # pragma: no cover - non-POSIX
        return func(*args)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.close(read_fd)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            try:
                import resource

                base = _address_space()
                if base:
                    limit = base + memory_bytes
                    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
                cpu = max(1, math.ceil(seconds))
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            except (ImportError, ValueError, OSError):
                pass
            try:
                tensors, meta = func(*args)
                out = _OK + _pack(tensors, meta)
            except MemoryError:
                out = _ERR + f"needs more than {memory_bytes >> 20} MiB of memory".encode()
            except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
                reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
                out = _ERR + str(reason).encode("utf-8", "replace")
            view = memoryview(out)
            while view:
                view = view[os.write(write_fd, view):]
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks, deadline, status = [], time.monotonic() + seconds, None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise SandboxError(f"reading did not finish within {seconds:g} s")
            ready, _, _ = select.select([read_fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    out = b"".join(chunks)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        raise SandboxError(f"the reader crashed (signal {name})")
    if not out:
        raise SandboxError("the reader exited without a result")
    if out[:1] == _ERR:
        raise SandboxError(out[1:].decode("utf-8", "replace"))
    return _unpack(out[1:])
