"""The only module that transposes weights or activations between layouts.

Canonical layouts: convolution weights OIHW, activations NCHW.
"""

from __future__ import annotations

import numpy as np


def oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """Convolution kernel for Keras / Flax / TensorFlow."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # [O,I,H,W] -> [H,W,I,O]


def hwio_to_oihw(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))  # [H,W,I,O] -> [O,I,H,W]


def oihw_to_ohwi(w: np.ndarray) -> np.ndarray:
    """Convolution filter for TensorFlow Lite / LiteRT (``CONV_2D``)."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1))  # [O,I,H,W] -> [O,H,W,I]


def ohwi_to_oihw(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(0, 3, 1, 2))  # [O,H,W,I] -> [O,I,H,W]


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # [N,C,H,W] -> [N,H,W,C]


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # [N,H,W,C] -> [N,C,H,W]


def hwc_to_chw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # [H,W,C] -> [C,H,W]


def oihw_shape_to_hwio(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape :func:`oihw_to_hwio` gives an array of ``shape`` (no data touched)."""
    o, i, h, w = shape
    return (h, w, i, o)  # [O,I,H,W] -> [H,W,I,O]


def oihw_shape_to_ohwi(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape :func:`oihw_to_ohwi` gives an array of ``shape`` (no data touched)."""
    o, i, h, w = shape
    return (o, h, w, i)  # [O,I,H,W] -> [O,H,W,I]
