"""Parametrises every ``PortSuite`` subclass over its port's cases, and every ``TraceSuite``
subclass over its port's dtypes and paths."""

from __future__ import annotations

import pytest

from conformance import collect, releases, suite
from conformance.registry import PORTS


def pytest_sessionstart(session):
    # SQUEEZENET_FLAX_VERSION=0.12.0 with flax 0.12.8 installed: `tox -e flax` was run where
    # `tox -e flax-release` was meant; its results would be taken for that release's
    try:
        releases.check()
    except RuntimeError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_generate_tests(metafunc):
    cls = metafunc.cls
    if cls is not None and issubclass(cls, suite.PortSuite) and "case" in metafunc.fixturenames:
        all_cases = collect.cases(cls.port)
        metafunc.parametrize("case", all_cases, ids=[c.id for c in all_cases])
    if cls is not None and issubclass(cls, suite.TraceSuite) \
            and {"trace_dtype", "trace_path"} <= set(metafunc.fixturenames):
        # every full dtype on every path; a reduced precision on the path predict takes (its
        # question is where the precision loses, which the float cases tie to the spec)
        port = PORTS[cls.port]
        pairs = [(d, p) for d in port.dtypes for p in cls.paths]
        pairs += [(d, cls.paths[0]) for d in port.reduced]
        metafunc.parametrize("trace_dtype,trace_path", pairs,
                             ids=[f"{d}-{p}" for d, p in pairs])


@pytest.fixture(scope="session")
def recorders():
    """``{port: conformance.collect.Recorder}`` of the ports whose cases this session ran;
    what they computed is recorded when the session ends, for the matrix to gather."""
    out: dict = {}
    yield out
    for recorder in out.values():
        if recorder.records:  # a session that only reused records leaves the file alone
            recorder.save()  # (the matrix may be gathering this run's record beside it)
