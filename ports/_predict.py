"""Input checks shared by every port's ``predict``."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .spec import Variant


@lru_cache(maxsize=64)
def min_side(variant: Variant) -> int:
    """The smallest input side for which no layer of ``variant`` produces an empty map."""
    for side in range(1, 4096):  # bounded: every variant fits well below this
        try:
            variant.feature_sizes(side)
            return side
        except ValueError:
            continue
    raise AssertionError(f"no input side up to 4096 fits {variant.id}")  # pragma: no cover


def as_input(x, variant: Variant) -> np.ndarray:
    """Validate a canonical model input: a finite float array ``[N, 3, H, W]``, H and W
    large enough for ``variant``.  Returns it as a NumPy array (dtype unchanged).

    Raises :class:`ValueError` with a message starting ``x:`` naming what is wrong (and,
    where it is a common slip, how to fix it)."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ValueError(f"x: cannot be read as an array: {e}") from None
    if x.ndim != 4:
        hint = ""
        if x.ndim == 3 and 3 in (x.shape[0], x.shape[-1]):
            hint = " (one image? add a batch axis: x[None])"
        raise ValueError(f"x: expected a 4-D NCHW array [N, 3, H, W], got {x.ndim}-D shape "
                         f"{x.shape}{hint}")
    if x.shape[1] != 3:
        hint = ""
        if x.shape[-1] == 3:
            hint = " (this looks like NHWC; transpose with x.transpose(0, 3, 1, 2))"
        raise ValueError(f"x: expected 3 channels in axis 1 (NCHW), got shape {x.shape}{hint}")
    if not np.issubdtype(x.dtype, np.floating):
        hint = ""
        if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
            hint = " (raw pixels? convert with ports.preprocess or x.astype(np.float32))"
        raise ValueError(f"x: expected a float array, got dtype {x.dtype}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"x: empty batch (shape {x.shape})")
    for side in sorted(set(x.shape[2:])):
        try:
            variant.feature_sizes(int(side))
        except ValueError as e:
            raise ValueError(f"x: spatial size {x.shape[2]}x{x.shape[3]} is too small for "
                             f"SqueezeNet {variant.version} ({e}; the smallest side is "
                             f"{min_side(variant)})") from None
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"x: {int(bad.sum())} non-finite values (NaN or infinity), the "
                         f"first at index {first}")
    return x
