"""The atheris fuzz target of one reader; run as a script by :mod:`.atheris_engine`.

``python ports/fuzz/atheris_target.py CONFIG.json [libFuzzer options] CORPUS_DIR``

Each input is written to a scratch file and read with :func:`ports.formats.read`: success
and :class:`ports.errors.WeightsError` are fine; any other exception (a ``MemoryError``
too, also one a reader turned into a ``WeightsError``) is raised to atheris, which writes
the input to ``-artifact_prefix`` as ``crash-SHA1`` and stops; libFuzzer's own limits
(``-timeout``, ``-rss_limit_mb``) write ``timeout-``/``oom-`` files.  The ``ports`` package
is instrumented for coverage (imported, and every seed read once, inside
``atheris.instrument_imports``, so that lazily imported parts are instrumented too); then the
address space is capped at its size plus ``memory_mb`` (``RLIMIT_AS``: a huge allocation
fails at once as ``MemoryError`` instead of swapping).

The tally goes to two files beside CONFIG.json (libFuzzer ends the process with ``exit``,
so nothing runs at the end): ``.counts``, a memory-mapped array updated on every case
(exact however the process ends), and ``.json`` (rejection classes, warnings; rewritten at
most every half second and before a crash is raised).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

# Run as a script: its own folder must not shadow top-level modules; the checkout must be
# importable.
_ROOT = Path(__file__).resolve().parents[2]
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

# Counters in the memory-mapped .counts file (float64 each).
FIELDS = ("cases", "ok", "rejected", "slowest", "slowest_case", "peak_rss_kb",
          "peak_rss_case")


def main() -> None:
    import resource

    import atheris
    import numpy as np

    config_path = Path(sys.argv[1])
    config = json.loads(config_path.read_text())
    name, first_case = config["format"], config["first_case"]
    with atheris.instrument_imports(include=config["instrument"]):
        from ports import formats
        from ports.errors import WeightsError  # noqa: F401 - imported while instrumenting

        formats.codec(name)
        for seed in config["seeds"]:  # imports what the codec loads lazily, instrumented
            try:
                formats.read(seed, name)
            except Exception as e:  # noqa: BLE001 - reported by the engine, not fatal here
                print(f"warning: seed {seed} does not read back: {e}", file=sys.stderr)
    from ports.fuzz.outcome import classify, is_crash, message_class, peak_rss_kb, vm_bytes

    counts = np.memmap(config_path.with_suffix(".counts"), np.float64, "w+",
                       shape=(len(FIELDS),))
    counts[:] = 0
    extra = {"classes": {}, "warnings": {}, "rss_base_kb": peak_rss_kb()}
    state = {"written": 0.0}
    scratch = Path(config["case_path"])
    target = Path(config.get("read_path") or scratch)  # a directory format: the folder

    def save(force: bool = False) -> None:
        now = time.monotonic()
        if force or now - state["written"] >= 0.5:
            state["written"] = now
            tmp = config_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(extra))
            os.replace(tmp, config_path.with_suffix(".json"))

    def test_one(data: bytes) -> None:
        case = first_case + int(counts[0])
        with open(scratch, "wb") as f:
            f.write(data)
        t0 = time.perf_counter()
        status, crash = "ok", None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                formats.read(target, name)
            if caught:
                key = message_class(f"{caught[0].category.__name__}: {caught[0].message}")
                extra["warnings"][key] = extra["warnings"].get(key, 0) + 1
        except Exception as e:  # noqa: BLE001 - sorted below; BaseException passes through
            if is_crash(e):
                crash = e
            else:
                status = "rejected"
                cls = classify(e)["cls"]
                extra["classes"][cls] = extra["classes"].get(cls, 0) + 1
        secs = time.perf_counter() - t0
        rss = peak_rss_kb()
        counts[0] += 1
        if status == "ok" and crash is None:
            counts[1] += 1
        elif status == "rejected":
            counts[2] += 1
        if secs > counts[3]:
            counts[3], counts[4] = secs, case
        if rss > counts[5]:
            counts[5], counts[6] = rss, case
        if crash is not None:
            r = classify(crash)
            extra["crash"] = {"case": case, "secs": secs, **r}
            save(force=True)
            raise crash
        save()

    limit = vm_bytes() + config["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    extra["memory_limit_mb"] = limit / 2**20
    save(force=True)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
