"""Shared helper for tests that need the read-only ground-truth folder (``../shared``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.fixtures import SharedDataMissing, require_shared, shared


def shared_or_skip(rel: str) -> Path:
    """``shared(rel)``; skip the test with the reason when it is absent, or fail when
    ``SQUEEZENET_REQUIRE_SHARED=1``.  Import it with ``from conftest import shared_or_skip``."""
    try:
        return shared(rel)
    except SharedDataMissing as e:
        if require_shared():
            pytest.fail(f"SQUEEZENET_REQUIRE_SHARED=1 but {e}")
        pytest.skip(str(e))
