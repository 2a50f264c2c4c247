"""Deep Compression (Han, Mao and Dally 2016) of any SqueezeNet weights, as the SqueezeNet
paper applied it: per layer, magnitude pruning, then k-means weight sharing, then the
relative-index encoding of :mod:`.deepcompression` (Huffman-coded in :mod:`.dcz`).

    compress(weights, bits=6, density=None, progress=None) -> Compressed

* **Pruning**: a layer keeps its ``round(density * size)`` weights of largest magnitude
  (ties: the earlier flat OIHW position); the rest become 0.  ``density`` maps canonical
  conv names to fractions; by default :data:`RELEASE_DENSITY`, the densities of the
  released ``compressed_SqueezeNet.net`` (``tools/compress --densities FILE.net`` prints any
  file's), and for a bypass convolution, which the release has not, its fire's expand1x1's.
* **Weight sharing**: the kept weights of a layer are clustered into ``2**bits - 1``
  centroids by one-dimensional k-means with linear initialisation (evenly spaced between
  their minimum and maximum, which the paper found best), each weight assigned to the
  nearest centroid, each centroid the float64 mean of its weights (summed in flat order:
  the same codebook on every NumPy), until no assignment changes (at most ``iterations``).
  Codebook entry 0 is 0.0, for the pruned weights; entries 1.. are the centroids, ascending.
* Biases are kept as they are.  The result's :meth:`Compressed.weights` are exactly what a
  file written from it decodes to.
* **Fine-tuning** (:func:`fine_tune`), as Deep Compression fine-tunes shared weights: the
  codes stay (pruned weights stay 0), and each centroid moves by the sum of the gradients
  of the weights that share it (:func:`centroid_grads`); the biases move by their own.
  The gradients come from a caller's function, e.g. a port's distillation loss against the
  uncompressed network's logits (``tools/compress --fine-tune``).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from ..errors import WeightsError
from ..spec import Variant
from .canonical import Weights
from .deepcompression import Layer, relative_index, tensors_of

# Non-zero weights / weights per layer of the released compressed_SqueezeNet.net (v1.0),
# measured from the file (tests/test_compress.py checks them against it).
RELEASE_DENSITY = {
    "conv1": 0.985119, "fire2.squeeze": 0.994792, "fire2.expand1x1": 0.996094,
    "fire2.expand3x3": 0.329753, "fire3.squeeze": 0.995117, "fire3.expand1x1": 0.999023,
    "fire3.expand3x3": 0.329753, "fire4.squeeze": 0.997314, "fire4.expand1x1": 0.993896,
    "fire4.expand3x3": 0.329753, "fire5.squeeze": 0.996094, "fire5.expand1x1": 0.992920,
    "fire5.expand3x3": 0.329508, "fire6.squeeze": 0.989665, "fire6.expand1x1": 0.499349,
    "fire6.expand3x3": 0.329439, "fire7.squeeze": 0.499403, "fire7.expand1x1": 0.990560,
    "fire7.expand3x3": 0.329572, "fire8.squeeze": 0.992350, "fire8.expand1x1": 0.499695,
    "fire8.expand3x3": 0.299371, "fire9.squeeze": 0.499573, "fire9.expand1x1": 0.995056,
    "fire9.expand3x3": 0.299567, "conv10": 0.199850,
}


class Compressed(NamedTuple):
    """A compressed network: its canonical metadata, codebook ``bits`` and the layers as a
    file stores them (:class:`.deepcompression.Layer`, spec order)."""

    meta: dict
    bits: int
    layers: list[Layer]

    @property
    def variant(self) -> Variant:
        return Variant.from_meta(self.meta)

    def weights(self) -> Weights:
        """The quantized weights: every weight its codebook entry."""
        return Weights(tensors_of(self.variant, self.layers), self.meta)


def default_density(name: str) -> float:
    """:data:`RELEASE_DENSITY`, a bypass taking its fire's expand1x1's."""
    if name.endswith(".bypass"):
        return RELEASE_DENSITY[name.replace(".bypass", ".expand1x1")]
    return RELEASE_DENSITY[name]


def prune(flat: np.ndarray, density: float) -> np.ndarray:
    """Indices (ascending) of the ``round(density * len(flat))`` largest ``|flat|``."""
    if not 0 <= density <= 1:
        raise ValueError(f"density {density}: expected a fraction in [0, 1]")
    keep = int(round(density * len(flat)))
    order = np.argsort(-np.abs(flat.astype(np.float64)), kind="stable")
    return np.sort(order[:keep])


def kmeans(values: np.ndarray, clusters: int, iterations: int = 100) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """One-dimensional k-means with linear initialisation: ``(centroids float64[clusters],
    ascending; assignment int64[len(values)])``.  A cluster left empty keeps its centroid."""
    v = values.astype(np.float64)
    if len(v) == 0:
        return np.zeros(clusters), np.zeros(0, np.int64)
    centroids = np.linspace(v.min(), v.max(), clusters)
    assign = None
    for _ in range(iterations):
        edges = (centroids[1:] + centroids[:-1]) / 2
        new = np.searchsorted(edges, v, side="left")
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        counts = np.bincount(assign, minlength=clusters)
        sums = np.bincount(assign, weights=v, minlength=clusters)
        filled = counts > 0
        # each mean lies inside its interval, so the centroids stay ascending
        centroids = np.where(filled, sums / np.maximum(counts, 1), centroids)
    return centroids, assign


def with_codebooks(weights: Weights, codebooks: dict[str, np.ndarray]) -> list[Layer]:
    """The layers of ``weights`` encoded with given codebooks (float32, in their own order,
    entry 0 being 0.0): each weight becomes the index of its value's bit pattern in its
    layer's codebook (+0.0 the zero entry).  :class:`WeightsError` names the first weight
    whose value no entry holds."""
    layers = []
    for conv in weights.variant.convs():
        book = np.asarray(codebooks[conv.name], "<f4").view("<u4")
        flat = np.ascontiguousarray(weights[f"{conv.name}.weight"], "<f4").reshape(-1).view("<u4")
        index = {int(v): k for k, v in reversed(list(enumerate(book.tolist())))}
        index[0] = 0
        values, where = np.unique(flat, return_inverse=True)
        missing = [v for v in values.tolist() if v not in index]
        if missing:
            at = int(np.flatnonzero(flat == missing[0])[0])
            value = np.array([missing[0]], "<u4").view("<f4")[0]
            raise WeightsError(f"{conv.name}.weight[{at}] = {value!r} is not in its codebook")
        codes = np.array([index[v] for v in values.tolist()], np.uint8)[where]
        layers.append(Layer(conv.name, book.view("<f4").astype(np.float32),
                            np.asarray(weights[f"{conv.name}.bias"], np.float32),
                            *relative_index(codes)))
    return layers


def centroid_grads(c: Compressed, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The gradient of each codebook entry, float64[2**bits] per conv: the sum of the
    gradients (``grads``: ``{canonical name: OIHW array}``) of the weights holding that
    entry; entry 0 (the pruned weights, fixed at 0.0) gets 0."""
    out = {}
    for conv, layer in zip(c.variant.convs(), c.layers):
        g = np.asarray(grads[f"{conv.name}.weight"], np.float64).reshape(-1)
        if g.size != math.prod(conv.weight_shape):
            raise ValueError(f"{conv.name}.weight gradient: expected {conv.weight_shape}, got "
                             f"{np.shape(grads[f'{conv.name}.weight'])}")
        codes = layer.flat_codes(g.size)
        out[conv.name] = np.bincount(codes, weights=g, minlength=len(layer.codebook))
        out[conv.name][0] = 0.0
    return out


class Adam:
    """Adam (Kingma and Ba 2015) on named float64 arrays, each array's step ``lr`` times its
    own ``unit`` times the usual normalised moment."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, unit: dict[str, float],
                 betas=(0.9, 0.999), eps: float = 1e-12):
        self.lr, self.unit, self.betas, self.eps, self.t = lr, unit, betas, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             rate: float = 1.0) -> None:
        """One step, ``rate`` times the learning rate."""
        self.t += 1
        b1, b2 = self.betas
        for k, g in grads.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat, v_hat = self.m[k] / (1 - b1 ** self.t), self.v[k] / (1 - b2 ** self.t)
            params[k] = params[k] - rate * self.lr * self.unit[k] * m_hat / (np.sqrt(v_hat)
                                                                             + self.eps)


def schedule(step: int, steps: int) -> float:
    """The fraction of the rate at ``step`` (0-based) of ``steps``: a linear warm-up over the
    first tenth, then a linear fall to ``1 / steps``."""
    warm = max(1, steps // 10)
    return min(1.0, (step + 1) / warm) * (1 - step / steps)


def fine_tune(c: Compressed, grads_of: Callable[[Weights, int], tuple[float, dict]],
              steps: int, lr: float = 0.05, *, biases: bool = True,
              progress: Callable[[str], None] | None = None) -> tuple[Compressed, list[float]]:
    """``steps`` Adam steps (rate ``lr`` times :func:`schedule`) on the codebooks (entries
    1.., float64 masters rounded to float32 each step) and, if ``biases``, the biases of
    ``c``; codes and pruned weights unchanged.  Each array's step is in its own unit, its
    range divided by ``2**bits`` (for a codebook about its spacing, so that one ``lr`` fits
    layers whose weights differ a hundredfold, and every width).  ``grads_of(weights, step)
    -> (loss, {canonical name: gradient})`` gives the loss and the gradient of every
    parameter at the current quantized ``weights`` (the caller picks the batch of that
    step).  Returns the fine-tuned network and each step's loss (before its step)."""
    params = {}
    for layer in c.layers:
        params[f"{layer.name}.weight"] = layer.codebook.astype(np.float64)
        params[f"{layer.name}.bias"] = layer.bias.astype(np.float64)
    unit = {k: float(np.ptp(v[1:] if k.endswith(".weight") else v)) / (1 << c.bits) or 1e-8
            for k, v in params.items()}
    opt = Adam(params, lr, unit)
    losses = []
    for step in range(steps):
        loss, grads = grads_of(c.weights(), step)
        if not np.isfinite(loss):
            raise ValueError(f"fine-tuning step {step + 1}: the loss is {loss}")
        bad = [k for k in params if not np.isfinite(grads[k]).all()]
        if bad:
            raise ValueError(f"fine-tuning step {step + 1}: the gradient of {bad[0]} is not "
                             "finite")
        books = centroid_grads(c, grads)
        opt.step(params, {**{f"{k}.weight": v for k, v in books.items()},
                          **{f"{k}.bias": np.asarray(grads[f"{k}.bias"], np.float64)
                             for k in books if biases}}, rate=schedule(step, steps))
        c = c._replace(layers=[layer._replace(
            codebook=np.concatenate([[0.0], params[f"{layer.name}.weight"][1:]]).astype(
                np.float32),
            bias=params[f"{layer.name}.bias"].astype(np.float32)) for layer in c.layers])
        losses.append(loss)
        if progress:
            progress(f"fine-tuning step {step + 1}/{steps}: loss {loss:.5f}")
    return c, losses


def compress(weights: Weights, bits: int = 6, density: dict[str, float] | None = None, *,
             iterations: int = 100,
             progress: Callable[[str], None] | None = None) -> Compressed:
    """Prune, share and encode every convolution of ``weights`` (module docstring)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits {bits}: expected 2 to 8")
    layers = []
    convs = list(weights.variant.convs())
    for i, conv in enumerate(convs):
        flat = np.asarray(weights[f"{conv.name}.weight"], np.float32).reshape(-1)
        d = (density or {}).get(conv.name, default_density(conv.name))
        kept = prune(flat, d)
        centroids, assign = kmeans(flat[kept], (1 << bits) - 1, iterations)
        codebook = np.zeros(1 << bits, np.float32)
        codebook[1:] = centroids.astype(np.float32)
        codes = np.zeros(len(flat), np.uint8)
        codes[kept] = assign + 1
        layers.append(Layer(conv.name, codebook,
                            np.asarray(weights[f"{conv.name}.bias"], np.float32),
                            *relative_index(codes)))
        if progress:
            progress(f"[{i + 1}/{len(convs)}] {conv.name}: {len(kept)} of {len(flat)} kept, "
                     f"{(1 << bits) - 1} centroids")
    meta = {**weights.meta, "source": f"{weights.meta.get('source', 'weights')}, "
            f"Deep Compression {bits}-bit"}
    return Compressed(meta, bits, layers)
