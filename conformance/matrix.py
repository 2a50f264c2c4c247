"""The main job: every available port against the golden and against each other.

For each port, ``tox exec -e ENV -- python -m conformance.collect PORT`` runs it in its
own environment (created on first use); then the results are gathered into

* a printed matrix: port x dtype rows, variant x input size columns, max abs diff;
* ``build/conformance/matrix.json``: every case record plus port-vs-port differences;
* ``build/conformance/matrix.png``: the same as two heatmaps.

``python -m conformance.matrix --no-run`` only gathers existing results.
Exit status 1 if any port disagrees or fails to run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from .harness import RESULTS, ROOT
from .ports import PORTS

_TOX_VARS = ("TOX_ENV_NAME", "TOX_ENV_DIR", "TOX_WORK_DIR", "TOX_PACKAGE", "VIRTUAL_ENV",
             "PYTHONHOME", "TOX_PARALLEL_ENV")


def _log(*args, **kwargs) -> None:
    print(*args, **kwargs, flush=True)


def run_port(port: str, log=_log) -> tuple[bool, str]:
    env = {k: v for k, v in os.environ.items() if k not in _TOX_VARS}
    # Drop this environment's bin directory from PATH so the inner tox picks each env's own.
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if not p.startswith(venv))
    cmd = [sys.executable, "-m", "tox", "exec", "-q", "-e", PORTS[port].env, "--",
           "python", "-m", "conformance.collect", port]
    log(f"== {port}: {' '.join(cmd[2:])}")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    tail = proc.stdout.strip().splitlines()[-3:]
    for line in tail:
        log(f"   {line}")
    log(f"   ({time.perf_counter() - start:.0f}s, exit {proc.returncode})")
    return proc.returncode == 0, "\n".join(tail)


def gather(ports: list[str]) -> tuple[list[dict], dict]:
    records, logits = [], {}
    for port in ports:
        path = RESULTS / f"{port}.json"
        if path.exists():
            records += json.loads(path.read_text())["cases"]
        npz = RESULTS / f"{port}.npz"
        if npz.exists():
            with np.load(npz) as data:
                logits[port] = {k: data[k] for k in data.files}
    return records, logits


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


def table(records: list[dict]) -> str:
    """Rows: variant @ input size; columns: port / dtype; cells: max abs diff vs golden
    (``!`` marks a disagreement, ``ERR`` a port that failed)."""
    golden = {(r["port"], r["dtype"], r["name"], r["size"]): r
              for r in records if r["kind"] == "golden"}
    rows = sorted({(k[2], k[3]) for k in golden})
    cols = sorted({(k[0], k[1]) for k in golden},
                  key=lambda c: (list(PORTS).index(c[0]) if c[0] in PORTS else 99, c[1]))
    width = 10
    lines = [f"{'variant @ size':<22}" + "".join(f"{p[:width - 1]:>{width}}" for p, _ in cols),
             f"{'':<22}" + "".join(f"{d:>{width}}" for _, d in cols)]
    for name, size in rows:
        cells = []
        for port, dtype in cols:
            r = golden.get((port, dtype, name, size))
            if r is None:
                cells.append(f"{'-':>{width}}")
            elif r.get("error"):
                cells.append(f"{'ERR':>{width}}")
            else:
                cells.append(f"{r['max_abs']:>{width - 1}.1e}{' ' if r['ok'] else '!'}")
        lines.append(f"{name + ' @' + str(size):<22}" + "".join(cells))
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
    return "\n".join(lines)


def plot(records: list[dict], crossed: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    golden = [r for r in records if not r.get("error")]
    cols = sorted({(r["name"], r["size"]) for r in golden}, key=lambda c: (c[1] == 0, c))
    rows = sorted({(r["port"], r["dtype"]) for r in golden},
                  key=lambda c: (list(PORTS).index(c[0]) if c[0] in PORTS else 99, c[1]))
    grid = np.full((len(rows), len(cols)), np.nan)
    for r in golden:
        grid[rows.index((r["port"], r["dtype"])), cols.index((r["name"], r["size"]))] = \
            np.log10(max(r["max_abs"], 1e-17))
    ports = list(crossed)
    cgrid = np.array([[np.log10(max(crossed[a][b], 1e-17)) for b in ports] for a in ports])

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6 + 0.45 * len(cols) + 0.5 * len(ports),
                                                  2 + 0.35 * max(len(rows), len(ports))),
                                   gridspec_kw={"width_ratios": [len(cols), max(len(ports), 1)]})
    im = ax1.imshow(grid, cmap="viridis", vmin=-16, vmax=-2, aspect="auto")
    ax1.set_xticks(range(len(cols)), [f"{n} @{s}" if s else f"{n} (real)" for n, s in cols],
                   rotation=90, fontsize=7)
    ax1.set_yticks(range(len(rows)), [f"{p} {d}" for p, d in rows], fontsize=8)
    ax1.set_title("log10 max |port - expected logits| (float64 golden; real Caffe for 'real')")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax1.text(j, i, "0" if v <= -17 else f"{v:.0f}", ha="center", va="center",
                     fontsize=6, color="w")
    ax2.imshow(cgrid, cmap="viridis", vmin=-16, vmax=-2)
    ax2.set_xticks(range(len(ports)), ports, rotation=90, fontsize=8)
    ax2.set_yticks(range(len(ports)), ports, fontsize=8)
    ax2.set_title("log10 max |port A - port B|")
    for (i, j), v in np.ndenumerate(cgrid):
        if np.isfinite(v):
            ax2.text(j, i, "0" if v <= -17 else f"{v:.0f}", ha="center", va="center",
                     fontsize=6, color="w")
    fig.colorbar(im, ax=[ax1, ax2], shrink=0.8)
    tmp = str(path) + ".part.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", default=",".join(PORTS),
                        help="comma-separated ports (default: all)")
    parser.add_argument("--no-run", action="store_true", help="only gather existing results")
    args = parser.parse_args(argv)
    ports = [p for p in args.ports.split(",") if p]
    unknown = [p for p in ports if p not in PORTS]
    if unknown:
        parser.error(f"unknown ports {unknown}; known: {', '.join(PORTS)}")
    failed = {}
    if not args.no_run:
        for i, port in enumerate(ports, 1):
            print(f"[{i}/{len(ports)}]", end=" ", flush=True)
            ok, tail = run_port(port)
            if not ok:
                failed[port] = tail
    records, logits = gather(ports)
    crossed = cross(logits)
    print()
    print(table(records))
    if crossed:
        print("\nport vs port, max abs diff of logits (float32 cases):")
        names = list(crossed)
        print(" " * 13 + "".join(f"{n[:11]:>12}" for n in names))
        for a in names:
            print(f"{a[:12]:<13}" + "".join(f"{crossed[a][b]:>12.1e}" for b in names))
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"records": records, "cross": crossed, "failed": failed}
    (RESULTS / "matrix.json").write_text(json.dumps(summary, indent=1))
    if records:
        plot(records, crossed, RESULTS / "matrix.png")
    bad = [r for r in records if r.get("error") or not r.get("ok")]
    print(f"\n{len(records) - len(bad)} / {len(records)} cases agree; "
          f"ports failed to run: {', '.join(failed) or 'none'}")
    print(f"wrote {RESULTS / 'matrix.json'} and {RESULTS / 'matrix.png'}")
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main())
