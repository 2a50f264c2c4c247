"""Mutation fuzzing of every weights reader (``tools/fuzz``).

For a format, valid seed files are written with the codec's own ``write`` from seeded
weights (small ``num_classes`` keeps them fast), or taken from the shared real files for
read-only codecs; each case mutates one seed (bit flips, boundary bytes, 1/2/4/8-byte integer
fields set to boundary values or nudged, truncation, junk appended or inserted, chunks
duplicated or deleted, numbers in text replaced, splices of two seeds) and calls
:func:`ports.formats.read`.  A case must end in success or :class:`ports.errors.WeightsError`
within ``timeout`` seconds and under a memory limit; anything else is a *crash* and its input
is kept under ``build/fuzz/crashes/`` with a note (message, traceback, how to replay it).

Cases run in worker subprocesses (many cases each) limited by ``RLIMIT_AS`` (memory) and an
interval timer (time); the parent kills a worker that stops answering (a hang in C code)
and starts a fresh one.  Case ``i`` of format ``F`` under ``--seed S`` is a pure function of
``(S, F, i)`` and the seed files, so every run and every crash is reproducible.

Where mutations land matters more than how many there are: seed files are mostly float
data.  Each written seed gets a *twin* written from differently seeded weights; bytes equal
in both (runs of 4 or more) are the file's structure (headers, names, lengths, offsets) and
most mutations hit them.  Shared files without a twin use runs of printable text instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import formats
from .errors import WeightsError
from .spec import Variant

ROOT = Path(__file__).resolve().parent.parent
# Seed variants, in order of preference (small num_classes keeps files small and fast);
# 1000-class ones for codecs whose files do not record the class count.
CANDIDATES = (Variant("1_1", 10, 0, "none"), Variant("1_0", 10, 1, "complex"),
              Variant("1_1", 1000, 0, "none"), Variant("1_0", 1000, 1, "none"))
# Real files for codecs that cannot write (and extra seeds for those that can), relative to
# the shared folder.
SHARED_SEEDS = {
    "caffe": ("weights/caffe-real/squeezenet_v1.0_deep_compression.caffemodel",
              "weights/caffe-real/squeezenet_v1.1_seeded.caffemodel"),
    "deepcompression": ("weights/deep-compression/compressed_SqueezeNet.net",),
}
DEFAULT_TIMEOUT = 10.0
DEFAULT_MEMORY_MB = 1024
MAX_SAVED_PER_SIGNATURE = 5


def _print(message: str) -> None:
    print(message, flush=True)


class CaseTimeout(BaseException):
    """Raised in a worker by the per-case timer (a BaseException so that no reader's
    ``except Exception`` can swallow it)."""


def shared_dir() -> Path:
    env = os.environ.get("SQUEEZENET_SHARED")
    return Path(env) if env else ROOT.parent / "shared"


# --- which codecs can be fuzzed ------------------------------------------------------------
def availability(name: str) -> str | None:
    """``None`` if format ``name`` can be fuzzed here, else why not (one line)."""
    module = formats.FORMATS[name][0]
    if importlib.util.find_spec(f"{formats.__name__}.{module}") is None:
        return f"codec module ports/formats/{module}.py does not exist yet"
    try:
        mod = formats.codec(name)
    except ImportError as e:
        return f"optional dependency missing: {e}"
    if not hasattr(mod, "read"):
        return f"ports/formats/{module}.py has no read() yet"
    return None


# --- seeds ---------------------------------------------------------------------------------
@dataclass
class Seed:
    path: Path                 # the file to mutate
    companions: list[Path]     # other files the codec wrote beside it
    hot: np.ndarray            # int64 offsets of structural bytes (may be empty)
    label: str


def _equal_runs(a: bytes, b: bytes, min_run: int = 4) -> np.ndarray:
    """Offsets where ``a`` and ``b`` agree in runs of at least ``min_run`` bytes."""
    m = min(len(a), len(b))
    if m == 0:
        return np.zeros(0, np.int64)
    eq = np.frombuffer(a, np.uint8, m) == np.frombuffer(b, np.uint8, m)
    padded = np.concatenate([[False], eq, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, stops = edges[0::2], edges[1::2]
    keep = (stops - starts) >= min_run
    if not keep.any():
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(s, e) for s, e in zip(starts[keep], stops[keep])])


_TEXT = re.compile(rb"[\x20-\x7e]{6,}")


def _text_runs(data: bytes) -> np.ndarray:
    """Offsets of printable text runs (6+ bytes) and 16 bytes either side."""
    spans = [(max(0, m.start() - 16), min(len(data), m.end() + 16))
             for m in _TEXT.finditer(data)]
    if not spans:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate([np.arange(s, e) for s, e in spans]))


def quantized(weights, levels: int = 255):
    """``weights`` with every weight tensor snapped to ``levels`` evenly spaced values (for
    codecs that store a small codebook per layer, e.g. Deep Compression's 8-bit one)."""
    from .canonical import Weights

    tensors = {}
    for name, t in weights.tensors.items():
        if name.endswith(".weight"):
            lo, hi = float(t.min()), float(t.max())
            step = (hi - lo) / (levels - 1) or 1.0
            t = (lo + np.round((t - lo) / step) * step).astype(np.float32)
        tensors[name] = t
    return Weights(tensors, dict(weights.meta))


def write_seeded(name: str, variant: Variant, dest: Path, twin: int = 0) -> None:
    """Write seeded weights for ``variant`` with codec ``name`` (quantized if the codec
    cannot store them as they are); raises WeightsError if it cannot write them at all."""
    from .seeded import seeded_weights

    weights = seeded_weights(variant, seed=twin)
    try:
        formats.write(weights, dest, name)
    except WeightsError:
        formats.write(quantized(weights), dest, name)


def build_seeds(name: str, directory: Path, log: Callable[[str], None] = _print) -> list[Seed]:
    """Write (or collect) the valid seed files of format ``name`` under ``directory``:
    the first two :data:`CANDIDATES` the codec writes and reads back, and shared files."""
    mod = formats.codec(name)
    ext = formats.FORMATS[name][1][0]
    seeds: list[Seed] = []
    if hasattr(mod, "write"):
        for k, variant in enumerate(CANDIDATES):
            if len(seeds) == 2:
                break
            paths = []
            for twin in (0, 1):
                d = directory / name / f"seed{k}-{twin}"
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
                dest = d / f"seed{k}{ext}"
                try:
                    write_seeded(name, variant, dest, twin)
                    formats.read(dest, name)
                except WeightsError as e:
                    log(f"{name}: {variant.id} does not write and read back ({e}); "
                        "trying the next variant")
                    paths = []
                    break
                paths.append(dest)
            if not paths:
                continue
            main = paths[0]
            hot = _equal_runs(main.read_bytes(), paths[1].read_bytes())
            companions = [p for p in main.parent.iterdir() if p != main]
            seeds.append(Seed(main, companions, hot, f"written {variant.id}"))
    for rel in SHARED_SEEDS.get(name, ()):
        p = shared_dir() / rel
        if not p.is_file():
            log(f"{name}: shared seed {p} not found; skipped")
            continue
        seeds.append(Seed(p, [], _text_runs(p.read_bytes()), f"shared {p.name}"))
    if not seeds:
        raise RuntimeError(f"{name}: no seed file (cannot write and no shared file)")
    return seeds


# --- mutations -----------------------------------------------------------------------------
BOUNDARY_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE)
NUMBER_TEXT = (b"0", b"-1", b"1", b"4294967295", b"4294967296", b"18446744073709551615",
               b"99999999999999999999999", b"-9223372036854775808", b"1e308", b"NaN", b"")


def _interesting_ints(width: int, size: int) -> list[int]:
    top = 1 << (8 * width)
    values = [0, 1, 2, top - 1, top >> 1, (top >> 1) - 1, size, size + 1, size - 1,
              size * 2, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
              0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 40]
    return [v % top for v in values]


class Mutator:
    """Deterministic mutations of seed files; ``case(i)`` -> (seed index, bytes, recipe)."""

    def __init__(self, seeds: list[Seed], format_name: str, seed: int) -> None:
        self.seeds = seeds
        self.blobs = [s.path.read_bytes() for s in seeds]
        self.format_name = format_name
        self.seed = seed

    def _pos(self, rng: random.Random, k: int, n: int) -> int:
        if n <= 0:
            return 0
        hot = self.seeds[k].hot
        r = rng.random()
        if r < 0.6 and len(hot):
            p = int(hot[rng.randrange(len(hot))])
        elif r < 0.8:
            p = rng.randrange(min(n, 4096)) if rng.random() < 0.7 else n - 1 - rng.randrange(
                min(n, 4096))
        else:
            p = rng.randrange(n)
        return min(p, n - 1)

    def case(self, i: int) -> tuple[int, bytearray, list[str]]:
        rng = random.Random(f"{self.seed}/{self.format_name}/{i}")
        k = rng.randrange(len(self.seeds))
        data = bytearray(self.blobs[k])
        recipe: list[str] = []
        count = 1 + min(int(rng.expovariate(0.9)), 5)
        for _ in range(count):
            recipe.append(self._mutate(rng, k, data))
        return k, data, recipe

    def _mutate(self, rng: random.Random, k: int, d: bytearray) -> str:
        n = len(d)
        op = rng.choices(
            ("flip", "byte", "int", "arith", "truncate", "extend", "dup", "delete", "insert",
             "number", "splice"),
            weights=(14, 12, 18, 10, 8, 6, 8, 8, 5, 6, 5))[0]
        if n == 0:
            op = "extend"
        if op == "flip":
            p = self._pos(rng, k, n)
            bit = rng.randrange(8)
            d[p] ^= 1 << bit
            return f"flip@{p}.{bit}"
        if op == "byte":
            p = self._pos(rng, k, n)
            d[p] = rng.choice(BOUNDARY_BYTES)
            return f"byte@{p}={d[p]:#x}"
        if op in ("int", "arith"):
            width = rng.choice((1, 2, 4, 4, 8, 8))
            p = self._pos(rng, k, n)
            if rng.random() < 0.5:
                p -= p % width
            p = max(0, min(p, n - width))
            if n < width:
                return "int:short"
            order = "little" if rng.random() < 0.8 else "big"
            if op == "int":
                value = rng.choice(_interesting_ints(width, n))
            else:
                old = int.from_bytes(d[p:p + width], order)
                value = (old + rng.choice((-1, 1)) * rng.randint(1, 16)) % (1 << (8 * width))
            d[p:p + width] = value.to_bytes(width, order)
            return f"{op}{width}{order[0]}@{p}={value}"
        if op == "truncate":
            p = self._pos(rng, k, n) if rng.random() < 0.7 else rng.randrange(n)
            del d[p:]
            return f"truncate@{p}"
        if op == "extend":
            length = rng.choice((1, 7, 64, 4096, rng.randrange(1, 65536)))
            kind = rng.randrange(4)
            junk = (bytes(length) if kind == 0 else b"\xff" * length if kind == 1
                    else bytes(d[:length]) if kind == 2 else rng.randbytes(length))
            d.extend(junk)
            return f"extend+{length}:{kind}"
        if op in ("dup", "delete"):
            a = self._pos(rng, k, n)
            length = min(n - a, rng.choice((1, 2, 4, 8, 16, 64, 512, 4096, 65536)))
            if op == "dup":
                b = self._pos(rng, k, n)
                d[b:b] = d[a:a + length]
                return f"dup[{a}:+{length}]@{b}"
            del d[a:a + length]
            return f"delete[{a}:+{length}]"
        if op == "insert":
            p = self._pos(rng, k, n)
            length = rng.choice((1, 4, 8, 100))
            d[p:p] = rng.randbytes(length)
            return f"insert@{p}+{length}"
        if op == "number":
            p = self._pos(rng, k, n)
            window = bytes(d[max(0, p - 64):p + 64])
            found = list(re.finditer(rb"-?[0-9]+", window))
            if not found:
                d[p] = rng.choice(BOUNDARY_BYTES)
                return f"byte@{p}={d[p]:#x}"
            m = rng.choice(found)
            a, b = max(0, p - 64) + m.start(), max(0, p - 64) + m.end()
            text = rng.choice(NUMBER_TEXT)
            d[a:b] = text
            return f"number[{a}:{b}]={text.decode()}"
        # splice: head of this file, tail of another seed (or of itself)
        other = self.blobs[rng.randrange(len(self.blobs))]
        a, b = rng.randrange(n + 1), rng.randrange(len(other) + 1)
        d[a:] = other[b:]
        return f"splice@{a}<-{b}"


# --- classification ------------------------------------------------------------------------
def message_class(reason: str) -> str:
    """A rejection message with the variable parts (numbers, quoted text) blanked."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    text = re.sub(r"0x[0-9a-fA-F]+|\d+", "N", text)
    text = re.sub(r"\[[^\]]*\]", "[…]", text)
    return text[:90]


def _memory_cause(e: BaseException) -> BaseException | None:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError):
            return e
        e = e.__cause__ or e.__context__
    return None


def run_one(path: str, name: str, timeout: float) -> dict:
    """Read one file in this process under a timer; the outcome as a dict."""
    def on_alarm(signum, frame):
        raise CaseTimeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    t0 = time.perf_counter()
    out: dict = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                formats.read(path, name)
                out = {"status": "ok"}
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        if caught:
            out["warning"] = f"{caught[0].category.__name__}: {caught[0].message}"[:200]
    except CaseTimeout:
        out = {"status": "crash", "kind": "timeout",
               "msg": f"no result within {timeout:g} s", "tb": traceback.format_exc()}
    except WeightsError as e:
        mem = _memory_cause(e)
        if mem is not None:
            out = {"status": "crash", "kind": "memory",
                   "msg": f"MemoryError turned into WeightsError: {e}",
                   "tb": "".join(traceback.format_exception(type(mem), mem, mem.__traceback__))}
        else:
            out = {"status": "rejected", "cls": message_class(e.reason), "msg": str(e)[:300]}
    except MemoryError as e:
        out = {"status": "crash", "kind": "memory", "msg": f"{type(e).__name__}: {e}"[:300],
               "tb": traceback.format_exc()}
    except BaseException as e:  # noqa: BLE001 - every other outcome is the finding
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        out = {"status": "crash", "kind": "exception",
               "msg": f"{type(e).__name__}: {e}"[:300], "tb": traceback.format_exc()}
    finally:
        signal.signal(signal.SIGALRM, old)
    out["secs"] = time.perf_counter() - t0
    return out


# --- worker --------------------------------------------------------------------------------
def _status_kb(field_name: str) -> int:
    """A ``/proc/self/status`` field in KiB (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _vm_bytes() -> int:
    return _status_kb("VmSize") * 1024


def _peak_rss_kb() -> int:
    # VmHWM belongs to this program's address space; ru_maxrss would survive exec() and
    # report the parent's peak instead.
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _worker_main() -> None:
    """Runs in the subprocess: one JSON config line, then one case index per line."""
    config = json.loads(sys.stdin.readline())
    name = config["format"]
    # Answers go to a private copy of stdout; whatever a reader prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def answer(message: dict) -> None:
        proto.write(json.dumps(message) + "\n")
        proto.flush()
    seeds = [Seed(Path(s["path"]), [Path(c) for c in s["companions"]],
                  np.asarray(s["hot"], np.int64) if s["hot"] is not None
                  else np.load(s["hot_file"]), s["label"]) for s in config["seeds"]]
    mutator = Mutator(seeds, name, config["seed"])
    scratch = Path(config["scratch"])
    case_paths = []
    for k, s in enumerate(seeds):
        d = scratch / f"s{k}"
        d.mkdir(parents=True, exist_ok=True)
        for c in s.companions:
            link = d / c.name
            if not link.exists():
                os.symlink(c, link)
        case_paths.append(d / s.path.name)
    # Warm up (imports, caches) on the seeds themselves, then limit memory.
    formats.codec(name)
    for s in seeds:
        r = run_one(str(s.path), name, config["timeout"] * 3)
        answer({"seed": s.label, **{k: v for k, v in r.items() if k != "tb"}})
    limit = _vm_bytes() + config["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    answer({"ready": True, "limit": limit})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line.startswith("replay "):
            path = line[7:]
        else:
            i = int(line)
            k, blob, _ = mutator.case(i)
            path = str(case_paths[k])
            with open(path, "wb") as f:
                f.write(blob)
        r = run_one(path, name, config["timeout"])
        r["rss_kb"] = _peak_rss_kb()
        answer(r)


class _Worker:
    def __init__(self, config: dict, timeout: float) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from ports.fuzz import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT), env=env)
        self.buf = b""
        self.timeout = timeout
        self.proc.stdin.write((json.dumps(config) + "\n").encode())
        self.proc.stdin.flush()
        self.seed_results = []
        self.limit = 0
        while True:
            msg = self.recv(config["timeout"] * 3 * (len(config["seeds"]) + 1) + 60)
            if msg is None:
                raise RuntimeError(f"fuzz worker for {config['format']} failed to start "
                                   f"(exit status {self.proc.poll()})")
            if msg.get("ready"):
                self.limit = msg["limit"]
                break
            self.seed_results.append(msg)

    def recv(self, timeout: float) -> dict | None:
        """The next message, or None if the worker died or timed out (it is then killed)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.kill()
                    return None
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def ask(self, line: str) -> dict | None:
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            return None
        return self.recv(self.timeout * 2 + 5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


# --- campaign ------------------------------------------------------------------------------
@dataclass
class Summary:
    format: str
    cases: int = 0
    ok: int = 0
    rejected: int = 0
    crashes: list[dict] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    signatures: dict[str, int] = field(default_factory=dict)  # crash kind|message|where
    warnings: dict[str, int] = field(default_factory=dict)
    slowest: float = 0.0
    slowest_case: int = -1
    peak_rss_mb: float = 0.0
    peak_rss_case: int = -1
    memory_limit_mb: float = 0.0
    seeds: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None
    stopped_early: bool = False

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _scratch_root() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="squeezenet-fuzz-", dir=shm))
    base = ROOT / "build" / "fuzz" / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=base))


def _signature(result: dict) -> str:
    tb = result.get("tb", "")
    frames = re.findall(r'File "([^"]+)", line (\d+)', tb)
    where = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else "?"
    head = result.get("msg", "").split(":")[0]
    return f"{result.get('kind')}|{head}|{where}"


def fuzz(name: str, cases: int, *, seed: int = 0, timeout: float = DEFAULT_TIMEOUT,
         memory_mb: int = DEFAULT_MEMORY_MB, out: Path | None = None, start: int = 0,
         log: Callable[[str], None] = _print, progress_every: float = 5.0,
         max_crashes: int = 1000, indices: Iterable[int] | None = None) -> Summary:
    """Run cases ``start .. start+cases-1`` (or exactly ``indices``) of format ``name``;
    returns the summary.  Stops early after ``max_crashes`` crashes (each costs a fresh
    worker)."""
    summary = Summary(name)
    why = availability(name)
    if why is not None:
        summary.skipped = why
        log(f"{name}: skipped: {why}")
        return summary
    out = Path(out) if out is not None else ROOT / "build" / "fuzz"
    crash_dir = out / "crashes"
    t_start = time.monotonic()
    seeds = build_seeds(name, out / "seeds", log)
    summary.seeds = [f"{s.label} ({s.path.stat().st_size} bytes, {len(s.hot)} hot)"
                     for s in seeds]
    for k, s in enumerate(seeds):
        np.save(out / "seeds" / name / f"hot{k}.npy", s.hot)
    mutator = Mutator(seeds, name, seed)
    scratch = _scratch_root()
    config = {"format": name, "seed": seed, "timeout": timeout, "memory_mb": memory_mb,
              "scratch": str(scratch),
              "seeds": [{"path": str(s.path), "companions": [str(c) for c in s.companions],
                         "hot": None, "hot_file": str(out / "seeds" / name / f"hot{k}.npy"),
                         "label": s.label} for k, s in enumerate(seeds)]}
    saved: dict[str, int] = {}
    worker: _Worker | None = None
    last_report = time.monotonic()
    try:
        todo = list(indices) if indices is not None else range(start, start + cases)
        cases = len(todo)
        for i in todo:
            if worker is None:
                worker = _Worker(config, timeout)
                summary.memory_limit_mb = worker.limit / 2**20
                for r in worker.seed_results:
                    if r.get("status") != "ok":
                        log(f"{name}: warning: seed {r.get('seed')} does not read back: "
                            f"{r.get('msg')}")
            r = worker.ask(str(i))
            if r is None:
                r = {"status": "crash", "kind": "hang/killed",
                     "msg": f"worker died or gave no answer within {timeout * 2 + 5:g} s "
                            f"(exit status {worker.proc.returncode})", "secs": timeout * 2 + 5}
                worker = None
            summary.cases += 1
            if r["secs"] > summary.slowest:
                summary.slowest, summary.slowest_case = r["secs"], i
            rss = r.get("rss_kb", 0) / 1024
            if rss > summary.peak_rss_mb:
                summary.peak_rss_mb, summary.peak_rss_case = rss, i
            if "warning" in r:
                key = message_class(r["warning"])
                summary.warnings[key] = summary.warnings.get(key, 0) + 1
            if r["status"] == "ok":
                summary.ok += 1
            elif r["status"] == "rejected":
                summary.rejected += 1
                summary.classes[r["cls"]] = summary.classes.get(r["cls"], 0) + 1
            else:
                sig = _signature(r)
                k, blob, recipe = mutator.case(i)
                record = {"case": i, "seed_file": seeds[k].label, "recipe": recipe,
                          "kind": r.get("kind"), "msg": r.get("msg"), "signature": sig}
                if saved.get(sig, 0) < MAX_SAVED_PER_SIGNATURE:
                    saved[sig] = saved.get(sig, 0) + 1
                    crash_dir.mkdir(parents=True, exist_ok=True)
                    stem = f"{name}-s{seed}-c{i}-{r.get('kind', 'crash').replace('/', '-')}"
                    target = crash_dir / f"{stem}{seeds[k].path.name[len('seed0'):]}"
                    target.write_bytes(blob)
                    (crash_dir / f"{stem}.txt").write_text(
                        f"format: {name}\ncase: {i} (--seed {seed})\nseed file: "
                        f"{seeds[k].path}\nmutations: {' '.join(recipe)}\n"
                        f"outcome: {r.get('kind')}: {r.get('msg')}\n"
                        f"replay: tools/fuzz {name} --replay {target}\n\n{r.get('tb', '')}")
                    record["file"] = str(target)
                summary.crashes.append(record)
                summary.signatures[sig] = summary.signatures.get(sig, 0) + 1
                if summary.signatures[sig] == 1:
                    log(f"{name}: CRASH case {i}: {r.get('kind')}: {r.get('msg')}"
                        + (f" -> {record['file']}" if "file" in record else ""))
                if worker is not None:  # a fresh process after any crash
                    worker.kill()
                    worker = None
                if len(summary.crashes) >= max_crashes:
                    log(f"{name}: stopping after {max_crashes} crashes")
                    summary.stopped_early = True
                    break
            now = time.monotonic()
            if progress_every and now - last_report >= progress_every:
                last_report = now
                rate = summary.cases / (now - t_start)
                log(f"{name}: {summary.cases}/{cases} cases, {summary.ok} ok, "
                    f"{summary.rejected} rejected, {len(summary.crashes)} crashes, "
                    f"{rate:.0f} cases/s")
    finally:
        if worker is not None:
            worker.close()
        shutil.rmtree(scratch, ignore_errors=True)
    summary.seconds = time.monotonic() - t_start
    return summary


def replay(name: str, path: Path, *, timeout: float = DEFAULT_TIMEOUT,
           memory_mb: int = DEFAULT_MEMORY_MB, out: Path | None = None) -> dict:
    """Read one file in a limited worker (as a fuzz case would be); the outcome."""
    out = Path(out) if out is not None else ROOT / "build" / "fuzz"
    # The worker reads valid seeds before its memory is limited, as in a campaign, so that
    # lazy imports and caches are not charged to the replayed file.
    seeds = build_seeds(name, out / "seeds", lambda _: None)
    for k, s in enumerate(seeds):
        np.save(out / "seeds" / name / f"hot{k}.npy", s.hot)
    scratch = _scratch_root()
    config = {"format": name, "seed": 0, "timeout": timeout, "memory_mb": memory_mb,
              "scratch": str(scratch),
              "seeds": [{"path": str(s.path), "companions": [str(c) for c in s.companions],
                         "hot": None, "hot_file": str(out / "seeds" / name / f"hot{k}.npy"),
                         "label": s.label} for k, s in enumerate(seeds)]}
    worker = _Worker(config, timeout)
    try:
        r = worker.ask(f"replay {Path(path).resolve()}")
    finally:
        worker.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return r or {"status": "crash", "kind": "hang/killed", "msg": "worker died or hung"}


def format_summary(s: Summary) -> str:
    if s.skipped:
        return f"{s.format}: skipped ({s.skipped})"
    lines = [f"{s.format}: {s.cases} cases{' (stopped early)' if s.stopped_early else ''} "
             f"in {s.seconds:.1f} s: {s.ok} ok, {s.rejected} "
             f"rejected (WeightsError), {len(s.crashes)} crashes; slowest case "
             f"{s.slowest * 1000:.1f} ms (#{s.slowest_case}); peak RSS "
             f"{s.peak_rss_mb:.0f} MB (#{s.peak_rss_case}, address-space limit "
             f"{s.memory_limit_mb:.0f} MB)",
             "  seeds: " + "; ".join(s.seeds)]
    for cls, n in sorted(s.classes.items(), key=lambda kv: -kv[1])[:12]:
        lines.append(f"  {n:7d}  {cls}")
    if len(s.classes) > 12:
        lines.append(f"  ({len(s.classes) - 12} more rejection classes)")
    for w, n in sorted(s.warnings.items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"  warning x{n}: {w}")
    for sig, n in sorted(s.signatures.items(), key=lambda kv: -kv[1]):
        first = next(c for c in s.crashes if c["signature"] == sig)
        lines.append(f"  CRASH x{n} {sig}: first #{first['case']}: {first['msg']} "
                     f"[{' '.join(first['recipe'])}] {first.get('file', '')}")
    return "\n".join(lines)


# --- the bad-inputs table (docs/bad-inputs.md) ----------------------------------------------
def bad_predict_inputs() -> list[tuple[str, object]]:
    """``(label, x)`` for inputs every port's ``predict`` must refuse."""
    def full(shape, dtype=np.float32, fill=0.5):
        return np.full(shape, fill, dtype=dtype)

    nan = full((1, 3, 32, 32))
    nan[0, 1, 2, 3] = np.nan
    inf = full((2, 3, 32, 32))
    inf[1, 0, 0, 0] = -np.inf
    return [
        ("rank 3: one image without a batch axis, [3, 32, 32]", full((3, 32, 32))),
        ("rank 2, [32, 32]", full((32, 32))),
        ("rank 5, [1, 1, 3, 32, 32]", full((1, 1, 3, 32, 32))),
        ("a scalar", 1.0),
        ("NHWC layout, [1, 32, 32, 3]", full((1, 32, 32, 3))),
        ("1 channel (grayscale), [1, 1, 32, 32]", full((1, 1, 32, 32))),
        ("4 channels (RGBA), [1, 4, 32, 32]", full((1, 4, 32, 32))),
        ("uint8 pixels", full((1, 3, 32, 32), np.uint8, 128)),
        ("int64", full((1, 3, 32, 32), np.int64, 1)),
        ("bool", full((1, 3, 32, 32), np.bool_, True)),
        ("complex64", full((1, 3, 32, 32), np.complex64, 1)),
        ("strings", np.full((1, 3, 32, 32), "a")),
        ("ragged nested lists", [[[[0.0]]], [[[0.0, 1.0]]]]),
        ("empty batch, [0, 3, 32, 32]", full((0, 3, 32, 32))),
        ("zero-sized image, [1, 3, 0, 0]", full((1, 3, 0, 0))),
        ("16x16 image (v1.1 needs 17, v1.0 21)", full((1, 3, 16, 16))),
        ("rectangular 224x8", full((1, 3, 224, 8))),
        ("one NaN", nan),
        ("-inf in the second image", inf),
    ]


def _hostile_files(name: str, directory: Path) -> list[tuple[str, Path]]:
    """``(label, path)``: broken and hostile files for format ``name``."""
    import io
    import pickle
    import zipfile

    ext = formats.FORMATS[name][1][0]
    rng = random.Random(f"bad-inputs/{name}")
    seeds = build_seeds(name, directory / "seeds", lambda _: None)
    blob = seeds[0].path.read_bytes()
    out: list[tuple[str, Path]] = []

    def put(label: str, data: bytes) -> None:
        p = directory / f"case{len(out)}{ext}"
        p.write_bytes(data)
        out.append((label, p))

    out.append(("missing file", directory / f"missing{ext}"))
    d = directory / f"a-directory{ext}"
    d.mkdir(exist_ok=True)
    out.append(("a directory", d))
    put("empty file", b"")
    put("100 random bytes", rng.randbytes(100))
    put("the first 16 bytes of a valid file, then 4 KiB of junk",
        blob[:16] + rng.randbytes(4096))
    put("a valid file truncated to half", blob[: len(blob) // 2])
    put("a valid file truncated by one byte", blob[:-1])
    put("a valid file with 1 KiB of zeros appended", blob + bytes(1024))

    class _Evil:
        def __reduce__(self):
            return (open, (str(directory / "MARKER"), "w"))

    if name == "chainer":
        buf = io.BytesIO()
        np.savez(buf, **{"conv1/W": np.array([_Evil(), 1], dtype=object)})
        put("an .npz whose array is pickled objects (would run code)", buf.getvalue())
    if name == "torch":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps(_Evil(), protocol=2))
            z.writestr("archive/version", "3\n")
        put("a .pth whose data.pkl calls open() (would run code)", buf.getvalue())
        put("a legacy raw-pickle .pth", pickle.dumps({"a": 1}, protocol=2))
    if name == "safetensors":
        def st(header: bytes, data: bytes = b"") -> bytes:
            return struct.pack("<Q", len(header)) + header + data

        import struct
        put("header length 2**64-1", struct.pack("<Q", 2**64 - 1) + b"{}")
        put("header nested 100000 deep", st(b"[" * 100000 + b"]" * 100000))
        entry = b'{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
        put("a tensor named twice", st(b'{"a":' + entry + b',"a":' + entry + b"}", bytes(4)))
        put("dtype F16", st(b'{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}',
                            bytes(4)))
        put("shape [2**40] with 4 bytes of data",
            st(b'{"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4]}}',
               bytes(4)))
        put("data_offsets past the end",
            st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}}', bytes(4)))
        from .seeded import seeded_weights

        class codec:  # noqa: N801 - a raw encoder that keeps whatever tensors it is given
            @staticmethod
            def encode(w) -> bytes:
                header: dict = {"__metadata__": dict(w.meta)}
                chunks, offset = [], 0
                for key, t in w.tensors.items():
                    raw = np.ascontiguousarray(t, dtype="<f4").tobytes()
                    header[key] = {"dtype": "F32", "shape": list(t.shape),
                                   "data_offsets": [offset, offset + len(raw)]}
                    chunks.append(raw)
                    offset += len(raw)
                return st(json.dumps(header).encode(), b"".join(chunks))

        w = seeded_weights(Variant("1_1", 10))
        w.tensors.pop("fire5.squeeze.bias")
        put("a tensor missing (fire5.squeeze.bias)", codec.encode(w))
        w = seeded_weights(Variant("1_1", 10))
        w.tensors["conv1.weight"] = w.tensors["conv1.weight"][:32]
        put("conv1.weight with 32 filters instead of 64", codec.encode(w))
        w = seeded_weights(Variant("1_1", 10))
        w.tensors["conv10.bias"][3] = np.nan
        put("a NaN in conv10.bias", codec.encode(w))
        w = seeded_weights(Variant("1_1", 10))
        w.meta["num_classes"] = "ten"
        put("metadata num_classes='ten'", codec.encode(w))
    return out


def bad_inputs_table(work: Path) -> str:
    """The Markdown of ``docs/bad-inputs.md``: every case run, every message as produced."""
    import contextlib
    import io

    from . import numpy as ref
    from .cli import run as cli_run

    def clean(text: str, *paths: Path) -> str:
        for p in paths:
            text = text.replace(str(p), "FILE")
        text = re.sub(re.escape(str(work)) + r"[^\s:()']*", "FILE", text)
        return text.replace("|", "\\|")

    lines = [
        "# Bad inputs and the messages they get",
        "",
        "Generated by `tools/fuzz --table docs/bad-inputs.md` (it runs every case below; do not",
        "edit by hand).  Every reader raises `ports.errors.WeightsError`"
        " (`FILE (format): reason`);",
        "the command-line tools print it as one line `TOOL: error: MESSAGE` and exit with"
        " status 2",
        "(`--debug` shows the traceback instead).  `predict` raises `ValueError`.",
        "",
        "## Weight files (`ports.formats.read(FILE, format)`)",
        "",
    ]
    for name in formats.FORMATS:
        why = availability(name)
        lines += [f"### {name}", ""]
        if why is not None:
            lines += [f"Not generated: {why}.", ""]
            continue
        lines += ["| input | outcome |", "| --- | --- |"]
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        for label, path in _hostile_files(name, d):
            r = run_one(str(path), name, 30.0)
            if r["status"] == "ok":
                outcome = "accepted"
            elif r["status"] == "rejected":
                outcome = f"`{clean(r['msg'], path)}`"
            else:
                outcome = f"**CRASH** {r.get('kind')}: `{clean(r['msg'], path)}`"
            if (d / "MARKER").exists():
                outcome += " **(the pickled payload RAN)**"
            lines.append(f"| {label} | {outcome} |")
        lines.append("")
    lines += ["## Model inputs (`predict(model, x)`, SqueezeNet 1_1)", "",
              "| input | message |", "| --- | --- |"]
    model = ref.SqueezeNet("1_1", num_classes=10)
    for label, x in bad_predict_inputs():
        try:
            ref.predict(model, x)
            outcome = "accepted"
        except ValueError as e:
            outcome = f"`{clean(str(e))}`"
        lines.append(f"| {label} | {outcome} |")
    lines += ["", "## Command line", "", "| situation | stderr, exit status |", "| --- | --- |"]
    bad = work / "safetensors" / "case2.safetensors"

    def read_main(args):
        formats.read(args[0])
        return 0

    for label, argv in (("a broken file", [str(bad)]),
                        ("a missing file", [str(work / "missing.safetensors")]),
                        ("an unknown file ending", [str(work / "weights.bin")])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = cli_run(read_main, argv, prog="convert")
        lines.append(f"| {label} | `{clean(err.getvalue().strip(), bad)}`, {status} |")
    lines.append("")
    return "\n".join(lines)
