"""Input checks shared by every port's ``predict``."""

from __future__ import annotations

import numpy as np

from .spec import Variant


def as_input(x, variant: Variant) -> np.ndarray:
    """Validate a canonical model input: a finite float array ``[N, 3, H, W]``, H and W
    large enough for ``variant``.  Returns it as a NumPy array (dtype unchanged)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x: expected a 4-D NCHW array [N, 3, H, W], got shape {x.shape}")
    if x.shape[1] != 3:
        raise ValueError(f"x: expected 3 channels in axis 1 (NCHW), got shape {x.shape}"
                         + (" (this looks like NHWC)" if x.shape[-1] == 3 else ""))
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x: expected a float array, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError("x: empty batch")
    if x.shape[2] != x.shape[3]:
        pass  # rectangular inputs are fine; the spec is evaluated per side below
    for side in set(x.shape[2:]):
        try:
            variant.feature_sizes(int(side))
        except ValueError as e:
            raise ValueError(f"x: spatial size {x.shape[2]}x{x.shape[3]}: {e}") from None
    if not np.isfinite(x).all():
        raise ValueError(f"x: {int((~np.isfinite(x)).sum())} non-finite values")
    return x
