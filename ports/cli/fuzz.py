"""``tools/fuzz FORMAT... --cases N [--seed S] [--timeout-per-case T]``: mutation-fuzz readers.

Exit status 0 when every case ended in success or ``WeightsError``, 1 when any crashed
(inputs and notes under ``OUT/crashes/``), 2 on a bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import formats, fuzz
from . import command


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("format", nargs="*", help=f"format(s) or 'all': {', '.join(formats.FORMATS)}")
    p.add_argument("--cases", type=int, default=1000, help="cases per format (default 1000)")
    p.add_argument("--start", type=int, default=0, help="first case index (default 0)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--timeout-per-case", type=float, default=fuzz.DEFAULT_TIMEOUT,
                   metavar="T", help=f"seconds (default {fuzz.DEFAULT_TIMEOUT:g})")
    p.add_argument("--memory-mb", type=int, default=fuzz.DEFAULT_MEMORY_MB,
                   help="address space a worker may add to its start-up size "
                        f"(default {fuzz.DEFAULT_MEMORY_MB})")
    p.add_argument("--out", type=Path, default=fuzz.ROOT / "build" / "fuzz",
                   help="seeds, crashes/ and summaries (default build/fuzz)")
    p.add_argument("--replay", type=Path, metavar="FILE",
                   help="read FILE once as a fuzz case would be and print the outcome")
    p.add_argument("--max-crashes", type=int, default=1000,
                   help="stop a format's campaign after this many crashes (default 1000)")
    p.add_argument("--table", type=Path, metavar="MD",
                   help="run every bad-input case and write the table of messages to MD "
                        "(docs/bad-inputs.md)")
    p.add_argument("--progress", type=float, default=5.0, metavar="SECONDS",
                   help="progress line interval (0: none)")
    args = p.parse_args(argv)
    if args.table is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            text = fuzz.bad_inputs_table(Path(work))
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(text)
        print(f"wrote {args.table} ({text.count(chr(10))} lines)")
        return 1 if "**CRASH**" in text or "RAN)**" in text else 0
    if not args.format:
        p.error("name a format (or 'all')")
    names = list(formats.FORMATS) if args.format == ["all"] else args.format
    for name in names:
        if name not in formats.FORMATS:
            p.error(f"unknown format {name!r}; known: {', '.join(formats.FORMATS)}, all")
    if args.cases < 0 or args.timeout_per_case <= 0 or args.memory_mb <= 0:
        p.error("--cases must be >= 0, --timeout-per-case and --memory-mb positive")
    if args.replay is not None:
        if len(names) != 1:
            p.error("--replay takes exactly one format")
        r = fuzz.replay(names[0], args.replay, timeout=args.timeout_per_case,
                        memory_mb=args.memory_mb, out=args.out)
        print(json.dumps({k: v for k, v in r.items() if k != "tb"}, indent=1))
        if r.get("tb"):
            print(r["tb"])
        return 1 if r.get("status") == "crash" else 0
    crashed = False
    summaries = []
    for name in names:
        s = fuzz.fuzz(name, args.cases, seed=args.seed, timeout=args.timeout_per_case,
                      memory_mb=args.memory_mb, out=args.out, start=args.start,
                      progress_every=args.progress, max_crashes=args.max_crashes)
        summaries.append(s)
        crashed |= bool(s.crashes)
        if not s.skipped:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"summary-{name}-s{args.seed}.json").write_text(
                json.dumps(s.as_dict(), indent=1) + "\n")
        print(fuzz.format_summary(s), flush=True)
    if len(summaries) > 1:
        print("\nformat            cases       ok  rejected  crashes  slowest ms  peak RSS MB")
        for s in summaries:
            if s.skipped:
                print(f"{s.format:15s}  skipped: {s.skipped}")
            else:
                print(f"{s.format:15s} {s.cases:6d} {s.ok:8d} {s.rejected:9d} "
                      f"{len(s.crashes):8d} {s.slowest * 1000:11.1f} {s.peak_rss_mb:12.0f}")
    return 1 if crashed else 0



entry = command(main, "fuzz")  # console script squeezenet-fuzz

if __name__ == "__main__":
    sys.exit(entry())
