"""``tools/trace``: compare implementations layer by layer and name where they part ways.

    tools/trace --weights FILE [--against FILE2] [--ports torch,keras-jax,onnxruntime]
                [--input seeded|IMAGE] [--size 224] [--dtype float32|float64|bfloat16]
                [--path fast|reference] [--json OUT.json] [--plot OUT.png]

Every port runs in its own tox environment (created on first use, as the matrix does) on
one input prepared here; the float64 NumPy reference runs here.  Per port and layer it
prints max abs, max rel (to the layer's max |reference|), cosine similarity and SNR, and
names the first divergent layer (:func:`conformance.trace.threshold`).  ``--against FILE2``
runs each port (default: the NumPy reference) on both weight files and names the first layer
whose difference rounding of an earlier one does not explain: one whose inputs are identical
in the two runs while its output differs at all, or one that moves by more than the threshold
(:func:`conformance.trace.compare_against`).  ``--weights seeded:1_1-p0-none`` uses the
seeded conformance weights.
Exit status 0 when no port diverges (or, with ``--against``, when they do not differ), 1
otherwise, 2 on a bad argument or file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from conformance import toxenv
from conformance.harness import ROOT
from conformance.registry import PORTS
from conformance.trace import compare, compare_against, layer_inputs

from .worker import trace, weights_of

OUT = Path(os.environ.get("SQUEEZENET_TRACE", ROOT / "build" / "trace"))
IN_PROCESS = ("numpy",)  # needs no environment of its own


def prepare_input(spec: str, size: int, weights, preprocessing: str | None) -> np.ndarray:
    """``seeded`` -> 2 of the conformance inputs at ``size``; else an image file (or
    ``skimage:NAME``) preprocessed as the weights' metadata (or ``preprocessing``) says."""
    if spec == "seeded":
        from conformance.inputs import inputs

        return inputs(size, count=2)
    from ports.cli.classify import load_image
    from ports.preprocess import preprocess

    mode = preprocessing or weights.meta.get("preprocessing")
    if mode not in ("caffe", "torchvision"):
        raise ValueError(f"--input {spec}: the weights' metadata gives preprocessing "
                         f"{mode!r}; pass --preprocessing caffe or torchvision")
    return preprocess(load_image(spec), mode)


def run_port(port: str, weights_arg: str, weights, x: np.ndarray, dtype: str, path: str,
             tag: str, log) -> tuple[dict, dict]:
    """(activations, notes) of ``port``: here for the NumPy reference, else in its tox
    environment through :mod:`devtools.trace.worker`."""
    if port in IN_PROCESS:
        return trace(port, weights, x, dtype, path)
    OUT.mkdir(parents=True, exist_ok=True)
    x_path = OUT / "input.npz"
    np.savez(x_path, x=x)
    out = OUT / f"{port}-{tag}.npz"
    out.unlink(missing_ok=True)
    toxenv.ensure(PORTS[port].env, log)
    code, lines = toxenv.run(PORTS[port].env, [
        "python", "-u", "-m", "devtools.trace.worker", port, "--weights", weights_arg,
        "--input", str(x_path), "--dtype", dtype, "--path", path, "--out", str(out)], log,
        echo=False)
    if code != 0 or not out.exists():
        raise RuntimeError(f"{port}: trace worker exited {code}: {toxenv.first_error(lines)}")
    with np.load(out) as data:
        acts = {k: data[k] for k in data.files}
    return acts, json.loads(out.with_suffix(".json").read_text())


def _strict(obj):
    """``obj`` with non-finite floats as None (strict JSON) and NumPy scalars as floats."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def report(result: dict) -> str:
    lines = []
    for port, r in result["ports"].items():
        if "error" in r:
            lines.append(f"{port}: ERROR {r['error']}")
            continue
        worst = max(r["layers"].items(), key=lambda kv: kv[1].get("max_rel", math.inf))
        first = r["first_divergent"]
        why = f" ({r['why']})" if first and r.get("why") else ""
        lines.append(f"{port} ({r['dtype']}, {r['path']}): first divergent layer "
                     f"{first or 'none'}{why}; worst max_rel "
                     f"{worst[1].get('max_rel', math.nan):.2e} at {worst[0]}"
                     f" (threshold {r['threshold']:.1e})"
                     + (f"; {r['note']}" if r.get("note") else ""))
    names = result["layers"]
    ports = [p for p in result["ports"] if "error" not in result["ports"][p]]
    if ports:
        lines.append("")
        lines.append(f"{'layer':<18}" + "".join(f"{p[:14]:>16}" for p in ports)
                     + "   (max_rel / cosine)")
        for name in names:
            cells = []
            for p in ports:
                m = result["ports"][p]["layers"].get(name, {})
                mark = "!" if result["ports"][p]["first_divergent"] == name else " "
                cells.append(f"{m.get('max_rel', math.nan):>9.1e}/{m.get('cosine', math.nan):.4f}"
                             f"{mark}"[:16].rjust(16))
            lines.append(f"{name:<18}" + "".join(cells))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["layers"]
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(names)), 4.5))
    for port, r in result["ports"].items():
        if "error" in r:
            continue
        ys = [max(r["layers"].get(n, {}).get("max_rel", math.nan), 1e-17) for n in names]
        line, = ax.semilogy(range(len(names)), ys, marker=".", label=port)
        if r["first_divergent"]:
            i = names.index(r["first_divergent"])
            ax.annotate(f"{port}: {r['first_divergent']}", (i, ys[i]), fontsize=7,
                        color=line.get_color(), textcoords="offset points", xytext=(4, 6))
    for t in sorted({r["threshold"] for r in result["ports"].values() if "threshold" in r}):
        ax.axhline(t, color="grey", linestyle="--", linewidth=1)
        ax.text(0, t, f"threshold {t:.1e}", fontsize=7, color="grey", va="bottom")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("max |act - ref| / max |ref|")
    ax.set_title(result["title"], fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = Path(str(path) + ".part.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trace", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, metavar="FILE",
                   help="weights file of any format, or seeded:VARIANT_ID")
    p.add_argument("--against", metavar="FILE2",
                   help="a second weights file: name the first layer where each port's "
                        "outputs on the two part: its inputs identical and its output not, "
                        "or a difference above the threshold")
    p.add_argument("--ports", help="comma-separated ports and engines (default: numpy with "
                                   "--against, else every port and engine)")
    p.add_argument("--input", default="seeded", help="seeded (default), an image file or "
                                                     "skimage:NAME")
    p.add_argument("--preprocessing", choices=("caffe", "torchvision"),
                   help="for an image input (default: the weights' metadata)")
    p.add_argument("--size", type=int, default=224, help="side of the seeded input (224)")
    p.add_argument("--dtype", choices=("float32", "float64", "bfloat16"), default="float32",
                   help="bfloat16: the ports that compute it (default ports), its own threshold")
    p.add_argument("--path", choices=("fast", "reference"), default="fast",
                   help="trace the tuned layers predict uses (fast, default) or the plain "
                        "reference network")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--plot", type=Path, help="plot error against depth here")
    args = p.parse_args(argv)

    computes = (lambda q: True) if args.dtype != "bfloat16" else (
        lambda q: args.dtype in PORTS[q].reduced)
    default = "numpy" if args.against else ",".join(
        q for q in PORTS if q != "numpy" and computes(q))
    ports = [q for q in (args.ports or default).split(",") if q]
    unknown = [q for q in ports if q not in PORTS]
    if unknown:
        raise ValueError(f"--ports: unknown {unknown}; known: {', '.join(PORTS)}")
    if args.size < 1:
        raise ValueError(f"--size: expected a positive side, got {args.size}")
    weights = weights_of(args.weights)
    other = weights_of(args.against, weights.variant) if args.against else None
    if other is not None and other.variant != weights.variant:
        raise ValueError(f"--against {args.against}: SqueezeNet {other.variant.id}, but "
                         f"--weights is {weights.variant.id}")
    x = prepare_input(args.input, args.size, weights, args.preprocessing)
    from ports._predict import as_input

    as_input(x, weights.variant)  # a bad size ends here, with the message predict would give

    def log(line: str) -> None:
        print(line, flush=True)

    start = time.monotonic()
    reference = None
    if not args.against:
        reference, _ = trace("numpy", weights, x, "float64", "reference")
    result = {"weights": args.weights, "against": args.against, "input": args.input,
              "input_shape": list(x.shape), "dtype": args.dtype, "path": args.path,
              "variant": weights.variant.id, "layers": weights.variant.activation_names(),
              "reference": "numpy float64" if reference is not None else None,
              "title": "", "ports": {}}
    for port in ports:
        dtype = args.dtype
        log(f"== {port}")
        try:
            acts, notes = run_port(port, args.weights, weights, x, dtype, args.path, "a", log)
            if args.against:
                base = acts
                acts, _ = run_port(port, args.against, other, x, dtype, args.path, "b", log)
            else:
                base = reference
        except Exception as e:  # one port failing is a result, not the end of the run
            result["ports"][port] = {"error": f"{type(e).__name__}: {e}"}
            log(f"   ERROR {result['ports'][port]['error']}")
            continue
        if args.against:
            r = compare_against(base, acts, dtype, layer_inputs(weights.variant))
        else:
            r = compare(base, acts, dtype)
        r.update(dtype=dtype, path=args.path, versions=notes.get("versions", {}))
        for key in ("note", "marked_logits_max_abs"):
            if key in notes:
                r[key] = notes[key]
        result["ports"][port] = r
        log(f"   first divergent layer: {r['first_divergent'] or 'none'}")
    what = (f"{args.weights} vs {args.against}" if args.against
            else f"{args.weights} vs the float64 NumPy reference")
    result["title"] = (f"SqueezeNet {weights.variant.id}, {what}, input {args.input} "
                       f"{list(x.shape)}, {args.dtype}, {args.path} path")
    result["seconds"] = time.monotonic() - start
    print()
    print(result["title"])
    print(report(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(args.json) + ".part")
        tmp.write_text(json.dumps(_strict(result), indent=1))
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    diverged = [q for q, r in result["ports"].items() if "error" in r or r["first_divergent"]]
    return 1 if diverged else 0
