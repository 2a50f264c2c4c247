"""Tests that need the read-only ground-truth folder import ``shared_or_skip`` from here.

Naming an out-of-tree port by its module path registers it in ``conformance.registry.PORTS``
(resolved on first use); every test starts from the registry as it was, so one test's port
never shows up in another's list of ports."""

import pytest

from conformance.fixtures import shared_or_skip  # noqa: F401
from conformance.registry import PORTS


@pytest.fixture(autouse=True)
def _registry_as_it_was():
    saved = dict(PORTS)
    yield
    PORTS.clear()
    PORTS.update(saved)
