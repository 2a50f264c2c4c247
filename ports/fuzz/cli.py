"""``tools/fuzz FORMAT... [--cases N] [--seconds S] [--engine E]``: fuzz the readers.

Exit status 0 when every case ended in success or ``WeightsError``, 1 when any crashed
(inputs and notes under ``OUT/crashes/``), 2 on a bad command line or a missing engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ports import formats
from ports.cli import command

from . import atheris_engine, mutation
from .bad_inputs import bad_inputs_table
from .outcome import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, format_summary, summary_table
from .seeds import ROOT

ENGINES = ("mutation", "atheris")
DEFAULT_ENGINE = "mutation"  # docs/fuzzing.md: the comparison that chose it


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("format", nargs="*", help=f"format(s) or 'all': {', '.join(formats.FORMATS)}")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help=f"mutation: the home-made engine; atheris: coverage-guided (libFuzzer; "
                        f"needs atheris: python3 -m tox -e fuzz) (default {DEFAULT_ENGINE})")
    p.add_argument("--cases", type=int, default=None,
                   help="cases per format (default 1000, or unlimited with --seconds)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop each format after this many seconds of cases")
    p.add_argument("--start", type=int, default=0,
                   help="mutation engine: first case index (default 0)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--timeout-per-case", type=float, default=DEFAULT_TIMEOUT,
                   metavar="T", help=f"seconds (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                   help="memory a case may add to the fuzzing process's start-up size "
                        f"(default {DEFAULT_MEMORY_MB})")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz",
                   help="seeds/, corpus/, crashes/ and summaries (default build/fuzz)")
    p.add_argument("--replay", type=Path, metavar="FILE",
                   help="read FILE once as a fuzz case would be (any engine's crash file) "
                        "and print the outcome")
    p.add_argument("--max-crashes", type=int, default=1000,
                   help="stop a format's campaign after this many crashes (default 1000)")
    p.add_argument("--table", type=Path, metavar="MD",
                   help="run every bad-input case and write the table of messages to MD "
                        "(docs/bad-inputs.md)")
    p.add_argument("--progress", type=float, default=5.0, metavar="SECONDS",
                   help="progress line interval (0: none)")
    args = p.parse_args(argv)
    if args.table is not None:
        with tempfile.TemporaryDirectory() as work:
            text = bad_inputs_table(Path(work))
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
    if (args.cases is not None and args.cases < 0) or args.timeout_per_case <= 0 \
            or args.memory_mb <= 0 or (args.seconds is not None and args.seconds <= 0):
        p.error("--cases must be >= 0; --seconds, --timeout-per-case and --memory-mb "
                "positive")
    if args.replay is not None:
        if len(names) != 1:
            p.error("--replay takes exactly one format")
        r = mutation.replay(names[0], args.replay, timeout=args.timeout_per_case,
                            memory_mb=args.memory_mb, out=args.out)
        print(json.dumps({k: v for k, v in r.items() if k != "tb"}, indent=1))
        if r.get("tb"):
            print(r["tb"])
        return 1 if r.get("status") == "crash" else 0
    if args.engine == "atheris":
        why = atheris_engine.available()
        if why is not None:
            print(f"fuzz: error: {why}", file=sys.stderr)
            return 2
        if args.start:
            p.error("--start is for --engine mutation (atheris cases are not numbered "
                    "in advance)")
    cases = args.cases if args.cases is not None or args.seconds is not None else 1000
    crashed = False
    summaries = []
    for name in names:
        common = dict(seed=args.seed, timeout=args.timeout_per_case, memory_mb=args.memory_mb,
                      out=args.out, progress_every=args.progress,
                      max_crashes=args.max_crashes, seconds=args.seconds)
        if args.engine == "atheris":
            s = atheris_engine.fuzz(name, cases, **common)
        else:
            s = mutation.fuzz(name, cases if cases is not None else 1 << 62, start=args.start,
                              **common)
        summaries.append(s)
        crashed |= bool(s.crashes)
        if not s.skipped:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"summary-{name}-{s.engine}-s{args.seed}.json").write_text(
                json.dumps(s.as_dict(), indent=1) + "\n")
        print(format_summary(s), flush=True)
    if len(summaries) > 1:
        print()
        print(summary_table(summaries))
    return 1 if crashed else 0


entry = command(main, "fuzz")

if __name__ == "__main__":
    sys.exit(entry())
