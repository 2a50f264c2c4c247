"""One port's activations, computed in that port's own environment for ``tools/trace``.

    python -m devtools.trace.worker PORT --weights FILE|seeded:ID --input X.npz \
        --dtype float32 --path fast|reference --out OUT.npz

``X.npz`` holds ``x`` [N,3,H,W] (the orchestrator prepares the input once, for every port);
``OUT.npz`` gets one array per activation name, and ``OUT.json`` what else the port says
(versions, the path traced, and for an engine how far marking intermediate outputs moved
its logits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from conformance.collect import feed
from conformance.registry import PORTS


def weights_of(spec: str, variant=None):
    """``seeded:VARIANT_ID`` -> the seeded weights of that variant; else a weights file."""
    if spec.startswith("seeded:"):
        from ports.seeded import seeded_weights
        from ports.spec import Variant

        return seeded_weights(Variant.from_id(spec.split(":", 1)[1]))
    from ports._api import weights

    return weights(spec, variant)


def trace(port: str, weights, x: np.ndarray, dtype: str, path: str,
          layers=None) -> tuple[dict[str, np.ndarray], dict]:
    """(activations, notes) of ``port`` on ``x``, in this process."""
    mod = PORTS[port].import_module()
    model = mod.load(weights, dtype, fast=(path == "fast"))
    x = feed(x, dtype)  # float32 for bfloat16: the port rounds it
    acts = mod.activations(model, x, layers)
    notes: dict = {"path": path, "dtype": dtype}
    effect = getattr(mod, "marking_effect", None)
    if effect is not None:  # an engine: what marking intermediate outputs costs
        notes.update(effect(model, x))
    return acts, notes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("port", choices=sorted(PORTS))
    p.add_argument("--weights", required=True)
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--path", choices=("fast", "reference"), default="fast")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    with np.load(args.input) as data:
        x = data["x"]
    acts, notes = trace(args.port, weights_of(args.weights), x, args.dtype, args.path)
    from conformance.results import versions

    notes["versions"] = {k: v for k, v in versions().items()
                         if k in PORTS[args.port].framework or k == "numpy"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **{k: np.asarray(v) for k, v in acts.items()})
    args.out.with_suffix(".json").write_text(json.dumps(notes, indent=1))
    print(f"{args.port}: {len(acts)} activations -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
