"""Real photos for int8 calibration and for the int8 report, kept strictly apart.

Every picture ships with a package installed in the ``int8`` environment (nothing is
downloaded): scikit-image's ``skimage.data`` colour photos and matplotlib's sample data
(``matplotlib.cbook.get_sample_data``).  Each photo gives several *views*, Caffe
preprocessing (:func:`ports.preprocess.caffe_view`: resize to 256x256, a 227 crop, BGR minus
the mean 104/117/123), each ``[1, 3, 227, 227]`` float32 NCHW:

``scale``   the centred square of this fraction of the shorter side is cut first (1.0: the
            whole photo, as Caffe resizes it); ``top``, ``left``: the 227 crop's offset in the
            256 resize (0..29; 14 is the centre); ``mirror``: flipped left to right.

:data:`CALIBRATION` and :data:`REPORT` name disjoint photos (``chelsea``: true class 285,
``coffee``: 967, are in the report set); :func:`check_disjoint` refuses a report that reuses
a calibration photo, by name or by pixels.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ports.preprocess import caffe_view

# source:name -> where it comes from; every one a colour photo.
CALIBRATION = ("skimage:astronaut", "skimage:rocket", "skimage:hubble_deep_field",
               "skimage:immunohistochemistry", "skimage:motorcycle_left",
               "matplotlib:Minduka_Present_Blue_Pack.png")
REPORT = ("skimage:chelsea", "skimage:coffee", "matplotlib:grace_hopper.jpg",
          "skimage:retina")
QUICK_CALIBRATION = ("skimage:astronaut", "skimage:rocket", "skimage:motorcycle_left")
QUICK_REPORT = ("skimage:chelsea", "skimage:coffee")
TRUE_CLASS = {"skimage:chelsea": 285, "skimage:coffee": 967}

# (scale, top, left, mirror): the centre view first (preprocess(image, "caffe") exactly).
VIEWS = ((1.0, 14, 14, False), (1.0, 0, 0, False), (1.0, 29, 29, False),
         (1.0, 14, 14, True), (0.75, 14, 14, False))
QUICK_VIEWS = VIEWS[:1]


@lru_cache(maxsize=16)
def photo(name: str) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of ``source:name`` (see the module docstring)."""
    source, _, item = name.partition(":")
    if source == "skimage":
        import skimage.data as data

        img = data.stereo_motorcycle()[0] if item == "motorcycle_left" else \
            getattr(data, item)()
    elif source == "matplotlib":
        import matplotlib.cbook as cbook
        import matplotlib.image as mimage

        img = mimage.imread(cbook.get_sample_data(item))
    else:
        raise ValueError(f"photo {name!r}: expected skimage:NAME or matplotlib:FILE")
    img = np.asarray(img)
    if np.issubdtype(img.dtype, np.floating):  # matplotlib reads PNGs as float 0..1
        img = np.rint(img * 255)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"photo {name!r}: shape {img.shape}, expected [H, W, 3] colour")
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def view(image: np.ndarray, scale: float, top: int, left: int, mirror: bool) -> np.ndarray:
    """One view of ``image`` (module docstring) -> ``[1, 3, 227, 227]`` float32."""
    if scale != 1.0:
        h, w = image.shape[:2]
        side = int(round(min(h, w) * scale))
        y, x = (h - side) // 2, (w - side) // 2
        image = image[y:y + side, x:x + side]
    return caffe_view(image, top, left, mirror)


def inputs(names, views=VIEWS) -> tuple[np.ndarray, list[str]]:
    """Every view of every photo: ``([N, 3, 227, 227] float32, N labels "name#view")``."""
    xs, labels = [], []
    for name in names:
        img = photo(name)
        for i, v in enumerate(views):
            xs.append(view(img, *v))
            labels.append(f"{name}#{i}")
    return np.concatenate(xs), labels


def check_disjoint(calibration, report) -> None:
    """Refuse (ValueError) a report set sharing a photo with the calibration set, by name or
    by identical pixels."""
    shared = sorted(set(calibration) & set(report))
    if shared:
        raise ValueError(f"report images {shared} are also calibration images: the report "
                         f"must use photos the quantizer never saw")
    seen = {photo(n).tobytes(): n for n in calibration}
    same = [(n, seen[photo(n).tobytes()]) for n in report if photo(n).tobytes() in seen]
    if same:
        raise ValueError(f"report images {same} have the pixels of calibration images")
