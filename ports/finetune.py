"""Fine-tuning a compressed network without labels: its codebooks and biases distilled from
the uncompressed network's own logits (``tools/compress --fine-tune``).

    x = distillation_set(images)                  # [N, 3, 227, 227] float32
    tuned, losses = fine_tune(compressed, teacher_weights, x, steps=100, port="torch")

* **Data** (:func:`distillation_set`): Caffe training views of each image (:func:`views`:
  a random 227 crop of the 256x256 resize, mirrored half the time), seeded inputs (normal,
  mean 0, standard deviation 50 on Caffe's BGR-minus-mean scale) and blends of two views.
  No labels: the teacher's logits on the same inputs are the targets.
* **Loss**: Hinton's soft-target loss at temperature ``T`` (``ports.numpy.train.
  distillation``), its gradient taken by a port's ``train.distill_loss_and_grads``
  (``numpy``: the reference, run in float32 here for speed; ``torch``: autograd, about
  three times faster on a CPU).
* **Steps**: :func:`ports.formats.compress.fine_tune` (each centroid moved by the sum of
  its weights' gradients, Adam); minibatches of ``batch`` inputs, a new seeded permutation
  of the set each epoch.
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from .formats import compress as C
from .formats.canonical import Weights
from .preprocess import caffe_view

# skimage.data pictures a default fine-tuning distils on; devtools/compression.py holds
# back other pictures (never distilled on) to measure agreement.
DISTIL_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "camera", "brick", "grass", "moon", "text")
SEEDED_SCALE = 50.0
LR = 0.05           # Adam's rate, in units of each codebook's spacing (compress.fine_tune)
TEMPERATURE = 2.0
STEPS = 100


def views(images, per_image: int, rng: np.random.Generator) -> np.ndarray:
    """``per_image`` Caffe training views of each image (``[H, W, 3]`` RGB, grey or RGBA):
    ``[len(images) * per_image, 3, 227, 227]`` float32."""
    out = []
    for image in images:
        for _ in range(per_image):
            top, left = rng.integers(0, 30, 2)
            out.append(caffe_view(image, int(top), int(left), bool(rng.integers(2))))
    return np.concatenate(out) if out else np.zeros((0, 3, 227, 227), np.float32)


def distillation_set(images, views_per_image: int = 24, seeded: int = 40, mixed: int = 80,
                     seed: int = 0) -> np.ndarray:
    """``[N, 3, 227, 227]`` float32: ``views_per_image`` views of each of ``images``, then
    ``seeded`` seeded inputs, then ``mixed`` blends of two random views (``a * u + b * (1 -
    u)``, ``u`` uniform in 0.3..0.7: inputs between the pictures, so that what is distilled
    is the network's function there too, not only its answers on ten pictures)."""
    rng = np.random.default_rng(seed)
    x = views(images, views_per_image, rng)
    noise = rng.normal(0, SEEDED_SCALE, (seeded, 3, 227, 227)).astype(np.float32)
    if mixed and len(x) == 0:
        raise ValueError("distillation set: blends need pictures")
    u = rng.uniform(0.3, 0.7, (mixed, 1, 1, 1)).astype(np.float32)
    a, b = rng.integers(0, max(len(x), 1), mixed), rng.integers(0, max(len(x), 1), mixed)
    return np.concatenate([x, noise, u * x[a] + (1 - u) * x[b]])


def _port(name: str):
    try:
        port = importlib.import_module(f"ports.{name}")
        train = importlib.import_module(f"ports.{name}.train")
    except ImportError as e:
        raise ValueError(f"port {name!r}: cannot import it ({e})") from None
    if not callable(getattr(train, "distill_loss_and_grads", None)):
        raise ValueError(f"port {name!r}: its train module has no distill_loss_and_grads")
    return port, train


def gradients(teacher: Weights, x: np.ndarray, *, port: str = "numpy",
              temperature: float = TEMPERATURE, batch: int = 32,
              seed: int = 0) -> Callable[[Weights, int], tuple[float, dict]]:
    """``grads_of(weights, step)`` for :func:`ports.formats.compress.fine_tune`: the
    distillation loss of ``weights`` against ``teacher``'s logits (computed once, by the
    same port in float32) on step ``step``'s minibatch of ``x``, and every gradient."""
    if len(x) == 0:
        raise ValueError("distillation set: no inputs")
    module, train = _port(port)
    targets = module.predict(module.load(teacher, "float32"), x).astype(np.float64)
    rng, order = np.random.default_rng(seed), np.zeros(0, np.int64)
    size = min(batch, len(x))

    def grads_of(weights: Weights, step: int) -> tuple[float, dict]:
        nonlocal order
        while len(order) < (step + 1) * size:  # a new permutation each epoch
            order = np.concatenate([order, rng.permutation(len(x))])
        idx = np.sort(order[step * size:(step + 1) * size])
        return train.distill_loss_and_grads(module.load(weights, "float32"), x[idx],
                                            targets[idx], temperature)

    return grads_of


def fine_tune(compressed: C.Compressed, teacher: Weights, x: np.ndarray, steps: int, *,
              port: str = "numpy", lr: float = LR, temperature: float = TEMPERATURE,
              batch: int = 32, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> tuple[C.Compressed, list]:
    """``compressed``'s codebooks and biases after ``steps`` steps distilling ``teacher``
    on ``x`` (module docstring), and each step's loss."""
    grads_of = gradients(teacher, x, port=port, temperature=temperature, batch=batch,
                         seed=seed)
    return C.fine_tune(compressed, grads_of, steps, lr, progress=progress)
