"""``ports.preprocess`` mode ``torchvision`` against torchvision's own transforms, and
``tools/classify --port torch`` against the NumPy reference.

The reference is torchvision itself, ``Resize(256)``, ``CenterCrop(224)``, ``ToTensor()``,
``Normalize(mean, std)`` on a Pillow image, over a sweep of image shapes: portrait and
landscape, odd and even sides, odd differences between the resized and cropped sides
(where a centre crop must round its offset), sides below 256 (upsampling) and very
elongated images.

How torchvision is imported here: the registry's torchvision wheels are CUDA builds, and
beside the CPU torch 2.13.0 ``import torchvision`` fails in
``torchvision/_meta_registrations.py`` ("operator torchvision::nms does not exist"), which
registers fake (meta) kernels for its compiled detection ops.  The transforms are pure
Python and never call those ops, so for the import only ``torch.library.register_fake`` is
a decorator that registers nothing; it is restored at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.library

from conformance.fixtures import shared_or_skip
from ports import preprocess as P

ROOT = Path(__file__).resolve().parent.parent


def _import_transforms():
    original = torch.library.register_fake

    def register_nothing(*args, **kwargs):
        if args and callable(args[0]) and not isinstance(args[0], str):
            return args[0]
        return lambda fn: fn

    torch.library.register_fake = register_nothing
    try:
        import torchvision.transforms as T
    finally:
        torch.library.register_fake = original
    return T


@pytest.fixture(scope="module")
def torchvision_pipeline():
    from PIL import Image

    T = _import_transforms()
    pipeline = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                          T.Normalize(P.IMAGENET_MEAN, P.IMAGENET_STD)])
    return lambda img: pipeline(Image.fromarray(img)).numpy()


def _shapes() -> list[tuple[int, int]]:
    """(height, width) of the sweep: 64 shapes."""
    fixed = [(427, 640), (640, 427), (300, 451), (451, 300), (400, 600), (512, 512),
             (256, 256), (224, 224), (257, 383), (383, 257), (255, 385), (301, 301),
             (100, 100), (99, 150), (150, 99), (31, 47), (224, 1000), (1000, 224),
             (60, 700), (700, 60), (17, 400), (1200, 1600), (1600, 1200), (333, 500)]
    rng = np.random.default_rng(1234)
    drawn = [tuple(int(v) for v in rng.integers(20, 900, size=2)) for _ in range(40)]
    return fixed + drawn


SHAPES = _shapes()


def _image(h: int, w: int) -> np.ndarray:
    """A seeded RGB image with structure at every scale (a smooth field plus noise), so a
    one-pixel shift of the crop changes many values."""
    rng = np.random.default_rng(h * 10007 + w)
    yy, xx = np.meshgrid(np.linspace(0, 6, h), np.linspace(0, 9, w), indexing="ij")
    smooth = 127 + 80 * np.sin(yy[..., None] + np.array([0.0, 1.0, 2.0]) * xx[..., None])
    return np.clip(smooth + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def test_the_sweep_covers_what_it_must():
    assert len(set(SHAPES)) >= 50
    resized = []
    for h, w in SHAPES:
        short, long = min(h, w), max(h, w)
        resized.append(int(256 * long / short))
    # odd differences between resized and cropped side (the crop offset is a half pixel)
    assert sum((side - 224) % 2 == 1 for side in resized) >= 10
    assert any(min(s) < 256 for s in SHAPES) and any(max(s) / min(s) > 10 for s in SHAPES)
    assert any(h > w for h, w in SHAPES) and any(h < w for h, w in SHAPES)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_torchvision_mode_equals_torchvision(shape, torchvision_pipeline):
    img = _image(*shape)
    theirs = torchvision_pipeline(img)
    ours = P.preprocess(img, "torchvision")[0]
    assert ours.shape == theirs.shape == (3, 224, 224) and ours.dtype == np.float32
    diff = np.abs(ours - theirs)
    worst = np.unravel_index(int(diff.argmax()), diff.shape)
    # float32 rounding of (v / 255 - mean) / std, |values| < 2.7: a few ulps
    assert diff.max() <= 2e-6, (f"{shape}: max abs {diff.max():.3g} at {worst} "
                                f"(ours {ours[worst]:.6f}, torchvision {theirs[worst]:.6f})")


def test_a_floor_crop_would_fail(torchvision_pipeline):
    """The check can fail: on a 427x640 photo-sized image (resized to 256x383) the floor of
    the crop offset, 79, is one column left of torchvision's round(79.5) = 80."""
    img = _image(427, 640)
    resized = P.resize(img, 256, 383)
    floor = resized[16:240, 79:303] / 255.0
    floor = ((floor - P.IMAGENET_MEAN) / P.IMAGENET_STD).transpose(2, 0, 1)
    assert np.abs(floor - torchvision_pipeline(img)).max() > 0.5
    assert P.torchvision_crop_offset(383, 224) == 80


def _classify(port: str, tmp_path: Path) -> list[int]:
    weights = shared_or_skip("weights/deep-compression/compressed_SqueezeNet.net")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "classify"), "skimage:chelsea",
                           "--weights", str(weights), "--port", port, "--top", "5",
                           "--preprocessing", "torchvision"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    return [int(row[1]) for row in rows]


def test_classify_torch_agrees_with_the_reference_on_a_torchvision_input(tmp_path):
    """tools/classify on chelsea, torchvision preprocessing, the real Deep Compression
    weights: the torch port's top-5 classes equal the float64 NumPy reference's."""
    torch_top5 = _classify("torch", tmp_path)
    assert len(torch_top5) == 5
    assert torch_top5 == _classify("numpy", tmp_path)
