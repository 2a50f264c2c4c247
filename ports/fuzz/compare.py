"""The two engines measured on the same budget per reader (``docs/fuzzing.md``).

``python -m ports.fuzz.compare [FORMAT... | all] --seconds 60 [--doc docs/fuzzing.md]``
(in the ``fuzz`` tox environment: it needs atheris and coverage.py)

For each reader both engines run side by side (one core each, so that a busy machine slows
both alike) for the same number of seconds from seed 0, in fresh folders.  Then each
engine's inputs are read again under coverage.py (line and branch coverage of
``ports/formats``, including the HDF5 sandbox's helper process): every case the mutation engine ran
(they are regenerated from the seeds), and atheris's corpus (libFuzzer keeps every input
that reached new instrumented code) plus its crash files.  A row "seeds only" is the
coverage of reading the seed files alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ports import formats

from . import atheris_engine, mutation
from .outcome import Summary
from .seeds import ROOT, build_seeds

ENGINE_NAMES = {"mutation": "home-made mutation", "atheris": "atheris 3.0.0 (libFuzzer)"}


def codec_files(name: str) -> list[str]:
    """The files of ``ports/formats`` that belong to reader ``name`` (its module and its
    helpers, e.g. ``caffe_schema.py``)."""
    module = formats.FORMATS[name][0]
    return sorted(p.name for p in (ROOT / "ports" / "formats").glob(f"{module}*.py"))


def run_pair(name: str, seconds: float, out: Path, log=print) -> dict[str, Summary]:
    """Both engines on reader ``name`` for ``seconds`` each, at the same time."""
    def one(engine: str) -> Summary:
        d = out / engine
        kw = dict(seed=0, out=d, log=lambda m: log(f"[{engine}] {m}"), progress_every=0,
                  seconds=seconds)
        if engine == "atheris":
            return atheris_engine.fuzz(name, None, **kw)
        return mutation.fuzz(name, 1 << 62, **kw)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(("mutation", "atheris"), pool.map(one, ("mutation", "atheris"))))


def coverage_of(name: str, engine: str | None, out: Path, cases: int) -> dict:
    """Line and branch coverage of ``ports/formats`` when reading ``engine``'s inputs
    (``None``: the seeds alone), measured in a fresh process."""
    seeds = build_seeds(name, out / "cov-seeds", lambda _: None)
    manifest = {"format": name, "engine": engine, "cases": cases,
                "seeds": [{"path": str(s.path), "hot": s.hot.tolist(), "label": s.label}
                          for s in seeds],
                "corpus": str(out / "atheris" / "corpus" / name),
                "crashes": str(out / (engine or "none") / "crashes")}
    with tempfile.TemporaryDirectory() as tmp:
        m = Path(tmp) / "manifest.json"
        m.write_text(json.dumps(manifest))
        report = Path(tmp) / "coverage.json"
        rc = subprocess.run([sys.executable, "-m", "ports.fuzz.compare", "--measure",
                             str(m), str(report)], cwd=str(ROOT),
                            env=dict(os.environ, PYTHONPATH=str(ROOT))).returncode
        if rc != 0:
            raise RuntimeError(f"coverage run for {name}/{engine} failed ({rc})")
        data = json.loads(report.read_text())
    files = {Path(k).name: v["summary"] for k, v in data["files"].items()}
    mine = [files.get(f) for f in codec_files(name)]
    mine = [f for f in mine if f]
    return {
        "lines": sum(f["covered_lines"] for f in mine),
        "statements": sum(f["num_statements"] for f in mine),
        "branches": sum(f["covered_branches"] for f in mine),
        "num_branches": sum(f["num_branches"] for f in mine),
        "inputs": data["inputs"],
        "per_file": {k: [v["covered_lines"], v["num_statements"], v["covered_branches"],
                         v["num_branches"]] for k, v in files.items()},
    }


def _measure(manifest_path: Path, report: Path) -> None:
    """In a fresh process: read every input of one engine under coverage.py."""
    import resource

    import coverage
    import numpy as np

    manifest = json.loads(manifest_path.read_text())
    tmp = manifest_path.parent
    rc = tmp / ".coveragerc"
    rc.write_text(f"[run]\nbranch = True\nparallel = True\ndata_file = {tmp}/.coverage\n"
                  f"include = {ROOT}/ports/formats/*\n"
                  "patch =\n    subprocess\n    fork\n    _exit\n")
    cov = coverage.Coverage(config_file=str(rc))
    cov.start()
    from .outcome import run_one, vm_bytes
    from .seeds import Seed

    name = manifest["format"]
    formats.codec(name)
    seeds = [Seed(Path(s["path"]), [], np.asarray(s["hot"], np.int64), s["label"])
             for s in manifest["seeds"]]
    for s in seeds:
        run_one(str(s.path), name, 60.0)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + 1024 * 2**20, hard))
    ext = formats.FORMATS[name][1][0]
    case = tmp / f"case{ext}"
    n = 0
    if manifest["engine"] == "mutation":
        mutator = mutation.Mutator(seeds, name, 0)
        for i in range(manifest["cases"]):
            case.write_bytes(mutator.case(i)[1])
            run_one(str(case), name, 10.0)
            n += 1
    elif manifest["engine"] == "atheris":
        for p in sorted(Path(manifest["corpus"]).iterdir()):
            case.write_bytes(p.read_bytes())
            run_one(str(case), name, 10.0)
            n += 1
    crashes = Path(manifest["crashes"])
    if manifest["engine"] and crashes.is_dir():
        for p in sorted(crashes.iterdir()):
            if p.suffix != ".txt":
                case.write_bytes(p.read_bytes())
                run_one(str(case), name, 10.0)
                n += 1
    sandbox = sys.modules.get("ports.formats._sandbox")
    if sandbox is not None and hasattr(sandbox, "_close"):
        sandbox._close()  # the HDF5 helper process saves its coverage as it exits
    cov.stop()
    cov.save()
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    cov.combine(data_paths=[str(tmp)])
    cov.json_report(outfile=str(report))
    data = json.loads(report.read_text())
    data["inputs"] = n
    report.write_text(json.dumps(data))


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / max(1, whole):.0f}%)"


def table(results: dict) -> str:
    """The comparison as a Markdown table, one row per reader and engine."""
    lines = ["| reader (files) | engine | seconds | cases | cases/s | crashes (distinct) | "
             "inputs replayed | lines | branches |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        files = ", ".join(codec_files(name))
        seconds = r["seconds"]
        for engine in ("seeds", "mutation", "atheris"):
            c = r["coverage"][engine]
            if engine == "seeds":
                secs = cases = rate = crashes = "-"
            else:
                s = r["summary"][engine]
                secs = f"{seconds:g}"
                cases = f"{s['cases']}"
                rate = f"{s['cases'] / seconds:.0f}"
                crashes = f"{len(s['crashes'])} ({len(s['signatures'])})"
            label = {"seeds": "seeds only"}.get(engine, ENGINE_NAMES.get(engine, engine))
            lines.append(f"| {name} ({files}) | {label} | {secs} | {cases} | {rate} | "
                         f"{crashes} | {c['inputs']} | {_pct(c['lines'], c['statements'])} | "
                         f"{_pct(c['branches'], c['num_branches'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--measure"]:
        _measure(Path(argv[1]), Path(argv[2]))
        return 0
    p = argparse.ArgumentParser(prog="python -m ports.fuzz.compare",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("format", nargs="*", default=["all"])
    p.add_argument("--seconds", type=float, default=60.0, help="budget per reader and engine")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz-compare")
    p.add_argument("--json", type=Path, default=None,
                   help="results file (default OUT/compare.json; merged with what is there)")
    p.add_argument("--coverage-only", action="store_true",
                   help="measure the coverage of the inputs of an earlier run again")
    args = p.parse_args(argv)
    why = atheris_engine.available()
    if why is not None:
        p.error(why)
    names = list(formats.FORMATS) if args.format == ["all"] else args.format
    out_json = args.json or args.out / "compare.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    for name in names:
        d = args.out / name
        t0 = time.monotonic()
        if args.coverage_only:
            r = results[name]
        else:
            for sub in ("mutation", "atheris", "cov-seeds"):
                shutil.rmtree(d / sub, ignore_errors=True)
            pair = run_pair(name, args.seconds, d)
            r = {"seconds": args.seconds, "summary": {k: v.as_dict() for k, v in pair.items()},
                 "coverage": {}}
        for engine in ("seeds", "mutation", "atheris"):
            cases = r["summary"]["mutation"]["cases"] if engine == "mutation" else 0
            r["coverage"][engine] = coverage_of(name, None if engine == "seeds" else engine,
                                                d, cases)
        results[name] = r
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{name}: done in {time.monotonic() - t0:.0f} s", flush=True)
        print(table({name: r}), flush=True)
    print(table({k: results[k] for k in formats.FORMATS if k in results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
