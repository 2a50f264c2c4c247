"""How far a port's logits move between two runs: ``python -m devtools.drift RUN_A RUN_B``.

RUN_A and RUN_B are two folders of result files (``PORT.json`` + ``PORT.npz``, as
:mod:`conformance.results` writes them), typically the same port run against two releases of
its framework (:mod:`conformance.releases`)::

    SQUEEZENET_JAX_VERSION=0.9.0 SQUEEZENET_FLAX_VERSION=0.12.0 \\
        python3 -m tox -e matrix -- --ports flax   # build/conformance/release/flax-0.12.0_jax-0.9.0
    python3 -m tox -e matrix -- --ports flax       # the pinned releases: build/conformance
    python -m devtools.drift build/conformance/release/flax-0.12.0_jax-0.9.0 build/conformance

For every port in both folders and every case both ran it prints and records

* the max absolute difference between the two runs' logits (``|A - B|``), the largest
  logit (for scale) and how many images keep their top-1 class;
* each run's own error against the expected logits (the float64 golden or real Caffe's),
  whose sum bounds ``|A - B|`` at full precision: the stored logits are float32-rounded, so
  a float64 case's measured drift is exact only down to that rounding (``resolution``);
* for training cases (no logits stored): each run's max relative error against the float64
  reference, side by side;

and per port the installed versions side by side (the port's framework always, every other
distribution only where the two differ), whether both ran the same code, and a summary (the
largest drift per dtype and its case, how many cases are identical).  ``--json`` writes all
of it, ``--plot`` a heatmap per port (log10 of the drift, case by dtype).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from conformance import releases, results
from conformance.registry import BUILT_IN

SCHEMA = 1
# The distributions that are "the framework" of each port (the registry's record): always
# shown side by side.
FRAMEWORKS = {p.name: tuple(p.framework) for p in BUILT_IN}
ALWAYS = ("numpy",)
F32_EPS = 2.0 ** -24  # unit roundoff of float32: the stored logits are rounded to it


def load_run(folder: Path) -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    """Every port's result file in ``folder``: port -> (document, logits by case id)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of result files")
    out = {}
    for path in sorted(folder.glob("*.json")):
        doc, logits = results.read(path.stem, folder)
        if doc.get("port") == path.stem and isinstance(doc.get("cases"), list):
            out[path.stem] = (doc, logits)
    return out


def versions(port: str, a: dict, b: dict) -> dict[str, list[str | None]]:
    """Distribution -> [version in A, version in B]: the port's framework and numpy always,
    any other only where the two differ (None: not installed there)."""
    va, vb = a.get("versions", {}), b.get("versions", {})
    shown = [*FRAMEWORKS.get(port, ()), *ALWAYS]
    out = {k: [va.get(k), vb.get(k)] for k in shown if k in va or k in vb}
    out = {"python": [a.get("python"), b.get("python")], **out}
    for k in sorted(set(va) | set(vb)):
        if k not in out and va.get(k) != vb.get(k):
            out[k] = [va.get(k), vb.get(k)]
    return out


def _error(record: dict | None) -> float | None:
    """A record's error against its expectation (logits: max abs; training: max rel)."""
    if record is None or record.get("error"):
        return None
    return record.get("max_abs", record.get("max_rel"))


def compare_case(ra: dict | None, rb: dict | None, la: np.ndarray | None,
                 lb: np.ndarray | None) -> dict:
    """One case of both runs: the drift of its logits and each run's own error."""
    r = ra or rb
    out = {"id": r["id"], "kind": r["kind"], "name": r["name"], "size": r["size"],
           "dtype": r["dtype"], "error_a": _error(ra), "error_b": _error(rb),
           "ok_a": bool(ra and ra.get("ok")), "ok_b": bool(rb and rb.get("ok")),
           "failed": [w for w, x in (("A", ra), ("B", rb)) if x is None or x.get("error")]}
    if out["error_a"] is not None and out["error_b"] is not None and "max_abs" in r:
        out["bound"] = out["error_a"] + out["error_b"]  # both against the same expectation
    if la is None or lb is None or la.shape != lb.shape:
        return out
    a, b = la.astype(np.float64), lb.astype(np.float64)
    diff = np.abs(a - b)
    scale = float(max(np.abs(a).max(), np.abs(b).max()))
    resolution = 2 * F32_EPS * scale if r["dtype"] != "float32" else 0.0
    # drift: |A - B| itself where the stored logits are the computed ones (float32), else
    # the tightest bound the measurement and the records give
    drift = float(diff.max()) + resolution
    if resolution and "bound" in out:
        drift = min(drift, out["bound"])
    if r.get("atol") is not None:  # the port's tolerance for this case, at this scale
        out["tolerance"] = float(r["atol"]) + float(r.get("rtol") or 0.0) * scale
    out.update(max_abs=float(diff.max()), scale=scale, resolution=resolution, drift=drift,
               max_rel=float(diff.max() / scale) if scale else 0.0,
               top1_same=int((a.argmax(1) == b.argmax(1)).sum()), images=int(len(a)),
               identical=bool(np.array_equal(la, lb)))
    return out


def compare_port(port: str, run_a: tuple[dict, dict], run_b: tuple[dict, dict]) -> dict:
    (da, la), (db, lb) = run_a, run_b
    ca = {r["id"]: r for r in da.get("cases", [])}
    cb = {r["id"]: r for r in db.get("cases", [])}
    common = [i for i in ca if i in cb]
    cases = [compare_case(ca[i], cb[i], la.get(i), lb.get(i)) for i in common]
    return {"port": port, "versions": versions(port, da, db),
            "releases": [da.get("releases"), db.get("releases")],
            "same_code": da.get("key", {}).get("code") == db.get("key", {}).get("code"),
            "same_shared": da.get("key", {}).get("shared") == db.get("key", {}).get("shared"),
            "cases": cases, "only_a": sorted(set(ca) - set(cb)),
            "only_b": sorted(set(cb) - set(ca)), "summary": summarize(cases),
            "first_error": {side: next((r["error"].splitlines()[0] for r in run.values()
                                        if r.get("error")), None)
                            for side, run in (("A", ca), ("B", cb))}}


def summarize(cases: list[dict]) -> dict:
    """Per dtype: cases with logits in both, the largest drift and its case, identical ones,
    top-1 changes, drift beyond the port's tolerance; training cases counted apart."""
    out: dict = {}
    for dtype in sorted({c["dtype"] for c in cases}):
        mine = [c for c in cases if c["dtype"] == dtype and "max_abs" in c]
        if not mine:
            continue
        worst = max(mine, key=lambda c: c["drift"])
        out[dtype] = {
            "cases": len(mine), "drift": worst["drift"], "worst": worst["id"],
            "max_abs": max(c["max_abs"] for c in mine),
            "max_rel": max(c["max_rel"] for c in mine),
            "identical": sum(c["identical"] for c in mine),
            "top1_changed": sum(c["images"] - c["top1_same"] for c in mine),
            # beyond the port's own tolerance for certain (the float32 rounding aside)
            "beyond_tolerance": sum(1 for c in mine if "tolerance" in c
                                    and c["max_abs"] - c["resolution"] > c["tolerance"]),
            "median": float(np.median([c["drift"] for c in mine])),
        }
    training = [c for c in cases if "max_abs" not in c and not c["failed"]]
    if training:
        out["training"] = {
            "cases": len(training),
            "max_error_a": max(c["error_a"] for c in training),
            "max_error_b": max(c["error_b"] for c in training),
            "max_error_change": max(abs(c["error_a"] - c["error_b"]) for c in training),
        }
    failed = [c["id"] for c in cases if c["failed"]]
    if failed:
        out["failed"] = failed
    return out


def compare(folder_a: Path, folder_b: Path, ports: list[str] | None = None,
            labels: tuple[str, str] | None = None) -> dict:
    """The drift report of two folders of result files (the ports both hold, or ``ports``)."""
    a, b = load_run(folder_a), load_run(folder_b)
    wanted = ports or sorted(set(a) & set(b))
    missing = [p for p in wanted if p not in a or p not in b]
    has = f"A has {', '.join(sorted(a)) or 'none'}; B has {', '.join(sorted(b)) or 'none'}"
    if missing:
        raise ValueError(f"no result files for {', '.join(missing)} in both runs ({has})")
    if not wanted:
        raise ValueError(f"the two runs have no port in common ({has})")
    labels = labels or (_label(folder_a, a), _label(folder_b, b))
    return {"schema": SCHEMA, "a": {"folder": str(folder_a), "label": labels[0]},
            "b": {"folder": str(folder_b), "label": labels[1]},
            "ports": {p: compare_port(p, a[p], b[p]) for p in wanted}}


def _label(folder: Path, run: dict) -> str:
    """The releases the run's variables named (``flax-0.12.0_jax-0.9.0``), ``pinned`` when
    its files record none, else the folder's name (files older than that record)."""
    recorded = [doc["releases"] for doc, _ in run.values() if isinstance(doc.get("releases"), dict)]
    if recorded:
        names = sorted({releases.label(r) or "pinned" for r in recorded})
        return "+".join(names)
    return Path(folder).resolve().name


def _num(x: float | None, width: int = 9) -> str:
    if x is None:
        return f"{'-':>{width}}"
    return f"{x:>{width}.1e}" if x else f"{'0':>{width}}"


def text(report: dict) -> str:
    """The report as the command prints it."""
    la, lb = report["a"]["label"], report["b"]["label"]
    lines = [f"drift: A = {la} ({report['a']['folder']}), B = {lb} ({report['b']['folder']})"]
    for port, p in report["ports"].items():
        lines += ["", f"{port}: versions (A | B)"]
        asked = [", ".join(f"{k}={v}" for k, v in (r or {}).items()) or "-"
                 for r in p.get("releases", [None, None])]
        if asked != ["-", "-"]:
            lines.append(f"  variables: {asked[0]} | {asked[1]}")
        width = max(map(len, p["versions"]))
        for name, (va, vb) in p["versions"].items():
            mark = "" if va == vb else "   <- differs"
            lines.append(f"  {name:<{width}}  {va or '-'} | {vb or '-'}{mark}")
        if not p["same_code"]:
            lines.append("  NOTE: the two runs were computed from different code (ports/ or "
                         "conformance/): the drift is not the framework's alone")
        lines.append("  logits: max |A - B| per case, measured on the stored (float32-rounded) "
                     "logits; each run's error")
        lines.append("  against the expected logits; their sum bounds |A - B| at full "
                     "precision (what counts in float64)")
        lines.append(f"  {'case':<28}{'dtype':>8}{'|A - B|':>10}{'bound':>10}{'err A':>10}"
                     f"{'err B':>10}{'top-1':>7}")
        every = [side for side in ("A", "B")
                 if p["cases"] and all(side in c["failed"] for c in p["cases"])]
        for side in every:
            lines.append(f"  every case failed in {side}: {p['first_error'][side]}")
        for c in p["cases"] if not every else []:
            if "max_abs" not in c and c["kind"] in ("golden", "fixture"):
                lines.append(f"  {c['name'] + (' @' + str(c['size']) if c['size'] else ''):<28}"
                             f"{c['dtype']:>8}  failed in {' and '.join(c['failed']) or '?'}")
                continue
            if "max_abs" not in c:
                continue
            where = c["name"] + (f" @{c['size']}" if c["size"] else "")
            lines.append(f"  {where:<28}{c['dtype']:>8}{_num(c['max_abs'], 10)}"
                         f"{_num(c.get('bound'), 10)}{_num(c['error_a'], 10)}"
                         f"{_num(c['error_b'], 10)}{c['top1_same']:>4}/{c['images']}")
        training = [c for c in p["cases"] if "max_abs" not in c and c["kind"] not in
                    ("golden", "fixture")]
        if training and not every:
            lines.append("  training (max relative error against the float64 reference, A | B):")
            for c in training:
                lines.append(f"  {c['id']:<38}{_num(c['error_a'], 10)}{_num(c['error_b'], 10)}")
        s = p["summary"]
        for dtype, d in s.items():
            if dtype in ("training", "failed"):
                continue
            exact = "" if dtype == "float32" else " (at most)"
            lines.append(f"  summary {dtype}: {d['cases']} cases, |A - B|{exact} "
                         f"{d['drift']:.2e} ({d['worst']}), median {d['median']:.1e}; "
                         f"{d['identical']} identical, {d['top1_changed']} top-1 changes, "
                         f"{d['beyond_tolerance']} beyond the tolerance")
        if "training" in s:
            t = s["training"]
            lines.append(f"  summary training: {t['cases']} cases, max error A "
                         f"{t['max_error_a']:.1e}, B {t['max_error_b']:.1e}, largest change "
                         f"{t['max_error_change']:.1e}")
        if "failed" in s:
            ids = s["failed"]
            lines.append(f"  failed in a run: {len(ids)} cases ({', '.join(ids[:4])}"
                         f"{', ...' if len(ids) > 4 else ''})")
            for side, error in p["first_error"].items():
                if error and side not in every:
                    lines.append(f"  first error in {side}: {error}")
        for side, ids in (("A", p["only_a"]), ("B", p["only_b"])):
            if ids:
                lines.append(f"  only in {side}: {len(ids)} cases ({', '.join(ids[:4])}"
                             f"{', ...' if len(ids) > 4 else ''})")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """One heatmap per port: cases (variant @ size, fixtures) x dtype, log10 max |A - B|;
    the title names the framework versions of both runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ports = [p for p in report["ports"].values() if any("max_abs" in c for c in p["cases"])]
    if not ports:
        raise ValueError("no case with logits in both runs: nothing to plot")
    fig, axes = plt.subplots(1, len(ports), squeeze=False, gridspec_kw={"wspace": 0.6},
                             figsize=(5.0 * len(ports) + 1.5,
                                      2.0 + 0.22 * max(len({(c["name"], c["size"])
                                                            for c in p["cases"]})
                                                       for p in ports)))
    im = None
    for ax, p in zip(axes[0], ports):
        cases = [c for c in p["cases"] if "max_abs" in c]
        rows = sorted({(c["kind"] != "golden", c["name"], c["size"]) for c in cases})
        cols = sorted({c["dtype"] for c in cases})
        grid = np.full((len(rows), len(cols)), np.nan)
        for c in cases:
            grid[rows.index((c["kind"] != "golden", c["name"], c["size"])),
                 cols.index(c["dtype"])] = math.log10(max(c["drift"], 1e-17))
        im = ax.imshow(grid, cmap="magma", vmin=-17, vmax=-2, aspect="auto")
        ax.set_xticks(range(len(cols)), [d if d == "float32" else f"{d} (bound)"
                                         for d in cols], fontsize=8)
        ax.set_yticks(range(len(rows)), [f"{n} @{z}" if z else f"{n} (real)"
                                         for _, n, z in rows], fontsize=6)
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, "0" if v <= -17 else f"{v:.1f}", ha="center", va="center",
                        fontsize=6, color="w" if v < -8 else "k")
        differ = [f"{k} {a or '-'}->{b or '-'}" for k, (a, b) in p["versions"].items()
                  if a != b and k in (*FRAMEWORKS.get(p["port"], ()), *ALWAYS)]
        ax.set_title(f"{p['port']}: log10 max |A - B| of the logits\n"
                     + ("\n".join(differ) or "same framework versions"), fontsize=8)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    fig.suptitle(f"A = {report['a']['label']}, B = {report['b']['label']}", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path, help="folder of result files (PORT.json, PORT.npz)")
    parser.add_argument("run_b", type=Path, help="folder of result files to compare with")
    parser.add_argument("--ports", help="comma-separated ports (default: every port in both)")
    parser.add_argument("--labels", help="names of the two runs, A,B (default: folder names)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="write the heatmaps")
    args = parser.parse_args(argv)
    labels = tuple(args.labels.split(",", 1)) if args.labels else None
    if labels is not None and len(labels) != 2:
        parser.error("--labels: expected A,B")
    try:
        report = compare(args.run_a, args.run_b,
                         [p for p in args.ports.split(",") if p] if args.ports else None,
                         labels)
    except (ValueError, OSError) as e:
        print(f"drift: error: {e}", file=sys.stderr)
        return 2
    print(text(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.part")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
