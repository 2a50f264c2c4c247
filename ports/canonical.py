"""Canonical weights: float32 OIHW tensors under canonical names, plus metadata.

Every codec reads into and writes from :class:`Weights`; the on-disk canonical format is
safetensors (``ports.formats.safetensors``).

Metadata (all values strings):

==================== ===========================================================
``variant``          ``"1_0"`` or ``"1_1"``
``num_classes``      e.g. ``"1000"``
``final_conv_padding`` ``"0"`` or ``"1"``
``bypass``           ``"none"``, ``"simple"`` or ``"complex"``
``preprocessing``    a mode of :mod:`ports.preprocess` (``"caffe"``, ``"torchvision"``)
``source``           where the numbers came from (free text)
==================== ===========================================================

The vocabulary every codec shares (a codec keeps only its key table and its format's own
hooks): :func:`infer_variant` (which variant do these shapes prove?), :func:`key_problems`
(which keys are missing, unexpected, mis-shaped?), :func:`string_meta` and
:func:`meta_variant` (is this metadata strings to strings, and which variant does it
name?), :func:`widen_bfloat16`.  Each reports a problem as ``fail(reason)`` -- by default a
:class:`WeightsError` without a file; codecs pass one naming the file and format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np

from .errors import WeightsError
from .spec import STEM, VERSIONS, Variant

ARCHITECTURE = ("variant", "num_classes", "final_conv_padding", "bypass")
REQUIRED_META = (*ARCHITECTURE, "preprocessing", "source")
PREPROCESSING_MODES = ("caffe", "torchvision", "none")
MAX_META = 1 << 20  # characters of metadata stored as JSON text
LISTED = 20         # keys named in one report before "and N more"

Fail = Callable[[str], Exception]
Shape = Union[Sequence[int], None]


@dataclass
class Weights:
    """``tensors``: canonical name -> float32 array (weights OIHW, biases [O]).
    ``meta``: string metadata, see the module docstring."""

    tensors: dict[str, np.ndarray]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def variant(self) -> Variant:
        return meta_variant(self.meta)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def num_params(self) -> int:
        return int(sum(t.size for t in self.tensors.values()))


def make(tensors: Mapping[str, np.ndarray], variant: Variant, *, preprocessing: str,
         source: str, path=None, format: str | None = None, **extra: str) -> Weights:
    """Build checked :class:`Weights` for ``variant`` (tensors cast to float32); a problem
    names ``path`` and ``format`` when given."""
    meta = {**variant.to_meta(), "preprocessing": preprocessing, "source": source}
    meta.update({k: str(v) for k, v in extra.items()})
    weights = Weights({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
                      meta)
    check(weights, path=path, format=format)
    return weights


def check(weights: Weights, expected: Variant | None = None, *, path=None,
          format: str | None = None) -> Weights:
    """Strict validation against the spec; returns ``weights``.

    Raises one :class:`WeightsError` listing every missing, unexpected and mis-shaped
    tensor (with expected and actual shapes), bad dtype, non-finite value, missing
    metadata field, or a variant other than ``expected``.
    """
    problems: list[str] = []
    missing_meta = [k for k in REQUIRED_META if k not in weights.meta]
    if missing_meta:
        raise WeightsError(f"metadata lacks {', '.join(missing_meta)}", path=path, format=format)
    if weights.meta["preprocessing"] not in PREPROCESSING_MODES:
        problems.append(f"metadata preprocessing={weights.meta['preprocessing']!r}, "
                        f"expected one of {PREPROCESSING_MODES}")
    variant = meta_variant(weights.meta, fail=failing(path, format))
    if expected is not None and variant != expected:
        problems.append(f"variant {variant.id} (from metadata), expected {expected.id}")
        variant = expected
    spec = variant.params()
    problems += key_problems({k: t.shape for k, t in weights.tensors.items()}, spec,
                             noun="tensors")
    for name, shape in spec.items():
        t = weights.tensors.get(name)
        if t is None or tuple(t.shape) != shape:
            continue
        if t.dtype != np.float32:
            problems.append(f"{name}: expected dtype float32, got {t.dtype}")
        elif not np.isfinite(t).all():
            problems.append(f"{name}: {int((~np.isfinite(t)).sum())} non-finite values")
    if problems:
        raise WeightsError(f"does not match SqueezeNet {variant.id}: " + "; ".join(problems),
                           path=path, format=format)
    return weights


# --- the vocabulary of the codecs ------------------------------------------------------------
def failing(path, format: str | None) -> Fail:
    """``fail`` for the functions below: a :class:`WeightsError` naming ``path`` and ``format``."""
    return lambda reason: WeightsError(reason, path=path, format=format)


def _conv1_shape(version: str, layout: str) -> tuple[int, ...]:
    filters, kernel, _ = STEM[version]
    return (kernel, kernel, 3, filters) if layout == "HWIO" else (filters, 3, kernel, kernel)


def version_of(conv1: Shape, *, name: str = "conv1.weight", layout: str = "OIHW",
               fail: Fail = WeightsError) -> str:
    """The version conv1's weight shape proves (``"1_0"``: 96 7x7 filters, ``"1_1"``: 64
    3x3).  ``name``: what the file calls that weight; ``layout``: ``"OIHW"`` or ``"HWIO"``."""
    if conv1 is None:
        raise fail(f"cannot infer the variant: no {name} (conv1 weight)")
    for version in VERSIONS:
        if tuple(conv1) == _conv1_shape(version, layout):
            return version
    note = f" ({layout})" if layout != "OIHW" else ""
    known = " or ".join(f"{list(_conv1_shape(v, layout))} ({v})" for v in VERSIONS)
    raise fail(f"cannot infer the variant from conv1 weight {name}: weight shape "
               f"{list(conv1)}{note}, expected {known}")


def infer_variant(conv1: Shape, conv10: Shape, *,
                  names: tuple[str, str] = ("conv1.weight", "conv10.weight"),
                  layout: str = "OIHW", bypass: str = "none", final_conv_padding: int = 0,
                  fail: Fail = WeightsError) -> Variant:
    """Which variant do these shapes prove?  The version from conv1's weight shape,
    ``num_classes`` from conv10's filter count; what no parameter shows (a simple bypass
    against none, conv10's padding) is ``bypass`` / ``final_conv_padding`` (a codec passes
    ``bypass="complex"`` where it sees bypass convolutions).  ``names``: what the file calls
    the two weights; ``layout``: ``"OIHW"`` or ``"HWIO"`` (Keras, Flax)."""
    version = version_of(conv1, name=names[0], layout=layout, fail=fail)
    if conv10 is None or len(conv10) != 4:
        shape = "" if conv10 is None else f" has shape {list(conv10)}"
        raise fail(f"cannot infer the variant: no 4-D {names[1]} (conv10 weight){shape}")
    filters = conv10[-1] if layout == "HWIO" else conv10[0]
    try:
        return Variant(version, int(filters), final_conv_padding, bypass)
    except ValueError as e:
        raise fail(f"cannot infer the variant: {names[1]}: {e}") from None


def _listed(keys: list[str], label: Callable[[str], str], most: int) -> str:
    shown = ", ".join(label(k)[:100] for k in keys[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")


def key_problems(found: Union[Mapping[str, Shape], Iterable[str]],
                 expected: Union[Mapping[str, Shape], Iterable[str]], *,
                 noun: Union[str, tuple[str, str]] = "keys", colon: bool = True,
                 label: Callable[[str], str] = str, note: Callable[[str], str] = lambda k: "",
                 most: int = LISTED) -> list[str]:
    """Which keys are missing, unexpected, mis-shaped?  One phrase per kind, e.g.
    ``missing keys: a, b``, ``unexpected keys: c`` (sorted), ``k: expected shape [1, 2], got
    [2, 1]`` -- shapes compared where both sides give one (mappings to shapes; plain
    iterables of keys compare names only).  ``noun``: a word, or (singular, plural) to agree
    with the count, empty for none; ``colon``: after the noun; ``label``: how a key is named
    in the message; ``note``: text after an expected shape (``" (HWIO)"``); at most ``most``
    keys are listed per phrase."""
    found = found if isinstance(found, Mapping) else dict.fromkeys(found)
    expected = expected if isinstance(expected, Mapping) else dict.fromkeys(expected)
    missing = [k for k in expected if k not in found]
    unexpected = sorted((k for k in found if k not in expected), key=str)

    def phrase(what: str, keys: list[str]) -> str:
        word = noun if isinstance(noun, str) else noun[len(keys) > 1]
        head = " ".join(filter(None, [what, word])) + (":" if colon and word else "")
        return f"{head} {_listed(keys, label, most)}"

    problems = [phrase(what, keys) for what, keys in (("missing", missing),
                                                       ("unexpected", unexpected)) if keys]
    for key, want in expected.items():
        got = found.get(key)
        if want is not None and got is not None and tuple(got) != tuple(want):
            problems.append(f"{label(key)}: expected shape {list(want)}{note(key)}, "
                            f"got {list(got)}")
    return problems


def string_meta(value, what: str, *, limit: int = MAX_META,
                fail: Fail = WeightsError) -> dict[str, str]:
    """Metadata as a file holds it -- a mapping, or JSON text (``str`` or UTF-8 ``bytes``) of
    one -- checked to map strings to strings; ``what`` names it in a message."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise fail(f"{what} is not UTF-8 text") from None
    if isinstance(value, str):
        if len(value) > limit:
            raise fail(f"{what} is longer than {limit} characters")
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as e:
            raise fail(f"{what} is not valid JSON: {type(e).__name__}: {e}"[:300]) from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in value.items()):
        raise fail(f"{what} must map strings to strings")
    return dict(value)


def meta_variant(meta: Mapping[str, str], *, what: str = "metadata",
                 fail: Fail = WeightsError) -> Variant:
    """The variant ``meta`` names (``variant``, ``num_classes``, ...)."""
    try:
        return Variant.from_meta(meta)
    except ValueError as e:
        raise fail(f"{what}: {e}") from None


def has_architecture(meta: Mapping[str, str]) -> bool:
    """Whether ``meta`` names every architecture field (else shapes or the caller must)."""
    return all(k in meta for k in ARCHITECTURE)


def widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values stored as their ``uint16`` bit patterns -> float32, exactly (a
    bfloat16 is the upper half of a float32)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
