"""The conformance test suite every port's test module instantiates.

    class TestTorch(PortSuite):
        port = "torch"

Each golden case (variant x input size x dtype) and each real-weights fixture is one test;
results are recorded and written to ``build/conformance/<port>.json`` at the end.
"""

from __future__ import annotations

from . import collect
from .fixtures import SharedDataMissing, skip_missing

_records: dict[str, tuple[list, dict]] = {}


def _store(port, case, agreement, logits, extra, error=None):
    recs, arrays = _records.setdefault(port, ([], {}))
    recs.append(collect.record(port, case, agreement, extra, error))
    if logits is not None:
        arrays[case.id] = logits.astype("float32")


def flush() -> None:
    for port, (recs, arrays) in _records.items():
        collect.save(port, recs, arrays)


class PortSuite:
    port: str = ""

    def test_case(self, case: collect.Case) -> None:
        try:
            agreement, logits, extra = collect.evaluate(self.port, case)
        except SharedDataMissing as e:
            skip_missing(e)
        except Exception as e:
            _store(self.port, case, None, None, {}, f"{type(e).__name__}: {e}")
            raise
        _store(self.port, case, agreement, logits, extra)
        what = f"Logits of {self.port} {case.dtype} on {case.name}" + \
            (f" at {case.size}" if case.size else "")
        assert agreement.ok, (f"{what} disagree (atol={agreement.atol:g}, "
                              f"rtol={agreement.rtol:g}):\n{agreement.report()}")
        if case.kind == "fixture":
            assert extra.get("top1_ok", True), f"{what}: wrong top-1; top-5 {extra['top5']}"
            assert extra.get("top3_ok", True), f"{what}: wrong top-3; top-5 {extra['top5']}"
