"""Run one port over every conformance case and record how far it is from the expected
logits.  ``python -m conformance.collect PORT`` writes ``build/conformance/PORT.json``
(one record per case) and ``PORT.npz`` (its float32-rounded logits, for port-vs-port
comparison); the per-port test modules call :func:`evaluate` case by case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from ports.seeded import seeded_weights
from ports.spec import Variant

from . import golden
from .fixtures import FIXTURES, SharedDataMissing, require_shared
from .harness import RESULTS, Agreement, compare, tolerance
from .inputs import SIZES, inputs
from .ports import PORTS


@dataclass(frozen=True)
class Case:
    kind: str      # "golden" or "fixture"
    name: str      # variant id or fixture name
    size: int      # input side (0 for fixtures)
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.name}-{self.size}-{self.dtype}" if self.size else f"{self.name}-{self.dtype}"


def cases(port: str) -> list[Case]:
    p = PORTS[port]
    out = [Case("golden", vid, size, dt) for dt in p.dtypes for vid in golden.VARIANTS
           for size in SIZES]
    out += [Case("fixture", f.name, 0, dt) for dt in p.dtypes for f in FIXTURES]
    return out


@cache
def _module(port: str):
    return PORTS[port].import_module()


@lru_cache(maxsize=4)
def _seeded(vid: str):
    return seeded_weights(Variant.from_id(vid))


@lru_cache(maxsize=2)
def _model(port: str, kind: str, name: str, dtype: str):
    mod = _module(port)
    if kind == "golden":
        return mod.load(_seeded(name), dtype=dtype)
    return mod.load(_fixture(name).weights(), dtype=dtype)


def _fixture(name: str):
    return next(f for f in FIXTURES if f.name == name)


def evaluate(port: str, case: Case) -> tuple[Agreement, np.ndarray, dict]:
    """Logits of ``port`` for ``case`` compared with the expected logits."""
    extra: dict = {}
    if case.kind == "golden":
        x, expected = inputs(case.size), golden.load(case.name, case.size)
        atol, rtol = tolerance(port, case.dtype)
    else:
        fx = _fixture(case.name)
        x, expected = fx.inputs(), fx.expected()
        atol, rtol = tolerance(port, case.dtype, fx.tolerance)
    model = _model(port, case.kind, case.name, case.dtype)
    start = time.perf_counter()
    logits = np.asarray(_module(port).predict(model, x.astype(case.dtype)))
    extra["seconds"] = time.perf_counter() - start
    agreement = compare(logits, expected, atol, rtol)
    if case.kind == "fixture":
        fx = _fixture(case.name)
        extra["top5"] = np.argsort(-logits, axis=1)[:, :5].tolist()
        if fx.top1 is not None:
            extra["top1_ok"] = [t[0] for t in extra["top5"]] == fx.top1
        if fx.top3_contains:
            extra["top3_ok"] = all(set(classes) <= set(extra["top5"][int(i)][:3])
                                   for i, classes in fx.top3_contains.items())
    return agreement, logits, extra


def record(port: str, case: Case, agreement: Agreement | None, extra: dict,
           error: str | None = None) -> dict:
    return {"port": port, "kind": case.kind, "name": case.name, "size": case.size,
            "dtype": case.dtype, "error": error,
            **({} if agreement is None else agreement.as_dict()),
            **{k: v for k, v in extra.items() if k != "top5"}}


def save(port: str, records: list[dict], logits: dict[str, np.ndarray]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / f".{port}.json.part"
    tmp.write_text(json.dumps({"port": port, "cases": records}, indent=1))
    tmp.replace(RESULTS / f"{port}.json")
    if logits:
        np.savez(RESULTS / f".{port}.part.npz", **logits)
        (RESULTS / f".{port}.part.npz").replace(RESULTS / f"{port}.npz")


def run(port: str, log=print) -> list[dict]:
    """Every case of ``port``; prints progress; writes the result files."""
    all_cases = cases(port)
    records, logits = [], {}
    for i, case in enumerate(all_cases, 1):
        try:
            agreement, out, extra = evaluate(port, case)
        except SharedDataMissing as e:
            if require_shared():
                raise
            log(f"[{i}/{len(all_cases)}] {port} {case.id}: skipped ({e})")
            continue
        except Exception as e:  # a port failure is a result, reported in the matrix
            records.append(record(port, case, None, {}, f"{type(e).__name__}: {e}"))
            log(f"[{i}/{len(all_cases)}] {port} {case.id}: ERROR {type(e).__name__}: {e}")
            continue
        records.append(record(port, case, agreement, extra))
        logits[case.id] = out.astype(np.float32)
        log(f"[{i}/{len(all_cases)}] {port} {case.id}: max abs {agreement.max_abs:.2e} "
            f"top-5 {agreement.top5_agree}/{agreement.images} "
            f"{'ok' if agreement.ok else 'MISMATCH'} ({extra['seconds']:.2f}s)")
    save(port, records, logits)
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="run one port over all conformance cases")
    parser.add_argument("port", choices=sorted(PORTS))
    args = parser.parse_args(argv)
    records = run(args.port)
    bad = [r for r in records if r.get("error") or not r.get("ok")]
    print(f"{args.port}: {len(records) - len(bad)} / {len(records)} cases agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
