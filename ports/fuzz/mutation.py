"""The home-made mutation engine (``tools/fuzz``'s default).

Each case mutates one seed file (:mod:`ports.fuzz.seeds`): bit flips, boundary bytes,
1/2/4/8-byte integer fields set to boundary values or nudged, truncation, junk appended or
inserted, chunks duplicated or deleted, numbers in text replaced, splices of two seeds; then
:func:`ports.formats.read` reads it.  Where mutations land matters more than how many there
are: seed files are mostly float data, so most mutations hit the seeds' *hot* bytes (their
structure).  A crash's input is kept under ``OUT/crashes/`` with a note (message,
traceback, how to replay it).

Cases run in worker subprocesses (many cases each) limited by ``RLIMIT_AS`` (memory) and an
interval timer (time); the parent kills a worker that stops answering (a hang in C code)
and starts a fresh one.  Case ``i`` of format ``F`` under ``--seed S`` is a pure function of
``(S, F, i)`` and the seed files, so every run and every crash is reproducible.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ports import formats

from .outcome import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    Summary,
    peak_rss_kb,
    run_one,
    signature,
    vm_bytes,
)
from .seeds import ROOT, Seed, _print, availability, build_seeds

MAX_SAVED_PER_SIGNATURE = 5
_WORKER = "from ports.fuzz.mutation import _worker_main; _worker_main()"


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


# --- worker --------------------------------------------------------------------------------
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
                  else np.load(s["hot_file"]), s["label"],
                  Path(s["root"]) if s.get("root") else None) for s in config["seeds"]]
    mutator = Mutator(seeds, name, config["seed"])
    scratch = Path(config["scratch"])
    case_paths = []  # (the file a case writes, what it reads)
    for k, s in enumerate(seeds):
        d = scratch / f"s{k}"
        d.mkdir(parents=True, exist_ok=True)
        if s.root is not None:  # a copy of the folder; each case rewrites one file in it
            copy = d / s.root.name
            if not copy.exists():
                shutil.copytree(s.root, copy)
            case_paths.append((copy / s.path.relative_to(s.root), copy))
            continue
        for c in s.companions:
            # A copy, not a link: a reader refuses a companion that is a symbolic link.
            copy = d / c.name
            if not copy.exists():
                shutil.copyfile(c, copy)
        case_paths.append((d / s.path.name, d / s.path.name))
    # Warm up (imports, caches) on the seeds themselves, then limit memory.
    formats.codec(name)
    for s in seeds:
        r = run_one(str(s.target), name, config["timeout"] * 3)
        answer({"seed": s.label, **{k: v for k, v in r.items() if k != "tb"}})
    limit = vm_bytes() + config["memory_mb"] * 1024 * 1024
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
            with open(case_paths[k][0], "wb") as f:
                f.write(blob)
            path = str(case_paths[k][1])
        r = run_one(path, name, config["timeout"])
        r["rss_kb"] = peak_rss_kb()
        answer(r)


class _Worker:
    def __init__(self, config: dict, timeout: float) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER],
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
def _scratch_root() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="squeezenet-fuzz-", dir=shm))
    base = ROOT / "build" / "fuzz" / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=base))


def _worker_config(name: str, seed: int, timeout: float, memory_mb: int, seeds: list[Seed],
                   seed_dir: Path, scratch: Path) -> dict:
    for k, s in enumerate(seeds):
        np.save(seed_dir / name / f"hot{k}.npy", s.hot)
    return {"format": name, "seed": seed, "timeout": timeout, "memory_mb": memory_mb,
            "scratch": str(scratch),
            "seeds": [{"path": str(s.path), "companions": [str(c) for c in s.companions],
                       "hot": None, "hot_file": str(seed_dir / name / f"hot{k}.npy"),
                       "label": s.label, "root": str(s.root) if s.root else None}
                      for k, s in enumerate(seeds)]}


def fuzz(name: str, cases: int, *, seed: int = 0, timeout: float = DEFAULT_TIMEOUT,
         memory_mb: int = DEFAULT_MEMORY_MB, out: Path | None = None, start: int = 0,
         log: Callable[[str], None] = _print, progress_every: float = 5.0,
         max_crashes: int = 1000, indices: Iterable[int] | None = None,
         seconds: float | None = None, hostile: bool = True) -> Summary:
    """Run cases ``start .. start+cases-1`` (or exactly ``indices``) of format ``name``;
    returns the summary.  Stops early after ``max_crashes`` crashes (each costs a fresh
    worker) or, given ``seconds``, when that much time has passed since the first case.
    ``hostile=False`` leaves out the hostile seeds (:func:`build_seeds`): the cases are
    then those of campaigns before they were added."""
    summary = Summary(name, engine="mutation")
    why = availability(name)
    if why is not None:
        summary.skipped = why
        log(f"{name}: skipped: {why}")
        return summary
    out = Path(out).resolve() if out is not None else ROOT / "build" / "fuzz"
    crash_dir = out / "crashes"
    t_start = time.monotonic()
    seeds = build_seeds(name, out / "seeds", log, hostile=hostile)
    summary.seeds = [f"{s.label} ({s.path.stat().st_size} bytes, {len(s.hot)} hot)"
                     for s in seeds]
    mutator = Mutator(seeds, name, seed)
    scratch = _scratch_root()
    config = _worker_config(name, seed, timeout, memory_mb, seeds, out / "seeds", scratch)
    saved: dict[str, int] = {}
    worker: _Worker | None = None
    last_report = time.monotonic()
    t_cases = None
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
            if t_cases is None:
                t_cases = time.monotonic()
            elif seconds is not None and time.monotonic() - t_cases >= seconds:
                summary.stopped_early = True
                break
            r = worker.ask(str(i))
            if r is None:
                r = {"status": "crash", "kind": "hang/killed",
                     "msg": f"worker died or gave no answer within {timeout * 2 + 5:g} s "
                            f"(exit status {worker.proc.returncode})", "secs": timeout * 2 + 5}
                worker = None
            summary.count(r, i)
            if r["status"] == "crash":
                sig = signature(r)
                k, blob, recipe = mutator.case(i)
                record = {"case": i, "seed_file": seeds[k].label, "recipe": recipe,
                          "kind": r.get("kind"), "msg": r.get("msg"), "signature": sig}
                if saved.get(sig, 0) < MAX_SAVED_PER_SIGNATURE:
                    saved[sig] = saved.get(sig, 0) + 1
                    crash_dir.mkdir(parents=True, exist_ok=True)
                    stem = f"{name}-s{seed}-c{i}-{r.get('kind', 'crash').replace('/', '-')}"
                    root = seeds[k].root
                    target = crash_dir / f"{stem}{(root or seeds[k].path).name[len('seed0'):]}"
                    if root is not None:  # the folder, with the mutated file in it
                        shutil.copytree(root, target, dirs_exist_ok=True)
                        (target / seeds[k].path.relative_to(root)).write_bytes(blob)
                    else:
                        target.write_bytes(blob)
                    (crash_dir / f"{stem}.txt").write_text(
                        f"format: {name}\ncase: {i} (--seed {seed})\nseed file: "
                        f"{seeds[k].path}\nmutations: {' '.join(recipe)}\n"
                        f"outcome: {r.get('kind')}: {r.get('msg')}\n"
                        f"replay: tools/fuzz {name} --replay {target}\n\n{r.get('tb', '')}")
                    record["file"] = str(target)
                if summary.add_crash(record):
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
    """Read one file in a limited worker (as a fuzz case would be); the outcome.  Any
    engine's crash file replays here."""
    out = Path(out).resolve() if out is not None else ROOT / "build" / "fuzz"
    # The worker reads valid seeds before its memory is limited, as in a campaign, so that
    # lazy imports and caches are not charged to the replayed file.
    seeds = build_seeds(name, out / "seeds", lambda _: None)
    scratch = _scratch_root()
    config = _worker_config(name, 0, timeout, memory_mb, seeds, out / "seeds", scratch)
    worker = _Worker(config, timeout)
    try:
        r = worker.ask(f"replay {Path(path).resolve()}")
    finally:
        worker.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return r or {"status": "crash", "kind": "hang/killed", "msg": "worker died or hung"}
