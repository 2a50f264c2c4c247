"""Run one port over every conformance case and record how far it is from the expected
logits.  ``python -m conformance.collect PORT`` records every case in
``build/conformance/PORT.json`` and ``PORT.npz`` (see :mod:`conformance.results`), reusing
the results that are current, and exits 1 when any case errors, disagrees or holds a value
that is not finite, or when the record it leaves cannot stand for a verdict
(:func:`conformance.results.verdict`: every case of the port present, finished, finite);
the per-port test modules go through the same records case by case
(:mod:`conformance.suite`).  A case that needs the shared ground truth when it is absent
is recorded as not run (``skipped``, with the reason), never left out.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from ports._api import DTYPES, REDUCED
from ports.seeded import seeded_weights
from ports.spec import Variant

from . import golden, releases, results, training
from .fixtures import FIXTURES, SharedDataMissing, require_shared
from .harness import Agreement, compare, tolerance
from .inputs import SIZES, inputs
from .registry import PORTS

TRAINING_KINDS = ("grad", "steps")


@dataclass(frozen=True)
class Case:
    kind: str      # "golden", "fixture" (logits); "grad", "steps" (training, see training.py)
    name: str      # variant id or fixture name
    size: int      # input side (0 for fixtures)
    dtype: str

    @property
    def id(self) -> str:
        base = f"{self.name}-{self.size}-{self.dtype}" if self.size else \
            f"{self.name}-{self.dtype}"
        return f"{self.kind}-{base}" if self.kind in TRAINING_KINDS else base


# A reduced precision (``Port.reduced``: bfloat16) runs every variant at 227, Caffe's size
# (where both versions' pools overhang), and every real-weights fixture: its question is how
# far the precision moves the logits, which the float cases have already tied to the spec.
REDUCED_SIZES = (227,)


def cases(port: str) -> list[Case]:
    p = PORTS[port]
    out = [Case("golden", vid, size, dt) for dt in p.dtypes for vid in golden.VARIANTS
           for size in SIZES]
    out += [Case("fixture", f.name, 0, dt) for dt in p.dtypes for f in FIXTURES]
    out += [Case("golden", vid, size, dt) for dt in p.reduced for vid in golden.VARIANTS
            for size in REDUCED_SIZES]
    out += [Case("fixture", f.name, 0, dt) for dt in p.reduced for f in FIXTURES]
    if p.training:  # variant by variant: the float64 reference is computed once for both
        out += [Case(kind, vid, training.SIZE, dt) for vid in golden.VARIANTS
                for kind in TRAINING_KINDS for dt in p.dtypes]
        out += [Case("grad", name, 0, dt) for name in training.FIXTURE_LABELS
                for dt in p.dtypes]
    return out


def train_case(port: str, case: Case) -> dict:
    """The record fields of a training case: the port's own autodiff and optimizer against
    the float64 reference (:mod:`conformance.training`)."""
    start = time.perf_counter()
    mod = _module(port)
    if case.kind == "grad":
        out = training.grad_case(mod, case.name, case.dtype, port)
    else:
        out = training.steps_case(mod, case.name, case.dtype, port)
    out["seconds"] = time.perf_counter() - start
    return out


# The names an engine's ``precision(model)`` may give for each case dtype (OpenVINO says
# ``f32``, LiteRT the tensors' type): anything else is an error, never a verdict.
SAME_PRECISION = {"float32": {"float32", "f32"}, "float64": {"float64", "f64"},
                  "bfloat16": {"bfloat16", "bf16"}}


def feed(x: np.ndarray, dtype: str) -> np.ndarray:
    """The input a port is given for a case in ``dtype``: in that dtype, or float32 for a
    reduced precision (NumPy has none: the port rounds it, ``ports._api``)."""
    return x.astype(dtype if dtype in DTYPES else "float32")


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
        atol, rtol = tolerance(port, case.dtype, expected=expected)
    else:
        fx = _fixture(case.name)
        x, expected = fx.inputs(), fx.expected()
        atol, rtol = tolerance(port, case.dtype, fx.tolerance, expected=expected)
    model = _model(port, case.kind, case.name, case.dtype)
    precision = getattr(_module(port), "precision", None)
    if callable(precision):  # an engine that chooses its own precision says what it ran in
        extra["precision"] = precision(model)
        if extra["precision"] not in SAME_PRECISION.get(case.dtype, {case.dtype}):
            raise RuntimeError(f"{port} computed a {case.dtype} case in "
                               f"{extra['precision']}: no {case.dtype} verdict can be given")
    start = time.perf_counter()
    logits = np.asarray(_module(port).predict(model, feed(x, case.dtype)))
    extra["seconds"] = time.perf_counter() - start
    if case.dtype == "bfloat16" and not callable(precision):
        check_bfloat16(port, logits)
    agreement = compare(logits, expected, atol, rtol)
    extra["top1_agree"] = top1_agree(logits, expected)
    if not agreement.ok:
        extra["first_divergent"] = first_divergent(port, case, model, x)
    if case.kind == "fixture":
        fx = _fixture(case.name)
        extra["top5"] = np.argsort(-logits, axis=1)[:, :5].tolist()
        if fx.top1 is not None:
            extra["top1_ok"] = [t[0] for t in extra["top5"]] == fx.top1
        if fx.top3_contains:
            extra["top3_ok"] = all(set(classes) <= set(extra["top5"][int(i)][:3])
                                   for i, classes in fx.top3_contains.items())
    return agreement, logits, extra


def check_bfloat16(port: str, logits: np.ndarray) -> None:
    """A port's bfloat16 logits are bfloat16 values (widened exactly to float32); any other
    value means it computed them, or their last layer, in a wider precision, and its error
    says nothing of bfloat16 (an engine that picks its own precision says so instead:
    ``precision``)."""
    from .bf16 import round_to_bfloat16

    finite = np.isfinite(logits)
    wide = int((round_to_bfloat16(logits[finite]) != logits[finite]).sum())
    if wide:
        raise RuntimeError(f"{port} returned bfloat16 logits of which {wide} of {logits.size} "
                           f"are not bfloat16 values: computed in another precision, no "
                           f"bfloat16 verdict can be given")


def top1_agree(logits: np.ndarray, expected: np.ndarray) -> int:
    """How many images' top-1 class is the expected one (reported, not judged: the verdict
    is the bound and the top-5 with ties; an image with a non-finite logit never agrees)."""
    logits = np.asarray(logits, np.float64)
    same = np.argmax(logits, axis=1) == np.argmax(expected, axis=1)
    return int((same & np.isfinite(logits).all(axis=1)).sum())


def first_divergent(port: str, case: Case, model, x: np.ndarray) -> str | None:
    """Where a disagreeing case first parts from the float64 reference, by the layer trace
    (:mod:`conformance.trace`): the port's ``activations`` against the NumPy reference's on
    the same weights and input.  A message instead when the port cannot be traced."""
    from ports import numpy as ref

    from .trace import compare as trace_compare

    mod = _module(port)
    try:
        weights = _seeded(case.name) if case.kind == "golden" else _fixture(case.name).weights()
        reference = ref.activations(ref.load(weights), x)
        acts = mod.activations(model, feed(x, case.dtype))
    except Exception as e:  # the trace is an aid: its failure must not hide the mismatch
        return f"(not traced: {type(e).__name__}: {e})"
    return trace_compare(reference, acts, case.dtype)["first_divergent"]


def record(port: str, case: Case, agreement: Agreement | None, extra: dict,
           error: str | None = None) -> dict:
    return {"id": case.id, "port": port, "kind": case.kind, "name": case.name,
            "size": case.size, "dtype": case.dtype, "error": error,
            **({} if agreement is None else agreement.as_dict()), **extra}


def compute(port: str, case: Case) -> tuple[dict, np.ndarray | None]:
    """(record, logits or None) of one case, computed now; a port failure is a record with
    ``error`` set (``SharedDataMissing`` propagates)."""
    try:
        if case.kind in TRAINING_KINDS:
            return record(port, case, None, train_case(port, case)), None
        agreement, logits, extra = evaluate(port, case)
    except SharedDataMissing:
        raise
    except Exception as e:  # a port failure is a result, reported in the matrix
        return record(port, case, None, {}, f"{type(e).__name__}: {e}"), None
    return record(port, case, agreement, {**extra, "logits": True}), logits


def bad(records) -> list[dict]:
    """Records that errored or disagree (a value that is not finite disagrees); not those
    of cases that did not run (:func:`not_run`)."""
    return [r for r in records if not r.get("skipped") and (r.get("error") or not r.get("ok"))]


def not_run(records) -> list[dict]:
    """Records of cases that did not run: the shared ground truth they need is absent."""
    return [r for r in records if r.get("skipped")]


PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] ")
REUSED = re.compile(r"^\S+: (\d+) of (\d+) cases recorded by this code")


def progress(lines: list[str]) -> int:
    """How many cases a ``collect`` run whose output is ``lines`` got through: those it
    reused and those it printed a result for."""
    reused = done = 0
    for line in lines:
        if m := REUSED.match(line):
            reused = int(m.group(1))
        elif m := PROGRESS.match(line):
            done = int(m.group(1))
    return reused + done


def report(r: dict) -> str:
    """The mismatch report (``harness.Agreement.report``) of a result record."""
    return Agreement.from_record(r).report()


def describe(r: dict) -> str:
    """One line: how far the case is from its reference, or why it failed or did not run."""
    if r.get("skipped"):
        return f"NOT RUN ({r['skipped']})"
    if r.get("error"):
        return f"ERROR {r['error']}"
    if r.get("nonfinite"):
        what = (", ".join(r["nonfinite"]) if isinstance(r["nonfinite"], list)
                else f"{r['nonfinite']} of {r['total']} logits")
        return f"NOT FINITE: {what} MISMATCH"
    if r["kind"] in TRAINING_KINDS:
        update = (f", update {r['optimizer_rel']:.1e} ({r['worst_update']})"
                  if "optimizer_rel" in r else "")
        return (f"gradient max rel {r['max_rel']:.2e} ({r['worst_tensor']}) bound "
                f"{r['bound']:.0e}, loss rel {r['loss_rel']:.1e}{update} "
                f"{'ok' if r['ok'] else 'MISMATCH'}")
    top = "" if r.get("top1_ok", True) and r.get("top3_ok", True) else " WRONG CLASS"
    top1 = f"top-1 {r['top1_agree']}/{r['images']} " if r["dtype"] in REDUCED else ""
    return (f"max abs {r['max_abs']:.2e} {top1}top-5 {r['top5_agree']}/{r['images']} "
            f"{'ok' if r['ok'] else 'MISMATCH'}{top}")


class Recorder:
    """The results of one port's cases in this process: the one way cases are computed and
    recorded, for ``collect`` and for the pytest suite (:mod:`conformance.suite`).  A case
    recorded by this code in this environment is reused (not a not-run one when the shared
    ground truth is required); any other is computed when asked for; :meth:`save` stores
    what was computed (:func:`conformance.results.write`)."""

    def __init__(self, port: str) -> None:
        self.port = port
        self.stored, self.stored_logits = results.current(port)
        self.records: dict[str, dict] = {}
        self.logits: dict[str, np.ndarray] = {}

    def reused(self, case: Case) -> dict | None:
        rec = self.stored.get(case.id)
        if results.reusable(rec, case.id in self.stored_logits) \
                and not (require_shared() and rec.get("skipped")):
            return rec
        return None

    def result(self, case: Case) -> dict:
        """The record of ``case``: reused, computed before in this process, or computed now
        (a case whose shared ground truth is absent is recorded as not run, ``skipped``;
        ``SharedDataMissing`` propagates where the ground truth is required)."""
        rec = self.records.get(case.id) or self.reused(case)
        if rec is not None:
            return rec
        try:
            rec, out = compute(self.port, case)
        except SharedDataMissing as e:
            if require_shared():
                raise
            rec, out = record(self.port, case, None, {"skipped": str(e)}), None
        self.records[case.id] = rec
        if out is not None:
            self.logits[case.id] = out
        return rec

    def save(self, finished: bool = True) -> None:
        results.write(self.port, self.records, self.logits, finished=finished)


def run(port: str, log=print, only: list[str] | None = None) -> list[dict]:
    """Every case of ``port`` (or those whose id is in ``only``): current recorded results
    are reused (see :mod:`conformance.results`), the others computed; prints progress;
    records them, marked unfinished when it starts and every 16 cases (a run that is killed
    keeps what it did, and leaves no record that passes for a finished one), and finished
    at the end."""
    all_cases = cases(port)
    if only:
        unknown = sorted(set(only) - {c.id for c in all_cases})
        if unknown:
            raise ValueError(f"{port} has no cases {unknown}")
        all_cases = [c for c in all_cases if c.id in only]
    recorder = Recorder(port)
    todo = [c for c in all_cases if recorder.reused(c) is None]
    if len(todo) < len(all_cases):
        log(f"{port}: {len(all_cases) - len(todo)} of {len(all_cases)} cases recorded by this "
            f"code in this environment (key {results.key(port)['code'][:12]}); reusing them")
    if todo:
        recorder.save(finished=False)
    for i, case in enumerate(todo, 1):
        rec = recorder.result(case)
        log(f"[{i}/{len(todo)}] {port} {case.id}: {describe(rec)}"
            + (f" ({rec['seconds']:.2f}s)" if "seconds" in rec else ""))
        if i % 16 == 0 and i < len(todo):
            recorder.save(finished=False)
    recorder.save(finished=True)
    return [recorder.result(c) for c in all_cases]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="run one port over all conformance cases; exit 1 if any case errors "
                    "or disagrees")
    parser.add_argument("port", help=f"a port ({', '.join(PORTS)}), or the module path of "
                                     f"one that follows the port protocol")
    parser.add_argument("--case", action="append", metavar="ID",
                        help="only this case (e.g. 1_1-p0-none-224-float32); repeatable")
    args = parser.parse_args(argv)
    if args.port not in PORTS:
        parser.error(f"unknown port {args.port!r}: not one of {', '.join(PORTS)}, and not an "
                     f"importable module with load() and predict()")
    try:
        releases.check()
    except RuntimeError as e:
        print(f"{args.port}: {e}", file=sys.stderr)
        return 2
    records = run(args.port, only=args.case)
    failed, skipped = bad(records), not_run(records)
    ran = len(records) - len(skipped)
    print(f"{args.port}: {ran - len(failed)} / {ran} cases agree"
          + (f"; {len(skipped)} not run ({skipped[0]['skipped']})" if skipped else ""))
    for r in failed[:5]:
        print(f"  {r['id']}: {describe(r)}")
    why = None
    if not args.case:  # the record left behind must stand for a verdict on its own
        doc, arrays = results.read(args.port)
        why = results.verdict(args.port, doc, arrays, [c.id for c in cases(args.port)])
        if why:
            print(f"{args.port}: its record cannot be reported: {why}")
    return 1 if failed or why or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
