"""Named input modes: an image in, a canonical NCHW float32 array out.

Modes
-----
``caffe``        resize to 256x256 (bilinear), centre crop 227x227 (offset 14), channels
                 **BGR**, 0-255 scale minus the per-channel mean (104, 117, 123) in B, G, R
                 order.  This is how the original SqueezeNet Caffe models were trained and
                 tested; on scikit-image's ``chelsea`` and ``coffee`` it reproduces the input
                 real Caffe was given (``shared/weights/caffe-real/*.npz``) bit for bit.
``torchvision``  resize the shorter side to 256 (the longer to ``int(256 * long / short)``),
                 bilinear; centre crop 224x224, RGB, /255, then minus ImageNet mean
                 (0.485, 0.456, 0.406) and divided by std (0.229, 0.224, 0.225).
``none``         the input is already a model input: [N,C,H,W] or [C,H,W] float array.

Images are ``[H, W, 3]`` RGB (``[H, W]`` grey and ``[H, W, 4]`` RGBA are accepted),
``uint8`` 0-255 or float 0-1.  "Bilinear" is Pillow's ``Image.BILINEAR`` on 8-bit images,
reproduced exactly in NumPy (:func:`resize`): a triangle filter widened by the scale factor
when shrinking (antialiased), fixed-point weights, horizontal then vertical pass, each
rounded to 8 bits.  OpenCV's ``INTER_LINEAR`` and scikit-image's ``resize`` do not
antialias the same way and differ by up to 120 grey levels on ``coffee`` (measured).
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


# Pillow's fixed-point precision for 8-bit images (libImaging/Resample.c).
_PRECISION_BITS = 32 - 8 - 2


def _bilinear_coefficients(src: int, dst: int) -> np.ndarray:
    """``[dst, src]`` fixed-point weights of Pillow's ``BILINEAR`` resampling.

    Pillow's triangle filter is widened by the scale factor when shrinking (antialiasing),
    sampled at half-pixel centres, normalised per output pixel in double precision, then
    rounded to integers of ``_PRECISION_BITS`` fractional bits.  Replicated step by step
    (same formulas, same order of floating-point operations) so results are bit-exact.
    """
    scale = src / dst
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear filter's support is 1
    inv = 1.0 / filterscale
    out = np.zeros((dst, src), dtype=np.float64)
    for i in range(dst):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), src)
        taps = [max(0.0, 1.0 - abs((x - centre + 0.5) * inv)) for x in range(lo, hi)]
        total = 0.0
        for t in taps:  # sequential, like Pillow (numpy's pairwise sum may round differently)
            total += t
        for j, t in enumerate(taps):
            w = t / total if total != 0.0 else t
            out[i, lo + j] = int(w * (1 << _PRECISION_BITS) + (0.5 if w >= 0 else -0.5))
    return out


def _resample_rows(img: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """One Pillow pass along axis 0 of an ``[H, W, C]`` integer-valued array -> 8-bit values.

    Every product and sum is an integer below 2**53, so float64 arithmetic is exact."""
    acc = np.einsum("yh,hwc->ywc", coeffs, img, optimize=True) + (1 << (_PRECISION_BITS - 1))
    return np.clip(np.floor(acc / (1 << _PRECISION_BITS)), 0, 255)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an ``[H, W, C]`` 0-255 image, exactly as Pillow's
    ``Image.resize((width, height), Image.BILINEAR)`` on an 8-bit image: antialiased when
    shrinking, horizontal pass then vertical pass, each rounded to 8 bits.

    Non-integer inputs are rounded to 8-bit first.  Returns float64 integers 0-255.
    """
    img = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255)
    if img.shape[1] != width:  # horizontal pass first, as Pillow does
        img = _resample_rows(img.transpose(1, 0, 2),
                             _bilinear_coefficients(img.shape[1], width)).transpose(1, 0, 2)
    if img.shape[0] != height:
        img = _resample_rows(img, _bilinear_coefficients(img.shape[0], height))
    return np.ascontiguousarray(img)


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
    # torchvision.transforms.Resize(256): the long side is truncated, not rounded.
    if h <= w:
        nh, nw = short, max(1, int(short * w / h))
    else:
        nh, nw = max(1, int(short * h / w)), short
    img = _centre_crop(resize(img, nh, nw), INPUT_SIZE["torchvision"]) / 255.0
    img = (img - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return hwc_to_chw(img)[None].astype(np.float32)


def preprocess_batch(images, mode: str) -> np.ndarray:
    """Several images -> ``[N, 3, S, S]`` float32."""
    return np.concatenate([preprocess(im, mode) for im in images], axis=0)
