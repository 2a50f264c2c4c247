"""Comparison of logits against an expected array, with a report that says how much.

``compare(actual, expected, atol, rtol)`` returns an :class:`Agreement`;
``assert_agrees`` raises ``AssertionError`` carrying its report, in the spirit of
``numpy.testing.assert_allclose``::

    Logits of torch float32 on 1_0-p1-none at 227 disagree with the golden
    (atol=0.0001, rtol=0):
    Mismatched elements: 3 / 8000 (0.0375%)
    Worst index: (5, 412)  actual 3.21004  expected 3.20981
    Max absolute difference: 0.00023
    Max relative difference: 7.2e-05
    Top-5 agreement: 8 / 8 images
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .releases import results_folder

ROOT = Path(__file__).resolve().parent.parent
TOLERANCES = Path(__file__).with_name("tolerances.toml")
# In a checkout, results go to its build/; installed (pip install squeezenet-ports
# [conformance]), to build/ under the current directory; a run against other framework
# releases (SQUEEZENET_JAX_VERSION=...) to build/conformance/release/jax-...: see releases.py.
IN_CHECKOUT = (ROOT / "pyproject.toml").is_file() and (ROOT / "ports").is_dir()
RESULTS = Path(os.environ.get("SQUEEZENET_RESULTS")
               or results_folder((ROOT if IN_CHECKOUT else Path.cwd()) / "build" / "conformance"))

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class Agreement:
    max_abs: float
    max_rel: float
    mismatches: int
    total: int
    worst_index: tuple
    worst_actual: float
    worst_expected: float
    top5_agree: int
    images: int
    atol: float
    rtol: float
    nonfinite: int = 0  # NaN or infinite values among the actual logits

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.nonfinite == 0 and self.top5_agree == self.images

    def report(self) -> str:
        pct = 100.0 * self.mismatches / max(self.total, 1)
        return "\n".join(([f"Non-finite values: {self.nonfinite} / {self.total} (NaN or inf)"]
                          if self.nonfinite else []) + [
            f"Mismatched elements: {self.mismatches} / {self.total} ({pct:.4g}%)",
            f"Worst index: {self.worst_index}  actual {self.worst_actual:.9g}"
            f"  expected {self.worst_expected:.9g}",
            f"Max absolute difference: {self.max_abs:.3g}",
            f"Max relative difference: {self.max_rel:.3g}",
            f"Top-5 agreement: {self.top5_agree} / {self.images} images",
        ])

    @classmethod
    def from_record(cls, record: dict) -> Agreement:
        """The agreement stored in a result record (:meth:`as_dict` plus other fields)."""
        names = cls.__dataclass_fields__
        fields = {k: v for k, v in record.items() if k in names}
        fields["worst_index"] = tuple(fields["worst_index"])
        return cls(**fields)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["worst_index"] = list(d["worst_index"])
        d["ok"] = self.ok
        return d


def worst(errors: dict[str, float]) -> tuple[str, float]:
    """The (name, error) of the largest error in ``errors`` (e.g. the relative error of
    each tensor or layer), NaN counting as the worst of all (a NaN compares false, so
    Python's ``max`` would pass over it unless it came first); ``("", 0.0)`` when empty."""
    found = ("", 0.0)
    for name, error in errors.items():
        if math.isnan(error):
            return name, error
        if error > found[1] or not found[0]:
            found = (name, error)
    return found


def tolerances_table() -> dict:
    """``tolerances.toml`` as a dict."""
    return tomllib.loads(TOLERANCES.read_text())


def tolerance(port: str, dtype: str, fixture: str | None = None,
              expected=None) -> tuple[float, float]:
    """(atol, rtol) from the tolerance table.  A section with ``scale = "max"`` (the
    reduced precisions) gives ``atol`` in units of the case's largest ``|expected|``, which
    it then needs."""
    table = tolerances_table()
    for section in ((table.get("fixture", {}).get(fixture, {}) if fixture else {}),
                    table.get(port, {}), table["default"]):
        if dtype in section:
            entry = section[dtype]
            atol, rtol = float(entry["atol"]), float(entry["rtol"])
            if entry.get("scale") == "max":
                if expected is None:
                    raise ValueError(f"the {dtype} bound is relative to the expected logits' "
                                     f"largest magnitude: pass expected=")
                scale = float(np.abs(np.asarray(expected, np.float64)).max())
                if not math.isfinite(scale):  # a NaN bound would pass every element
                    raise ValueError(f"the expected logits of a {dtype} case are not finite")
                atol *= scale
            elif "scale" in entry:
                raise ValueError(f"tolerances.toml {dtype}: scale {entry['scale']!r}, "
                                 f"expected \"max\"")
            return atol, rtol
    raise KeyError(f"no tolerance for {port} {dtype}")


def top5_agrees(actual: np.ndarray, expected: np.ndarray, bound: np.ndarray) -> bool:
    """Ranked top-5 of ``actual`` equals that of ``expected`` up to swaps between classes
    whose expected logits are within ``bound`` of each other (a tie at this precision)."""
    exp_top = np.argsort(-expected, kind="stable")[:5]
    act_top = np.argsort(-actual, kind="stable")[:5]
    return bool(np.all(np.abs(expected[act_top] - expected[exp_top]) <= 2 * bound[exp_top]))


def compare(actual, expected, atol: float, rtol: float) -> Agreement:
    """How far ``actual`` logits are from ``expected``: every non-finite actual value is a
    mismatch (and counted in ``nonfinite``), as is every element beyond ``atol + rtol *
    |expected|``."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape}, expected {expected.shape}")
    diff = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(expected != 0, diff / np.abs(expected), np.where(diff == 0, 0.0, np.inf))
    nonfinite = int((~np.isfinite(actual)).sum())
    # np.argmax takes the first NaN, so a non-finite logit is the worst index
    where = np.unravel_index(int(np.argmax(diff - bound)), diff.shape)
    agree = sum(top5_agrees(a, e, b) for a, e, b in zip(actual, expected, bound))
    return Agreement(
        max_abs=float(diff.max()), max_rel=float(rel.max()),
        mismatches=int((diff > bound).sum() + nonfinite), total=diff.size,
        worst_index=tuple(int(i) for i in where), worst_actual=float(actual[where]),
        worst_expected=float(expected[where]), top5_agree=int(agree), images=len(actual),
        atol=atol, rtol=rtol, nonfinite=nonfinite)


def assert_agrees(actual, expected, atol: float, rtol: float, what: str) -> Agreement:
    a = compare(actual, expected, atol, rtol)
    if not a.ok:
        raise AssertionError(f"{what} disagree (atol={atol:g}, rtol={rtol:g}):\n{a.report()}")
    return a
