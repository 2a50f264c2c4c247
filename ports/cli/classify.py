"""``tools/classify IMAGE --weights FILE [--port P] [--top K] [--preprocessing MODE]``.

Classifies one image with SqueezeNet weights through a port and prints the top classes:
rank, class index, probability (softmax of the logits), logit and ImageNet class name.

* ``IMAGE``: a PNG/JPEG file (read with scikit-image, or Pillow if scikit-image is absent),
  or ``skimage:NAME`` for a picture shipped with scikit-image (``skimage:chelsea``,
  ``skimage:coffee``).
* ``--weights``: any file ``ports.formats`` reads (format from the file name, or
  ``--format``).
* ``--port``: ``numpy`` (the float64 reference, default), ``torch``, any ``ports.X``
  subpackage, or a dotted module path; the module must have ``load(weights)`` and
  ``predict(model, x) -> logits``.
* ``--preprocessing``: a mode of :mod:`ports.preprocess`; default: the one recorded in the
  weights' metadata.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from .. import formats
from ..preprocess import MODES, preprocess
from . import command


def load_image(spec: str) -> np.ndarray:
    """``[H, W, 3]`` (or grey/RGBA) uint8 image from a file or ``skimage:NAME``."""
    if spec.startswith("skimage:"):
        name = spec.split(":", 1)[1]
        try:
            import skimage.data
        except ImportError:
            raise ValueError(f"{spec}: scikit-image is not installed") from None
        loader = getattr(skimage.data, name, None) if name.isidentifier() else None
        if not callable(loader) or name.startswith("_"):
            raise ValueError(f"{spec}: scikit-image has no picture {name!r} "
                             "(try skimage:chelsea or skimage:coffee)")
        return np.asarray(loader())
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: no such image file")
    try:
        import skimage.io
    except ImportError:
        skimage = None
    if skimage is not None:
        try:
            return np.asarray(skimage.io.imread(str(path)))
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input
            raise ValueError(f"{spec}: cannot read image: {e}") from None
    try:
        from PIL import Image
    except ImportError:
        raise ValueError(f"{spec}: reading image files needs scikit-image or Pillow") from None
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{spec}: cannot read image: {e}") from None


def load_port(name: str) -> ModuleType:
    """The port module ``ports.NAME`` (or the dotted module ``NAME``) with load/predict."""
    module_name = name if "." in name else f"ports.{name}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--port {name}: cannot import {module_name}: {e}") from None
    if not (callable(getattr(module, "load", None)) and callable(getattr(module, "predict",
                                                                             None))):
        raise ValueError(f"--port {name}: {module_name} has no load() and predict()")
    return module


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int) -> list[tuple[int, float, float]]:
    """``(class, probability, logit)`` of the ``k`` largest logits of one image, best first
    (ties broken by the lower class index)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    probs = softmax(logits)
    order = np.lexsort((np.arange(logits.size), -logits))[:k]
    return [(int(i), float(probs[i]), float(logits[i])) for i in order]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="classify", description=__doc__.split("\n\n")[0])
    p.add_argument("image", help="image file, or skimage:chelsea / skimage:coffee")
    p.add_argument("--weights", required=True, metavar="FILE", help="weights file")
    p.add_argument("--format", choices=sorted(formats.FORMATS),
                   help="format of --weights (default: from its file name)")
    p.add_argument("--port", default="numpy", help="numpy (default), torch, ... or a module")
    p.add_argument("--top", type=int, default=5, metavar="K", help="classes to show (5)")
    p.add_argument("--preprocessing", choices=[m for m in MODES if m != "none"],
                   help="input mode (default: the weights' metadata)")
    args = p.parse_args(argv)

    weights = formats.read(args.weights, args.format)
    variant = weights.variant
    if not 1 <= args.top <= variant.num_classes:
        p.error(f"--top must be 1..{variant.num_classes}, got {args.top}")
    mode = args.preprocessing or weights.meta.get("preprocessing")
    if mode not in MODES or mode == "none":
        raise ValueError(f"{args.weights}: metadata preprocessing is {mode!r}; pass "
                         "--preprocessing caffe or torchvision")
    port = load_port(args.port)
    image = load_image(args.image)
    x = preprocess(image, mode)
    model = port.load(weights)
    logits = np.asarray(port.predict(model, x))
    if logits.shape != (1, variant.num_classes):
        raise ValueError(f"--port {args.port}: predict returned shape {logits.shape}, "
                         f"expected (1, {variant.num_classes})")
    names: list[str] = []
    if variant.num_classes == 1000:
        from ..classes import imagenet_classes

        names = imagenet_classes()
    print(f"{args.image}: SqueezeNet {variant.id} ({args.weights}) via ports.{args.port}"
          if "." not in args.port else f"{args.image}: SqueezeNet {variant.id} via {args.port}",
          end="")
    print(f", preprocessing {mode} {x.shape[2]}x{x.shape[3]}")
    print(f"{'rank':>4} {'class':>5} {'prob':>8} {'logit':>10}  name")
    for rank, (cls, prob, logit) in enumerate(top_k(logits[0], args.top), 1):
        name = names[cls] if names else f"class {cls}"
        print(f"{rank:>4} {cls:>5} {prob:>8.4f} {logit:>10.4f}  {name}")
    return 0



entry = command(main, "classify")  # console script squeezenet-classify

if __name__ == "__main__":
    sys.exit(entry())
