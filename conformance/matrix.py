"""The main job: every available port against the golden and against each other.

For each port, its tox environment is created completely on first use (the package with the
port's extras; :mod:`conformance.toxenv`) and ``python -m conformance.collect PORT`` runs
there, reusing the results the port's tests recorded when they are current
(:mod:`conformance.results`).  One thread creates the environments, one at a time and longest
port first, while ``--jobs`` ports already built compute.  Then the results are gathered into

* a printed matrix: port x dtype rows, variant x input size columns, max abs diff;
* ``build/conformance/matrix.json``: every case record plus port-vs-port differences;
* ``build/conformance/matrix.png``: the same as two heatmaps.

``python -m conformance.matrix --no-run`` only gathers existing result files (e.g. the
artifacts of one CI job per port).

A verdict belongs to a run: a port is reported only when its ``collect`` process exited 0
or 1 (1: a case disagrees) and left a record of this run (``$SQUEEZENET_RUN``) that
:func:`conformance.results.verdict` accepts: this checkout's code (and an out-of-tree
port's own) and shared data, finished, every case expected of the port in it, every value
finite.  Gathering (``--no-run``) asks the same of each file but the run; the environment a
file was computed in is shown, not compared.  Otherwise the port is listed under "ports
failed to run" with the reason (``exit -9 after 17 of 102 cases; ...``).  Cases that need
the shared ground truth when it is absent are listed as not run, on the report's first line
(and fail the run under ``SQUEEZENET_REQUIRE_SHARED=1``).
Exit status 1 if any case errors or disagrees or any port fails to run (named with its first
error line: a missing framework, a missing interpreter, a port whose every case errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import results, toxenv
from .fixtures import require_shared
from .harness import RESULTS
from .registry import ENTRY_POINTS, PORTS


def _log(line: str) -> None:
    print(line, flush=True)


def expected(port: str) -> list[str]:
    """The ids of every case expected of ``port`` (:func:`conformance.collect.cases`)."""
    from .collect import cases

    return [c.id for c in cases(port)]


def run_port(port: str, log=_log, run: str | None = None) -> str | None:
    """Run ``conformance.collect`` in the port's tox environment, which :func:`build_ahead`
    has created (current recorded results are reused, the rest computed).  Returns None, or
    why the port did not run (one line): it exited other than 0 or 1 (1: a case
    disagrees), or the record it left is not ``run``'s or cannot stand for a verdict
    (:func:`conformance.results.verdict`)."""
    env = PORTS[port].env
    start = time.monotonic()
    if env is None:  # a port from outside this project: this interpreter, as it is
        code, lines = toxenv.stream([sys.executable, "-u", "-m", "conformance.collect", port],
                                    port, log, cwd=Path.cwd())
    else:
        code, lines = toxenv.run(env, ["python", "-u", "-m", "conformance.collect", port], log)
    log(f"   ({time.monotonic() - start:.0f}s, exit {code})")
    doc, arrays = results.read(port)
    try:
        cases = expected(port)
    except Exception as e:  # an out-of-tree port that no longer imports
        return f"exit {code}; its cases cannot be listed: {type(e).__name__}: {e}"
    why = results.verdict(port, doc, arrays, cases, run)
    if code in (0, 1) and not why:
        return None
    said = f"exit {code} after {collect_progress(lines)} of {len(cases)} cases"
    if code not in (0, 1):
        said += f" ({toxenv.first_error(lines)})"
    return f"{said}; {why or 'its record is complete, but this run did not finish'}"


def collect_progress(lines: list[str]) -> int:
    """How many cases the ``collect`` run that printed ``lines`` got through."""
    from .collect import progress

    return progress(lines)


def schedule(ports: list[str]) -> list[str]:
    """The order to build and run ``ports`` in: longest first, by the seconds their last
    recorded cases took (whatever code computed them: only an estimate), and without
    records the training ports that compile each case first (JAX: on a fresh clone of
    99fc5bb each took 500-590 s, the others 40-150 s), then the other training ports (their
    gradient and step cases are the long ones)."""
    def cost(port: str) -> tuple[float, int]:
        doc, _ = results.read(port)
        seconds = sum(r.get("seconds", 0.0) for r in (doc or {}).get("cases", []))
        p = PORTS[port]
        return (-seconds, 0 if p.training and p.compiles else 1 if p.training else 2)
    return sorted(ports, key=cost)


def build_ahead(ports: list[str], log_for) -> tuple[dict, dict[str, str | None]]:
    """Start one thread that brings the environments of ``ports`` that exist up to date
    together, then creates the others in order, one at a time, while the ports already
    built compute.  Returns ({port: Event set once its environment is ready or has
    failed}, {port: None or why it could not be built})."""
    ready = {p: threading.Event() for p in ports}
    built: dict[str, str | None] = {}

    def build() -> None:
        try:
            envs = [PORTS[p].env for p in ports if PORTS[p].env]
            if envs:  # out-of-tree ports run in this interpreter: nothing to build
                toxenv.ensure_existing(envs, log_for("envs"))
        except Exception as e:  # each is then built on its own, with its own error
            log_for("envs")(f"   {type(e).__name__}: {e}")
        for port in ports:
            env = PORTS[port].env
            try:
                if env is not None:
                    toxenv.ensure(env, log_for(port))
                built[port] = None
            except toxenv.EnvError as e:
                built[port] = str(e)
            except Exception as e:  # never leave a waiting port hung
                built[port] = f"building tox env {env}: {type(e).__name__}: {e}"
            ready[port].set()

    threading.Thread(target=build, name="build-envs", daemon=True).start()
    return ready, built


def gather(ports: list[str], run: str | None = None) -> tuple[list[dict], dict, dict[str, str]]:
    """Records and logits of ``ports`` from their result files, and the ports that have
    none or whose files cannot stand for a verdict (:func:`conformance.results.verdict`;
    given ``run``, written by another run), each with the reason."""
    records, logits, missing = [], {}, {}
    for port in ports:
        doc, arrays = results.read(port)
        if not doc:
            missing[port] = f"no results in {results.paths(port)[0]}"
            continue
        try:
            why = results.verdict(port, doc, arrays, expected(port), run)
        except Exception as e:  # an out-of-tree port that does not import here
            why = f"its cases cannot be listed: {type(e).__name__}: {e}"
        if why:
            missing[port] = f"{results.paths(port)[0]}: {why}"
            continue
        records += doc.get("cases", [])
        logits[port] = arrays
    return records, logits, missing


def environments(ports: list[str]) -> list[str]:
    """One line per port: the environment its result file was computed in (Python,
    platform, CPU and vector extensions, thread variables); shown, never compared (the
    gathering machine is another)."""
    lines = []
    for port in ports:
        doc, _ = results.read(port)
        if not doc:
            continue
        cpu = doc.get("cpu") or {}
        threads = {k: v for k, v in (doc.get("variables") or {}).items()
                   if k.endswith("_THREADS") and v is not None}
        lines.append(f"  {port:<12} Python {doc.get('python')} {doc.get('platform')}; "
                     f"{cpu.get('cpu', '?')} ({' '.join(cpu.get('simd', [])) or 'no simd'})"
                     + (f"; {' '.join(f'{k}={v}' for k, v in threads.items())}"
                        if threads else ""))
    return lines


def did_not_run(records: list[dict], ports: list[str]) -> dict[str, str]:
    """Ports every one of whose cases errored, each with its first error line."""
    out = {}
    for port in ports:
        mine = [r for r in records if r["port"] == port and not r.get("skipped")]
        if mine and all(r.get("error") for r in mine):
            out[port] = f"every case errored; first: {mine[0]['error'].splitlines()[0]}"
    return out


def cross(logits: dict) -> dict[str, dict[str, float]]:
    """Max abs difference between every two ports over the float32 cases both ran
    (float64 logits where a port has no float32)."""
    def pick(port):
        d = logits[port]
        f32 = {k[: -len("-float32")]: v for k, v in d.items() if k.endswith("-float32")}
        return f32 or {k[: -len("-float64")]: v for k, v in d.items() if k.endswith("-float64")}

    picked = {p: pick(p) for p in logits}
    out: dict[str, dict[str, float]] = {}
    for a in picked:
        out[a] = {}
        for b in picked:
            common = set(picked[a]) & set(picked[b])
            out[a][b] = max((float(np.abs(picked[a][k] - picked[b][k]).max()) for k in common),
                            default=float("nan"))
    return out


def _grid(records: list[dict], kind: str, value: str, title: str) -> list[str]:
    """Rows: case name @ size; columns: port / dtype; cells: ``value`` of the ``kind``
    records (``!`` marks a disagreement, ``ERR`` a port that failed on that case)."""
    cells_by = {(r["port"], r["dtype"], r["name"], r["size"]): r
                for r in records if r["kind"] == kind}
    if not cells_by:
        return []
    rows = sorted({(k[2], k[3]) for k in cells_by})
    cols = sorted({(k[0], k[1]) for k in cells_by},
                  key=lambda c: (list(PORTS).index(c[0]) if c[0] in PORTS else 99, c[1]))
    width = 10
    lines = [title, f"{'case @ size':<24}" + "".join(f"{p[:width - 1]:>{width}}" for p, _ in cols),
             f"{'':<24}" + "".join(f"{d:>{width}}" for _, d in cols)]
    for name, size in rows:
        cells = []
        for port, dtype in cols:
            r = cells_by.get((port, dtype, name, size))
            if r is None:
                cells.append(f"{'-':>{width}}")
            elif r.get("error"):
                cells.append(f"{'ERR':>{width}}")
            else:
                cells.append(f"{r[value]:>{width - 1}.1e}{' ' if r['ok'] else '!'}")
        lines.append(f"{name + (' @' + str(size) if size else ''):<24}" + "".join(cells))
    return lines + [""]


def table(records: list[dict]) -> str:
    """The golden logits grid (max abs diff), the training grids (max relative error of
    the gradients, and of the weight change after 5 steps), the real-weights fixtures, and
    every disagreement with the first layer where it appears."""
    lines = _grid(records, "golden", "max_abs",
                  "logits: max |port - float64 golden| (! disagrees, ERR failed)")
    lines += _grid(records, "grad", "max_rel",
                   "training: gradients, max |g - g_ref| / max |g_ref| over tensors")
    lines += _grid(records, "steps", "max_rel",
                   "training: 5 Caffe SGD steps (poly rate), the worst step's gradient as above "
                   "(each update checked to rounding)")
    fixtures = [r for r in records if r["kind"] == "fixture"]
    if fixtures:
        lines.append("")
        lines.append("real-weights fixtures (max abs / max rel / top-5 / top-1):")
        for r in fixtures:
            if r.get("error"):
                lines.append(f"  {r['port']:<12} {r['dtype']:<8} {r['name']:<28} "
                             f"ERROR {r['error']}")
                continue
            classes = [r[k] for k in ("top1_ok", "top3_ok") if k in r]
            top1 = "-" if not classes else ("ok" if all(classes) else "WRONG")
            lines.append(f"  {r['port']:<12} {r['dtype']:<8} {r['name']:<28} "
                         f"{r['max_abs']:.2e} / {r['max_rel']:.2e} / "
                         f"{r['top5_agree']}/{r['images']} / {top1}"
                         f"{'' if r['ok'] else '  MISMATCH'}")
    lines += _reduced(records)
    ran_in = {}
    for r in records:
        if r.get("precision"):
            ran_in.setdefault(r["port"], {}).setdefault(r["dtype"], set()).add(r["precision"])
    if ran_in:
        lines.append("")
        lines.append("precision the engines report they computed in, per case dtype:")
        for port, by_dtype in ran_in.items():
            said = ", ".join(f"{d} cases in {'/'.join(sorted(p))}" for d, p in by_dtype.items())
            lines.append(f"  {port:<12} {said}")
    bad = [r for r in records if not r.get("error") and not r.get("ok")]
    if bad:
        lines.append("")
        lines.append("disagreements (first divergent layer from the layer trace):")
        for r in bad:
            lines.append(f"  {r['port']:<12} {r['id']:<36} first divergent layer: "
                         f"{r.get('first_divergent') or 'not traced'}")
    return "\n".join(lines)


def _reduced(records: list[dict]) -> list[str]:
    """Per port and reduced precision (bfloat16): cases within the bound, the worst error as
    a fraction of the bound (``tolerances.toml``: relative to each case's largest logit),
    top-1 agreement with the float64 expectation over every image."""
    from ports._api import REDUCED

    by: dict[tuple, list[dict]] = {}
    for r in records:
        if r["dtype"] in REDUCED and r["kind"] in ("golden", "fixture"):
            by.setdefault((r["port"], r["dtype"]), []).append(r)
    if not by:
        return []
    lines = ["", "reduced precision (cases within the bound / worst |error| as a fraction of "
                 "the bound / top-1 agreement):"]
    for (port, dtype), rs in by.items():
        ran = [r for r in rs if not r.get("error")]
        worst = max((r["max_abs"] / r["atol"] for r in ran if r["atol"] > 0), default=float("nan"))
        top1 = sum(r.get("top1_agree", 0) for r in ran)
        images = sum(r["images"] for r in ran)
        lines.append(f"  {port:<12} {dtype:<8} {sum(r['ok'] for r in ran)}/{len(rs)} / "
                     f"{worst:.2f} / {top1}/{images}")
    return lines


def _heatmap(ax, rows: list, cols: list, grid: np.ndarray, title: str, xlabels: list) -> object:
    """One log10 heatmap with its values written in the cells."""
    im = ax.imshow(grid, cmap="viridis", vmin=-16, vmax=-2, aspect="auto")
    ax.set_xticks(range(len(cols)), xlabels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [" ".join(map(str, r)) for r in rows], fontsize=8)
    ax.set_title(title, fontsize=9)
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(j, i, "0" if v <= -17 else f"{v:.0f}", ha="center", va="center",
                    fontsize=6, color="w")
    return im


def _records_grid(records: list[dict], value: str):
    """(rows: (port, dtype), cols: (kind, name, size), log10 grid of ``value``)."""
    ok = [r for r in records if not r.get("error")]
    cols = sorted({(r["kind"], r["name"], r["size"]) for r in ok},
                  key=lambda c: (c[0], c[2] == 0, c[1], c[2]))
    rows = sorted({(r["port"], r["dtype"]) for r in ok},
                  key=lambda c: (list(PORTS).index(c[0]) if c[0] in PORTS else 99, c[1]))
    grid = np.full((len(rows), len(cols)), np.nan)
    for r in ok:
        grid[rows.index((r["port"], r["dtype"])), cols.index((r["kind"], r["name"], r["size"]))] \
            = np.log10(max(r[value], 1e-17))
    return rows, cols, grid


def plot(records: list[dict], crossed: dict, path) -> None:
    """Logits (vs the golden or real Caffe), training (gradients and 5-step weights vs the
    float64 reference) and port-vs-port heatmaps, log10 of the errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logits = _records_grid([r for r in records if r["kind"] in ("golden", "fixture")],
                           "max_abs")
    train = _records_grid([r for r in records if r["kind"] not in ("golden", "fixture")],
                          "max_rel")
    ports = list(crossed)
    cgrid = np.array([[np.log10(max(crossed[a][b], 1e-17)) for b in ports] for a in ports])
    panels = [(g, title) for g, title in (
        (logits, "log10 max |port - expected logits| (golden; real Caffe: 'real')"),
        (train, "log10 max relative error: gradients, weights after 5 steps")) if g[1]]
    widths = [len(g[1]) for g, _ in panels] + [max(len(ports), 1)]
    fig, axes = plt.subplots(1, len(widths), squeeze=False,
                             figsize=(6 + 0.4 * sum(widths),
                                      2.5 + 0.35 * max(len(logits[0]), len(ports))),
                             gridspec_kw={"width_ratios": widths})
    axes = list(axes[0])
    im = None
    for ax, ((rows, cols, grid), title) in zip(axes, panels):
        labels = [f"{k if k not in ('golden', 'fixture') else ''} {n}"
                  + (f" @{z}" if z else " (real)") for k, n, z in cols]
        im = _heatmap(ax, rows, cols, grid, title, labels)
    _heatmap(axes[-1], ports, ports, cgrid, "log10 max |port A - port B|", ports)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8)
    tmp = str(path) + ".part.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", default=",".join(PORTS), metavar="PORT[,PORT...]", help=(
        "comma-separated ports (default: all the built-in and entry-point ports).  Each is a "
        "built-in port name (" + ", ".join(n for n, p in PORTS.items() if p.env) + "; run in "
        "its tox environment, created on first use), the name an installed package declares "
        f"in the '{ENTRY_POINTS}' entry-point group, or a dotted module path that imports "
        "here and has load() and predict() (the port protocol: ports/_api.py, "
        "docs/port-protocol.md); the last two run in this interpreter"))
    parser.add_argument("--no-run", action="store_true",
                        help="only gather existing result files (e.g. from CI jobs)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="ports computed side by side (default: 2, or 1 on one CPU); "
                             "their environments are created one at a time")
    args = parser.parse_args(argv)
    ports = [p for p in args.ports.split(",") if p]
    unknown = [p for p in ports if p not in PORTS]  # a module path resolves here
    if unknown:
        parser.error(f"unknown ports {unknown}; known: {', '.join(PORTS)}")
    failed: dict[str, str] = {}
    start = time.monotonic()
    run = None
    if not args.no_run:
        run = os.environ[results.RUN_VAR] = uuid.uuid4().hex  # the collect processes record it
        width = max(map(len, ports))

        def log_for(name: str):
            return lambda line: _log(f"{name:>{width}} {line}")

        order = schedule(ports)
        ready, built = build_ahead(order, log_for)

        def one(i: int, port: str) -> None:
            log = log_for(port)
            ready[port].wait()
            where = PORTS[port].env
            log(f"[{i}/{len(ports)}] " + (f"tox env {where}" if where else "this interpreter")
                + f", {time.monotonic() - start:.0f}s so far")
            why = built[port] or run_port(port, log, run)
            if why:
                failed[port] = why
                log(f"did not run: {why}")
            log(f"done, {time.monotonic() - start:.0f}s so far")

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for future in [pool.submit(one, i, p) for i, p in enumerate(order, 1)]:
                future.result()
    everything, logits, missing = gather([p for p in ports if p not in failed], run)
    failed.update(missing)
    failed.update(did_not_run(everything, ports))
    from .collect import not_run

    skipped = not_run(everything)
    records = [r for r in everything if not r.get("skipped")]
    crossed = cross(logits)
    print()
    if skipped:
        print(f"NOT RUN: {len(skipped)} real-weights cases did not run "
              f"({skipped[0]['skipped']}); listed at the end")
    print(table(records))
    if crossed:
        print("\nport vs port, max abs diff of logits (float32 cases):")
        names = list(crossed)
        print(" " * 13 + "".join(f"{n[:11]:>12}" for n in names))
        for a in names:
            print(f"{a[:12]:<13}" + "".join(f"{crossed[a][b]:>12.1e}" for b in names))
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"schema": results.SCHEMA, "records": records, "cross": crossed,
               "failed": failed, "not_run": [{"port": r["port"], "id": r["id"],
                                              "reason": r["skipped"]} for r in skipped]}
    tmp = RESULTS / ".matrix.json.part"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(RESULTS / "matrix.json")
    if records:
        plot(records, crossed, RESULTS / "matrix.png")
    print("\nenvironments the results were computed in (shown, not compared):")
    print("\n".join(environments([p for p in ports if p not in failed])) or "  none")
    bad = [r for r in records if r.get("error") or not r.get("ok")]
    if skipped:
        print(f"\nnot run ({len(skipped)} cases; SQUEEZENET_REQUIRE_SHARED=1 makes this a "
              f"failure):")
        for r in skipped:
            print(f"  {r['port']:<12} {r['id']}: {r['skipped']}")
    print(f"\n{len(records) - len(bad)} / {len(records)} cases agree"
          + (f", {len(skipped)} not run" if skipped else "")
          + f"; ports failed to run: {', '.join(failed) or 'none'}")
    for port, why in failed.items():
        print(f"  {port}: {why}")
    if failed:
        others = [p for p in ports if p not in failed]
        if others:
            print(f"  (to run the others alone: python3 -m tox -e matrix -- --ports "
                  f"{','.join(others)})")
    print(f"wrote {RESULTS / 'matrix.json'}" + (f" and {RESULTS / 'matrix.png'}" if records
                                                 else "")
          + f" in {time.monotonic() - start:.0f}s")
    return 1 if bad or failed or not records or (skipped and require_shared()) else 0


if __name__ == "__main__":
    sys.exit(main())
