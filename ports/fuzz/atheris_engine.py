"""The coverage-guided engine (``tools/fuzz --engine atheris``): atheris, libFuzzer underneath.

For a reader, the seed files of :mod:`ports.fuzz.seeds` are copied into its corpus
directory (``OUT/corpus/FORMAT``, kept between runs: libFuzzer adds every input that reaches
new code to it) and :mod:`ports.fuzz.atheris_target` runs under libFuzzer with
``-runs`` (cases), ``-max_total_time`` (seconds), ``-timeout`` (per case), ``-rss_limit_mb``
(the process's resident size at start plus ``memory_mb``; the target also caps its address
space by as much) and ``-artifact_prefix=OUT/crashes/FORMAT-atheris-``.  libFuzzer stops at
the first crash; the engine then names the crash file by its kind and the reader's file
ending, writes a note beside it (message, traceback, ``tools/fuzz FORMAT --replay FILE``),
and starts libFuzzer again on the grown corpus with the budget that is left, up to
``max_crashes``.

Needs ``atheris`` (``python3 -m tox -e fuzz``); :func:`available` says whether it is here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ports import formats

from .outcome import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, Summary, peak_rss_kb, signature
from .seeds import ROOT, _print, availability, build_seeds

TARGET = Path(__file__).resolve().parent / "atheris_target.py"
FIELDS = ("cases", "ok", "rejected", "slowest", "slowest_case", "peak_rss_kb",
          "peak_rss_case")  # as in atheris_target.FIELDS
INSTRUMENT = ("ports",)
MAX_SAVED_PER_SIGNATURE = 5
# How libFuzzer's "ERROR: libFuzzer: ..." line starts, for each kind of finding.
_KINDS = {"timeout": "timeout", "out-of-memory": "memory", "deadly signal": "signal",
          "fuzz target exited": "exception", "malloc limit": "memory"}


def available() -> str | None:
    """``None`` if atheris can be imported here, else why not (one line)."""
    if importlib.util.find_spec("atheris") is None:
        return ("atheris is not installed in this Python (python3 -m tox -e fuzz has it; "
                "--engine mutation needs nothing)")
    return None


def _scratch_file(ext: str) -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="squeezenet-atheris-", dir=base)) / f"case{ext}"


def seed_corpus(name: str, out: Path, log: Callable[[str], None] = _print):
    """Write the seeds of ``name`` and copy them into ``OUT/corpus/NAME`` (kept if there);
    ``(seeds, corpus directory)``."""
    seeds = build_seeds(name, out / "seeds", log)
    if seeds[0].root is not None:  # a directory format: the corpus is one file of the folder
        rel = seeds[0].path.relative_to(seeds[0].root)
        seeds = [s for s in seeds if s.root and s.path.relative_to(s.root) == rel]
    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        blob = s.path.read_bytes()
        target = corpus / f"seed-{hashlib.sha1(blob).hexdigest()}"
        if not target.exists():
            target.write_bytes(blob)
    return seeds, corpus


def fuzz(name: str, cases: int | None, *, seed: int = 0, timeout: float = DEFAULT_TIMEOUT,
         memory_mb: int = DEFAULT_MEMORY_MB, out: Path | None = None,
         log: Callable[[str], None] = _print, progress_every: float = 5.0,
         max_crashes: int = 1000, seconds: float | None = None,
         instrument: tuple[str, ...] = INSTRUMENT) -> Summary:
    """Run libFuzzer on reader ``name`` for ``cases`` executions and/or ``seconds``
    (at least one of them); the summary."""
    if cases is None and seconds is None:
        raise ValueError("give cases, seconds or both")
    summary = Summary(name, engine="atheris")
    why = availability(name) or available()
    if why is not None:
        summary.skipped = why
        log(f"{name}: skipped: {why}")
        return summary
    out = Path(out).resolve() if out is not None else ROOT / "build" / "fuzz"
    t_start = time.monotonic()
    seeds, corpus = seed_corpus(name, out, log)
    summary.seeds = [f"{s.label} ({s.path.stat().st_size} bytes)" for s in seeds]
    ext = formats.FORMATS[name][1][0]
    crash_dir = out / "crashes"
    crash_dir.mkdir(parents=True, exist_ok=True)
    work = out / "atheris"
    work.mkdir(parents=True, exist_ok=True)
    case_path = read_path = _scratch_file(ext)
    if seeds[0].root is not None:  # a copy of the folder; each input replaces one file in it
        read_path = case_path.parent / seeds[0].root.name
        shutil.copytree(seeds[0].root, read_path)
        case_path = read_path / seeds[0].path.relative_to(seeds[0].root)
    max_len = max(s.path.stat().st_size for s in seeds) + 65536
    saved: dict[str, int] = {}
    t_cases = None
    try:
        while True:
            left_cases = None if cases is None else cases - summary.cases
            left_secs = None if seconds is None or t_cases is None \
                else seconds - (time.monotonic() - t_cases)
            if (left_cases is not None and left_cases <= 0) or \
                    (left_secs is not None and left_secs < 1):
                break
            if t_cases is None:
                t_cases = time.monotonic()
                left_secs = seconds
            run = _run_once(name, work, corpus, (case_path, read_path), seeds, instrument,
                            summary.cases,
                            seed=seed + 1 + len(summary.crashes), timeout=timeout,
                            memory_mb=memory_mb, runs=left_cases, seconds=left_secs,
                            max_len=max_len, log=log, progress_every=progress_every,
                            total=cases)
            _merge(summary, run)
            crash = run.get("crash")
            if crash is None:
                if run["rc"] != 0:
                    raise RuntimeError(f"{name}: libFuzzer exited with status {run['rc']} "
                                       f"and no crash file; see {run['log']}")
                break
            record = _keep_crash(name, ext, crash, crash_dir, saved, seed,
                                 folder=(read_path, case_path) if read_path != case_path
                                 else None)
            if summary.add_crash(record):
                log(f"{name}: CRASH case {record['case']}: {record['kind']}: "
                    f"{record['msg']}" + (f" -> {record['file']}" if "file" in record else ""))
            if len(summary.crashes) >= max_crashes:
                log(f"{name}: stopping after {max_crashes} crashes")
                summary.stopped_early = True
                break
    finally:
        shutil.rmtree(read_path.parent, ignore_errors=True)
    summary.seconds = time.monotonic() - t_start
    return summary


def _run_once(name: str, work: Path, corpus: Path, case: tuple[Path, Path], seeds, instrument,
              first_case: int, *, seed: int, timeout: float, memory_mb: int,
              runs: int | None, seconds: float | None, max_len: int, log, progress_every,
              total) -> dict:
    """One libFuzzer process until its budget is spent or it finds a crash."""
    config_path = work / f"{name}.config"
    for suffix in (".json", ".counts"):
        config_path.with_suffix(suffix).unlink(missing_ok=True)
    config_path.write_text(json.dumps({
        "format": name, "first_case": first_case, "memory_mb": memory_mb,
        "instrument": list(instrument), "case_path": str(case[0]), "read_path": str(case[1]),
        "seeds": [str(s.target) for s in seeds]}))
    rss_mb = max(256, peak_rss_kb() // 1024)  # a fresh Python with numpy is about as big
    args = [f"-timeout={max(1, math.ceil(timeout))}",
            f"-rss_limit_mb={rss_mb + memory_mb}", f"-max_len={max_len}", "-len_control=0",
            f"-seed={seed}", f"-artifact_prefix={work.parent / 'crashes' / name}-atheris-",
            "-print_final_stats=1"]
    if runs is not None:
        args.append(f"-runs={runs}")
    if seconds is not None:
        args.append(f"-max_total_time={max(1, int(seconds))}")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    log_path = work / f"{name}.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, str(TARGET), str(config_path), *args,
                                 str(corpus)], stdout=log_file, stderr=subprocess.STDOUT,
                                cwd=str(ROOT), env=env)
        last = time.monotonic()
        while True:
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            if progress_every and time.monotonic() - last >= progress_every:
                last = time.monotonic()
                c = _counts(config_path)
                done = first_case + int(c["cases"])
                log(f"{name}: {done}/{total if total is not None else '?'} cases, "
                    f"{int(c['ok'])} ok, {int(c['rejected'])} rejected (this run), "
                    f"{c['cases'] / (time.monotonic() - t0):.0f} cases/s")
    text = log_path.read_text(errors="replace")
    run = {"rc": proc.returncode, "log": str(log_path), **_counts(config_path)}
    try:
        extra = json.loads(config_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        extra = {}
    run.update(classes=extra.get("classes", {}), warnings=extra.get("warnings", {}),
               memory_limit_mb=extra.get("memory_limit_mb", 0.0))
    for w in re.findall(r"^warning: seed .*$", text, re.M):
        log(f"{name}: {w}")
    artifact = re.search(r"Test unit written to (\S+)", text)
    if proc.returncode != 0 and artifact:
        found = re.search(r"ERROR: libFuzzer: ([a-z -]+)", text)
        what = found.group(1) if found else ""
        kind = next((k for head, k in _KINDS.items() if what.startswith(head)), "crash")
        crash = {"artifact": artifact.group(1), "kind": kind,
                 "msg": found.group(0) if found else f"libFuzzer exited {proc.returncode}",
                 "case": first_case + int(run["cases"]), "log": str(log_path),
                 "tb": text[-4000:]}
        py = extra.get("crash")
        if kind == "exception" and py is not None:
            crash.update({k: py[k] for k in ("kind", "msg", "tb", "case", "secs")})
        else:  # libFuzzer ended it during the case: that case was not counted
            run["cases"] += 1
            crash["secs"] = timeout
        run["crash"] = crash
    return run


def _counts(config_path: Path) -> dict:
    try:
        c = np.fromfile(config_path.with_suffix(".counts"), np.float64)
    except OSError:
        c = np.zeros(0)
    if len(c) != len(FIELDS):
        c = np.zeros(len(FIELDS))
    return dict(zip(FIELDS, (float(v) for v in c)))


def _merge(summary: Summary, run: dict) -> None:
    summary.cases += int(run["cases"])
    summary.ok += int(run["ok"])
    summary.rejected += int(run["rejected"])
    if run["slowest"] > summary.slowest:
        summary.slowest, summary.slowest_case = run["slowest"], int(run["slowest_case"])
    if run["peak_rss_kb"] / 1024 > summary.peak_rss_mb:
        summary.peak_rss_mb = run["peak_rss_kb"] / 1024
        summary.peak_rss_case = int(run["peak_rss_case"])
    for key, n in run["classes"].items():
        summary.classes[key] = summary.classes.get(key, 0) + n
    for key, n in run["warnings"].items():
        summary.warnings[key] = summary.warnings.get(key, 0) + n
    summary.memory_limit_mb = max(summary.memory_limit_mb, run["memory_limit_mb"])


def _keep_crash(name: str, ext: str, crash: dict, crash_dir: Path, saved: dict,
                seed: int, folder: tuple[Path, Path] | None = None) -> dict:
    """Rename libFuzzer's crash file to ``FORMAT-atheris-KIND-SHA{ext}`` with a note beside
    it (at most MAX_SAVED_PER_SIGNATURE per signature; the others are removed).  A directory
    format's ``folder`` (the case folder, the file each input replaces) is copied with the
    crash input in place of that file."""
    sig = signature(crash)
    record = {"case": crash["case"], "seed_file": "(libFuzzer corpus)", "recipe": [],
              "kind": crash["kind"], "msg": crash["msg"], "signature": sig}
    src = Path(crash["artifact"])
    if not src.is_absolute():
        src = ROOT / src
    if not src.is_file():
        return record
    if saved.get(sig, 0) >= MAX_SAVED_PER_SIGNATURE:
        src.unlink()
        return record
    saved[sig] = saved.get(sig, 0) + 1
    digest = hashlib.sha1(src.read_bytes()).hexdigest()[:16]
    stem = f"{name}-atheris-{crash['kind']}-{digest}"
    target = crash_dir / f"{stem}{ext}"
    if folder is not None:
        shutil.copytree(folder[0], target, dirs_exist_ok=True)
        src.replace(target / folder[1].relative_to(folder[0]))
    else:
        src.replace(target)
    (crash_dir / f"{stem}.txt").write_text(
        f"format: {name}\nengine: atheris (libFuzzer -seed {seed}), case {crash['case']}\n"
        f"outcome: {crash['kind']}: {crash['msg']}\n"
        f"libFuzzer log: {crash['log']}\n"
        f"replay: tools/fuzz {name} --replay {target}\n\n{crash.get('tb', '')}")
    record["file"] = str(target)
    return record
