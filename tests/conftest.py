"""Tests that need the read-only ground-truth folder import ``shared_or_skip`` from here."""

from conformance.fixtures import shared_or_skip  # noqa: F401
