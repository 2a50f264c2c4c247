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
name?), :func:`widen_bfloat16`.  Each raises a :class:`WeightsError` saying what is wrong;
:func:`ports.formats.read` adds the file and format.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np

from ..errors import WeightsError
from ..spec import STEM, VERSIONS, Variant

ARCHITECTURE = ("variant", "num_classes", "final_conv_padding", "bypass")
REQUIRED_META = (*ARCHITECTURE, "preprocessing", "source")
PREPROCESSING_MODES = ("caffe", "torchvision", "none")
MAX_META = 1 << 20  # characters of metadata stored as JSON text
LISTED = 20         # keys named in one report before "and N more"

Shape = Union[Sequence[int], None]


class Frozen(dict):
    """A ``dict`` that refuses every change (a :class:`Weights`' tensors and metadata): still
    a ``dict`` to ``json``, ``**`` and ``dict(...)``, which make a changeable copy."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("checked Weights cannot be changed; build new Weights instead")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return Frozen, (dict(self),)


class Weights:
    """Checked canonical weights, immutable.  ``tensors``: canonical name -> float32 array
    (weights OIHW, biases [O]); ``meta``: string metadata, see the module docstring.

    Building one checks it against the spec (:func:`problems`; a :class:`WeightsError` lists
    every missing, unexpected or mis-shaped tensor, bad dtype, non-finite value or metadata
    field) and keeps read-only copies of the arrays in :class:`Frozen` mappings: whoever
    holds a ``Weights`` holds weights that fit the variant its metadata names, and nobody
    can change them afterwards, so nothing downstream checks them again."""

    __slots__ = ("tensors", "meta")
    tensors: Frozen
    meta: Frozen

    def __init__(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> None:
        arrays = {}
        for name, value in tensors.items():
            arrays[name] = array = np.array(value, order="C")  # its own copy; dtype checked below
            array.flags.writeable = False
        object.__setattr__(self, "tensors", Frozen(arrays))
        object.__setattr__(self, "meta", Frozen(meta))
        found = problems(self.tensors, self.meta)
        if found:
            raise WeightsError(found)

    def __setattr__(self, name, value):
        raise AttributeError("checked Weights cannot be changed; build new Weights instead")

    __delattr__ = __setattr__

    def __reduce__(self):
        return Weights, (dict(self.tensors), dict(self.meta))

    @property
    def variant(self) -> Variant:
        return meta_variant(self.meta)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def num_params(self) -> int:
        return int(sum(t.size for t in self.tensors.values()))


def make(tensors: Mapping[str, np.ndarray], variant: Variant, *, preprocessing: str,
         source: str, **extra: str) -> Weights:
    """:class:`Weights` for ``variant`` (tensors cast to float32)."""
    meta = {**variant.to_meta(), "preprocessing": preprocessing, "source": source}
    meta.update({k: str(v) for k, v in extra.items()})
    return Weights({k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}, meta)


def problems(tensors: Mapping[str, np.ndarray], meta: Mapping[str, str],
             expected: Variant | None = None) -> str | None:
    """What keeps ``tensors`` and ``meta`` from being canonical weights (of ``expected``, or
    of the variant ``meta`` names), in one message; ``None`` if nothing does."""
    missing_meta = [k for k in REQUIRED_META if k not in meta]
    if missing_meta:
        return f"metadata lacks {', '.join(missing_meta)}"
    found: list[str] = []
    if meta["preprocessing"] not in PREPROCESSING_MODES:
        found.append(f"metadata preprocessing={meta['preprocessing']!r}, "
                     f"expected one of {PREPROCESSING_MODES}")
    try:
        variant = meta_variant(meta)
    except WeightsError as e:
        return e.reason
    if expected is not None and variant != expected:
        found.append(f"variant {variant.id} (from metadata), expected {expected.id}")
        variant = expected
    spec = variant.params()
    found += key_problems({k: t.shape for k, t in tensors.items()}, spec, noun="tensors")
    for name, shape in spec.items():
        t = tensors.get(name)
        if t is None or tuple(t.shape) != shape:
            continue
        if t.dtype != np.float32:
            found.append(f"{name}: expected dtype float32, got {t.dtype}")
        elif not np.isfinite(t).all():
            found.append(f"{name}: {int((~np.isfinite(t)).sum())} non-finite values")
    return f"does not match SqueezeNet {variant.id}: " + "; ".join(found) if found else None


def check(weights: Weights, expected: Variant | None = None, *, path=None,
          format: str | None = None) -> Weights:
    """``weights`` (checked when built), if they are of the ``expected`` variant: else a
    :class:`WeightsError` naming both variants and every tensor that does not fit."""
    if not isinstance(weights, Weights):
        raise TypeError(f"expected ports.formats.canonical.Weights, got {type(weights).__name__}")
    if expected is not None and weights.variant != expected:
        raise WeightsError(problems(weights.tensors, weights.meta, expected), path=path,
                           format=format)
    return weights


# --- the vocabulary of the codecs ------------------------------------------------------------
def _conv1_shape(version: str, layout: str) -> tuple[int, ...]:
    filters, kernel, _ = STEM[version]
    return (kernel, kernel, 3, filters) if layout == "HWIO" else (filters, 3, kernel, kernel)


def version_of(conv1: Shape, *, name: str = "conv1.weight", layout: str = "OIHW") -> str:
    """The version conv1's weight shape proves (``"1_0"``: 96 7x7 filters, ``"1_1"``: 64
    3x3).  ``name``: what the file calls that weight; ``layout``: ``"OIHW"`` or ``"HWIO"``."""
    if conv1 is None:
        raise WeightsError(f"cannot infer the variant: no {name} (conv1 weight)")
    for version in VERSIONS:
        if tuple(conv1) == _conv1_shape(version, layout):
            return version
    note = f" ({layout})" if layout != "OIHW" else ""
    known = " or ".join(f"{list(_conv1_shape(v, layout))} ({v})" for v in VERSIONS)
    raise WeightsError(f"cannot infer the variant from conv1 weight {name}: weight shape "
                       f"{list(conv1)}{note}, expected {known}")


def infer_variant(conv1: Shape, conv10: Shape, *,
                  names: tuple[str, str] = ("conv1.weight", "conv10.weight"),
                  layout: str = "OIHW", bypass: str = "none",
                  final_conv_padding: int = 0) -> Variant:
    """Which variant do these shapes prove?  The version from conv1's weight shape,
    ``num_classes`` from conv10's filter count; what no parameter shows (a simple bypass
    against none, conv10's padding) is ``bypass`` / ``final_conv_padding`` (a codec passes
    ``bypass="complex"`` where it sees bypass convolutions).  ``names``: what the file calls
    the two weights; ``layout``: ``"OIHW"`` or ``"HWIO"`` (Keras, Flax)."""
    version = version_of(conv1, name=names[0], layout=layout)
    if conv10 is None or len(conv10) != 4:
        shape = "" if conv10 is None else f" has shape {list(conv10)}"
        raise WeightsError(f"cannot infer the variant: no 4-D {names[1]} (conv10 weight){shape}")
    filters = conv10[-1] if layout == "HWIO" else conv10[0]
    try:
        return Variant(version, int(filters), final_conv_padding, bypass)
    except ValueError as e:
        raise WeightsError(f"cannot infer the variant: {names[1]}: {e}") from None


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


def string_meta(value, what: str, *, limit: int = MAX_META) -> dict[str, str]:
    """Metadata as a file holds it -- a mapping, or JSON text (``str`` or UTF-8 ``bytes``) of
    one -- checked to map strings to strings; ``what`` names it in a message."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsError(f"{what} is not UTF-8 text") from None
    if isinstance(value, str):
        if len(value) > limit:
            raise WeightsError(f"{what} is longer than {limit} characters")
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as e:
            raise WeightsError(f"{what} is not valid JSON: {type(e).__name__}: {e}"[:300]) from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in value.items()):
        raise WeightsError(f"{what} must map strings to strings")
    return dict(value)


def meta_variant(meta: Mapping[str, str], *, what: str = "metadata") -> Variant:
    """The variant ``meta`` names (``variant``, ``num_classes``, ...)."""
    try:
        return Variant.from_meta(meta)
    except ValueError as e:
        raise WeightsError(f"{what}: {e}") from None


def has_architecture(meta: Mapping[str, str]) -> bool:
    """Whether ``meta`` names every architecture field (else shapes or the caller must)."""
    return all(k in meta for k in ARCHITECTURE)


def widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values stored as their ``uint16`` bit patterns -> float32, exactly (a
    bfloat16 is the upper half of a float32)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
