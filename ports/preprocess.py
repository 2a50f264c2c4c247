"""Named input modes: an image in, a canonical NCHW float32 array out.

Modes
-----
``caffe``        resize to 256x256 (bilinear), centre crop 227x227 (offset 14, floor), channels
                 **BGR**, 0-255 scale minus the per-channel mean (104, 117, 123) in B, G, R
                 order.  This is how the original SqueezeNet Caffe models were trained and
                 tested; on scikit-image's ``chelsea`` and ``coffee`` it reproduces the input
                 real Caffe was given (``shared/weights/caffe-real/*.npz``) bit for bit.
``torchvision``  ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()``, ``Normalize(...)`` on a
                 Pillow image: the shorter side to 256 (the longer to
                 ``int(256 * long / short)``), bilinear; a 224x224 crop at
                 ``round((side - 224) / 2)`` (half to even, as torchvision); RGB, /255,
                 minus ImageNet mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224,
                 0.225).  Equal to torchvision's own transforms for every image size
                 (tested against torchvision over a sweep of shapes).
``none``         the input is already a model input: [N,C,H,W] or [C,H,W] float array.

Images are ``[H, W, 3]`` RGB (``[H, W]`` grey and ``[H, W, 4]`` RGBA are accepted),
``uint8`` 0-255 or float 0-1.  "Bilinear" is Pillow's ``Image.BILINEAR`` on 8-bit images,
reproduced exactly in NumPy (:func:`resize`): a triangle filter widened by the scale factor
when shrinking (antialiased), fixed-point weights, one pass per axis in Pillow 13's order,
each rounded to 8 bits.  OpenCV's ``INTER_LINEAR`` and scikit-image's ``resize`` do not
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


def _bilinear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``BILINEAR`` resampling of ``src`` samples to ``dst`` as taps: ``first``
    ``[dst]`` (the first source index each output reads) and ``weights`` ``[dst, T]``
    fixed-point integers, output ``i`` being ``sum_t weights[i, t] * in[first[i] + t]``.

    Pillow's triangle filter is widened by the scale factor when shrinking (antialiasing),
    sampled at half-pixel centres, normalised per output pixel in double precision, then
    rounded to integers of ``_PRECISION_BITS`` fractional bits.  Replicated step by step
    (same formulas, same order of floating-point operations) so results are bit-exact.
    Taps past an output's window have weight 0 and an index clipped into the input.
    """
    scale = src / dst
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear filter's support is 1
    inv = 1.0 / filterscale
    rows: list[list[int]] = []
    first = np.zeros(dst, dtype=np.int64)
    for i in range(dst):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), src)
        taps = [max(0.0, 1.0 - abs((x - centre + 0.5) * inv)) for x in range(lo, hi)]
        total = 0.0
        for t in taps:  # sequential, like Pillow (numpy's pairwise sum may round differently)
            total += t
        fixed = []
        for t in taps:
            w = t / total if total != 0.0 else t
            fixed.append(int(w * (1 << _PRECISION_BITS) + (0.5 if w >= 0 else -0.5)))
        first[i] = lo
        rows.append(fixed)
    weights = np.zeros((dst, max(len(r) for r in rows)), dtype=np.float64)
    for i, r in enumerate(rows):
        weights[i, :len(r)] = r
    return first, weights


def _resample_rows(img: np.ndarray, first: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One Pillow pass along axis 0 of an ``[H, W, C]`` integer-valued array -> 8-bit values
    ``[dst, W, C]``, one tap at a time (memory stays ``O(dst * W * C)`` for any scale).

    Every product and sum is an integer below 2**53, so float64 arithmetic is exact."""
    acc = np.full((len(first),) + img.shape[1:], float(1 << (_PRECISION_BITS - 1)))
    last = img.shape[0] - 1
    for t in range(weights.shape[1]):
        acc += weights[:, t, None, None] * img[np.minimum(first + t, last)]
    return np.clip(np.floor(acc / (1 << _PRECISION_BITS)), 0, 255)


def vertical_first(src_h: int, src_w: int, height: int, width: int) -> bool:
    """Whether Pillow resamples the rows (vertical pass) before the columns.

    Pillow 13 runs the vertical pass first when the height shrinks by more than twice as
    many pixels as the width (``src_h - height > 2 * (src_w - width)``, a positive
    shrink); otherwise, and in every Pillow before 13, the horizontal pass runs first.
    Each pass rounds to 8 bits, so the order can move a pixel by one grey level."""
    return 0 < src_h - height and src_h - height > 2 * (src_w - width)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an ``[H, W, C]`` 0-255 image, exactly as Pillow's (13)
    ``Image.resize((width, height), Image.BILINEAR)`` on an 8-bit image: antialiased when
    shrinking, one pass per axis in Pillow's order (:func:`vertical_first`), each pass
    rounded to 8 bits.

    Non-integer inputs are rounded to 8-bit first.  Returns float64 integers 0-255.
    """
    img = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255)

    def rows(a):  # [H, W, C] -> [height, W, C]
        return _resample_rows(a, *_bilinear_taps(a.shape[0], height))

    def columns(a):  # [H, W, C] -> [H, width, C]
        return _resample_rows(a.transpose(1, 0, 2),
                              *_bilinear_taps(a.shape[1], width)).transpose(1, 0, 2)

    passes = [(0, rows), (1, columns)]
    if not vertical_first(img.shape[0], img.shape[1], height, width):
        passes.reverse()
    for axis, resample in passes:
        if img.shape[axis] != (height, width)[axis]:
            img = resample(img)
    return np.ascontiguousarray(img)


def _crop(img: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
    return img[top:top + size, left:left + size]


def caffe_crop_offset(side: int, size: int) -> int:
    """Caffe's data layer centres a test-time crop at ``(side - size) // 2`` (floor)."""
    return (side - size) // 2


def torchvision_crop_offset(side: int, size: int) -> int:
    """``torchvision.transforms.CenterCrop`` centres at ``round((side - size) / 2)``, with
    Python's rounding (half to even): a 383-wide image is cropped from column 80, not 79."""
    return int(round((side - size) / 2.0))


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
    if mode == "caffe":
        offset = caffe_crop_offset(256, INPUT_SIZE["caffe"])
        return caffe_view(image, offset, offset)
    img = _as_rgb255(image)
    h, w = img.shape[:2]
    short = 256
    # torchvision.transforms.Resize(256): the long side is truncated, not rounded.
    if h <= w:
        nh, nw = short, max(1, int(short * w / h))
    else:
        nh, nw = max(1, int(short * h / w)), short
    size = INPUT_SIZE["torchvision"]
    img = _crop(resize(img, nh, nw), size, torchvision_crop_offset(nh, size),
                torchvision_crop_offset(nw, size)) / 255.0
    img = (img - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return hwc_to_chw(img)[None].astype(np.float32)


def caffe_view(image, top: int, left: int, mirror: bool = False) -> np.ndarray:
    """One image -> ``[1, 3, 227, 227]``: a training view as Caffe's data layer makes them
    (``caffe`` mode with the 227 crop at ``top``, ``left`` of the 256x256 resize, 0..29 each,
    and mirrored left to right if ``mirror``).  ``caffe_view(im, 14, 14)`` is
    ``preprocess(im, "caffe")``."""
    size = INPUT_SIZE["caffe"]
    if not (0 <= top <= 256 - size and 0 <= left <= 256 - size):
        raise ValueError(f"crop offset ({top}, {left}): expected 0..{256 - size} each")
    img = _crop(resize(_as_rgb255(image), 256, 256), size, top, left)
    if mirror:
        img = img[:, ::-1]
    bgr = img[..., ::-1] - np.array(CAFFE_MEAN_BGR)
    return hwc_to_chw(bgr)[None].astype(np.float32)


def preprocess_batch(images, mode: str) -> np.ndarray:
    """Several images -> ``[N, 3, S, S]`` float32."""
    return np.concatenate([preprocess(im, mode) for im in images], axis=0)
