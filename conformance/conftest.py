"""Parametrises every ``PortSuite`` subclass over its port's cases."""

from __future__ import annotations

from conformance import collect, suite


def pytest_generate_tests(metafunc):
    cls = metafunc.cls
    if cls is not None and issubclass(cls, suite.PortSuite) and "case" in metafunc.fixturenames:
        all_cases = collect.cases(cls.port)
        metafunc.parametrize("case", all_cases, ids=[c.id for c in all_cases])


def pytest_sessionfinish(session, exitstatus):
    suite.flush()
