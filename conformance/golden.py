"""Golden logits: the float64 NumPy reference on the seeded weights and fixed inputs.

Stored as data in ``conformance/golden/<variant id>.npz`` (keys ``s224``, ``s227``: float64
``[8, 1000]``; ``inputs224``/``inputs227``: SHA-256 of the inputs; ``weights``: SHA-256
of the seeded weights).  Training goldens (``golden/train/<variant id>.npz``) summarise
the float64 reference backward and five Caffe SGD steps (:mod:`conformance.training`).  All
are regenerated only on request::

    python -m conformance.golden --regenerate
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

from .inputs import SIZES, digest, inputs

GOLDEN_DIR = Path(__file__).with_name("golden")
VARIANTS = [v.id for v in all_variants()]


def weights_digest(variant: Variant) -> str:
    w = seeded_weights(variant)
    h = hashlib.sha256()
    for name in variant.params():
        h.update(name.encode())
        h.update(w.tensors[name].tobytes())
    return h.hexdigest()


def path(variant_id: str) -> Path:
    return GOLDEN_DIR / f"{variant_id}.npz"


def load(variant_id: str, size: int) -> np.ndarray:
    """Golden float64 logits ``[8, num_classes]``."""
    with np.load(path(variant_id)) as data:
        return data[f"s{size}"]


TRAIN_DIR = GOLDEN_DIR / "train"


def train_path(variant_id: str) -> Path:
    return TRAIN_DIR / f"{variant_id}.npz"


def regenerate_training(log=print) -> None:
    """The training goldens: summaries of the float64 reference (see
    :func:`conformance.training.golden_summary`)."""
    from . import training

    TRAIN_DIR.mkdir(parents=True, exist_ok=True)
    for i, vid in enumerate(VARIANTS, 1):
        tmp = train_path(vid).with_suffix(".tmp.npz")
        np.savez(tmp, **training.golden_summary(vid))
        tmp.replace(train_path(vid))
        log(f"[{i}/{len(VARIANTS)}] {vid}: wrote train/{train_path(vid).name}")


def regenerate(log=print) -> None:
    from ports import numpy as ref

    GOLDEN_DIR.mkdir(exist_ok=True)
    digests = {size: digest(size) for size in SIZES}
    for i, vid in enumerate(VARIANTS, 1):
        variant = Variant.from_id(vid)
        model = ref.load(seeded_weights(variant))
        arrays = {f"s{size}": ref.predict(model, inputs(size).astype(np.float64))
                  for size in SIZES}
        arrays.update({f"inputs{size}": np.array(d) for size, d in digests.items()})
        arrays["weights"] = np.array(weights_digest(variant))
        tmp = path(vid).with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path(vid))
        log(f"[{i}/{len(VARIANTS)}] {vid}: wrote {path(vid).name}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regenerate", action="store_true",
                        help="recompute and overwrite the stored golden logits")
    args = parser.parse_args(argv)
    if not args.regenerate:
        parser.error("goldens are data: pass --regenerate to overwrite them")
    regenerate()
    regenerate_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
