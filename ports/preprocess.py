"""Named input modes: an image in, a canonical NCHW float32 array out.

Modes
-----
``caffe``        resize to 256x256 (bilinear), centre crop 227x227, channels **BGR**,
                 0-255 scale minus the per-channel mean (104, 117, 123) in B, G, R order.
                 This is how the original SqueezeNet Caffe models were trained and tested.
``torchvision``  resize the shorter side to 256 (bilinear, antialiased like PIL), centre crop
                 224x224, RGB, /255, then minus ImageNet mean (0.485, 0.456, 0.406) and
                 divided by std (0.229, 0.224, 0.225).
``none``         the input is already a model input: [N,C,H,W] or [C,H,W] float array.

Images are ``[H, W, 3]`` RGB (``[H, W]`` grey and ``[H, W, 4]`` RGBA are accepted),
``uint8`` 0-255 or float 0-1.  Resizing is done on 0-255 values rounded back to integers
after resizing, as an 8-bit image library would.
"""

from __future__ import annotations

import numpy as np

from .layouts import hwc_to_chw

MODES = ("caffe", "torchvision", "none")
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = {"caffe": 227, "torchvision": 224}


def _as_rgb255(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"image: expected [H, W, 3] RGB (or grey/RGBA), got shape {img.shape}")
    img = img[..., :3]
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"image: expected uint8 or float data, got {img.dtype}")
    if not np.isfinite(img).all() or img.min() < 0 or img.max() > 1:
        raise ValueError("image: float images must be finite values in [0, 1]")
    return img.astype(np.float64) * 255.0


def _resize_matrix(src: int, dst: int, antialias: bool) -> np.ndarray:
    """[dst, src] weights of a triangle (bilinear) filter with half-pixel centres."""
    scale = src / dst
    support = max(scale, 1.0) if antialias else 1.0
    centres = (np.arange(dst) + 0.5) * scale - 0.5
    taps = np.arange(src)
    w = np.maximum(0.0, 1.0 - np.abs(taps[None, :] - centres[:, None]) / support)
    if not antialias:
        # Edge clamping (OpenCV INTER_LINEAR): mass that falls outside goes to the border.
        lo = np.clip(np.floor(centres).astype(int), 0, src - 1)
        frac = np.clip(centres - np.floor(centres), 0, 1)
        w = np.zeros((dst, src))
        hi = np.clip(np.floor(centres).astype(int) + 1, 0, src - 1)
        rows = np.arange(dst)
        np.add.at(w, (rows, lo), 1 - frac)
        np.add.at(w, (rows, hi), frac)
    return w / w.sum(axis=1, keepdims=True)


def resize(img: np.ndarray, height: int, width: int, antialias: bool = False) -> np.ndarray:
    """Bilinear resize of ``[H, W, C]`` float values, result rounded to integers 0-255."""
    rows = _resize_matrix(img.shape[0], height, antialias)
    cols = _resize_matrix(img.shape[1], width, antialias)
    out = np.einsum("yh,hwc,xw->yxc", rows, img, cols, optimize=True)
    return np.clip(np.rint(out), 0, 255)


def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    top = (img.shape[0] - size) // 2
    left = (img.shape[1] - size) // 2
    return img[top:top + size, left:left + size]


def preprocess(image, mode: str) -> np.ndarray:
    """One image -> ``[1, 3, S, S]`` float32 model input for ``mode`` (see module doc)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if mode == "none":
        x = np.asarray(image, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"input: expected [N, 3, H, W], got shape {x.shape}")
        return x
    img = _as_rgb255(image)
    if mode == "caffe":
        img = _centre_crop(resize(img, 256, 256), INPUT_SIZE["caffe"])
        bgr = img[..., ::-1] - np.array(CAFFE_MEAN_BGR)
        return hwc_to_chw(bgr)[None].astype(np.float32)
    h, w = img.shape[:2]
    short = 256
    nh, nw = (short, max(1, round(w * short / h))) if h <= w else (max(1, round(h * short / w)), short)
    img = _centre_crop(resize(img, nh, nw, antialias=True), INPUT_SIZE["torchvision"]) / 255.0
    img = (img - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return hwc_to_chw(img)[None].astype(np.float32)


def preprocess_batch(images, mode: str) -> np.ndarray:
    """Several images -> ``[N, 3, S, S]`` float32."""
    return np.concatenate([preprocess(im, mode) for im in images], axis=0)
