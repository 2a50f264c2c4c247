"""The bench's worker: one long-lived process in a port's own environment.

``python -m devtools.bench --worker PORT`` loads SqueezeNet 1.1 with the seeded weights,
tries every candidate inference mode of the port (:mod:`devtools.bench.candidates`) per
batch size, rejects those whose logits disagree with the float64 NumPy reference, keeps the
fastest, then times it on command.  JSON lines on stdout (everything else printed goes to
stderr): first ``{"ready": ..., "modes", "trials", "versions", "logits0"}``, then one reply
``{"calls", "seconds", "images_per_s"}`` per ``{"cmd": "run", "batch", "seconds"}``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback

import numpy as np

from conformance.registry import PORTS

from .candidates import candidates as all_candidates
from .config import SIZE, VARIANT_ID, split


def _time_for(run, seconds: float, min_calls: int = 1) -> tuple[int, float]:
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_calls and elapsed >= seconds:
            return calls, elapsed


def _versions(port: str) -> dict:
    """Python, numpy and the port's framework distributions (its registry record)."""
    from conformance.host import versions

    installed = versions()
    return {"python": platform.python_version(), "numpy": np.__version__,
            **{d: installed[d] for d in PORTS[split(port)[0]].framework if d in installed}}


def worker(port: str, batches: list[int], quick: bool) -> int:
    """JSON lines protocol on the real stdout (everything else printed goes to stderr)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        from conformance.harness import compare, tolerance
        from conformance.inputs import inputs
        from ports import numpy as reference
        from ports.seeded import seeded_weights
        from ports.spec import Variant

        name, dtype = split(port)  # "torch@bfloat16": the torch port in bfloat16
        mod = PORTS[name].import_module()
        weights = seeded_weights(Variant.from_id(VARIANT_ID))
        images = inputs(SIZE, count=max(batches))
        # every candidate's logits must agree with the float64 oracle, or it is not chosen
        expected = reference.predict(reference.load(weights, "float64"), images)
        atol, rtol = tolerance(name, dtype, expected=expected)
        candidates = all_candidates(name, mod, weights, quick, dtype)
        chosen, trials = {}, {}
        for batch in batches:
            x = np.ascontiguousarray(images[:batch])
            best = None
            trials[batch] = {}
            for name, make in candidates:
                try:
                    run = make(x)
                    t0 = time.perf_counter()
                    out = run()  # first call: compilation, allocation
                    first = time.perf_counter() - t0
                    agreement = compare(np.asarray(out), expected[:batch], atol, rtol)
                    if not agreement.ok:
                        trials[batch][name] = (f"rejected: disagrees with the float64 "
                                               f"reference, max abs {agreement.max_abs:.3g}")
                        continue
                    for _ in range(1 if quick else 3):  # oneDNN, XLA, LLGA settle in
                        run()
                    per_call = min(elapsed / calls for calls, elapsed in (
                        _time_for(run, 0.05 if quick else 0.4, 2)
                        for _ in range(1 if quick else 3)))  # best of 3: drift-proof choice
                except Exception as e:  # a candidate that fails is reported, not fatal
                    trials[batch][name] = f"failed: {type(e).__name__}: {e}"[:300]
                    continue
                trials[batch][name] = {"first_call_s": first, "per_call_s": per_call}
                if best is None or per_call < best[1]:
                    best = (name, per_call, run)
            if best is None:
                raise RuntimeError(f"no inference mode works at batch {batch}: {trials[batch]}")
            chosen[batch] = best
        logits = np.asarray(chosen[batches[0]][2]())[0].astype(np.float64)
        send({"ready": True, "port": port, "modes": {b: c[0] for b, c in chosen.items()},
              "trials": trials, "versions": _versions(port), "logits0": logits.tolist(),
              "python": sys.executable})
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd.get("cmd") != "run":
                break
            batch = int(cmd["batch"])
            calls, elapsed = _time_for(chosen[batch][2], float(cmd["seconds"]), 1)
            send({"calls": calls, "seconds": elapsed, "images_per_s": calls * batch / elapsed})
        return 0
    except Exception as e:
        send({"ready": False, "port": port, "error": f"{type(e).__name__}: {e}",
              "traceback": traceback.format_exc()[-3000:]})
        return 1
