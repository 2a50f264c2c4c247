"""The conformance test suite every port's test module instantiates.

    class TestTorch(PortSuite):
        port = "torch"

Each golden case (variant x input size x dtype) and each real-weights fixture is one test.
A case whose result was recorded by this very code in this very environment (same key, see
:mod:`conformance.results`; e.g. by the main job just before) is asserted from that record
instead of being computed again; every other case is computed and recorded at the end of
the session, for the matrix to gather.
"""

from __future__ import annotations

from . import collect, results
from .fixtures import SharedDataMissing, skip_missing

_records: dict[str, tuple[dict, dict]] = {}
_current: dict[str, tuple[dict, dict]] = {}


def flush() -> None:
    for port, (recs, arrays) in _records.items():
        results.write(port, recs, arrays)


def _result(port: str, case: collect.Case) -> dict:
    if port not in _current:
        _current[port] = results.current(port)
    stored, stored_logits = _current[port]
    if case.id in stored and (case.id in stored_logits or stored[case.id].get("error")):
        return stored[case.id]
    try:
        rec, logits = collect.compute(port, case)
    except SharedDataMissing as e:
        skip_missing(e)
    recs, arrays = _records.setdefault(port, ({}, {}))
    recs[case.id] = rec
    if logits is not None:
        arrays[case.id] = logits
    return rec


class PortSuite:
    port: str = ""

    def test_case(self, case: collect.Case) -> None:
        r = _result(self.port, case)
        what = f"Logits of {self.port} {case.dtype} on {case.name}" + \
            (f" at {case.size}" if case.size else "")
        assert not r.get("error"), f"{what}: {r['error']}"
        assert r["ok"], (f"{what} disagree (atol={r['atol']:g}, rtol={r['rtol']:g}):\n"
                         f"{collect.report(r)}")
        if case.kind == "fixture":
            assert r.get("top1_ok", True), f"{what}: wrong top-1; top-5 {r['top5']}"
            assert r.get("top3_ok", True), f"{what}: wrong top-3; top-5 {r['top5']}"
