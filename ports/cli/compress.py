"""``tools/compress SRC DST [--bits B] [--density NAME=F ...] [--fine-tune STEPS] [--force]``
and ``tools/compress --densities FILE.net``.

Deep Compression of any weights file the converter reads (:mod:`ports.formats.compress`):
magnitude pruning per layer, k-means weight sharing per layer, the relative-index encoding.
DST's ending picks the file: ``.dcz`` the compact container (Huffman-coded codes and gaps,
``docs/dcz-format.md``), ``.net`` the released format (8-bit codebooks; ``--net-bits 4``
for the 4-bit width, which needs ``--bits 4`` or fewer).  The summary prints per layer its
density, codebook size, bytes and weight error (max |w_q - w| / max |w|), and the total.
``--densities`` prints a ``.net`` file's per-layer densities (the default's source).
``--fine-tune STEPS`` then moves the codebooks and biases to match SRC's own logits
(:mod:`ports.finetune`: no labels; Caffe views of ``--distil-on`` pictures and seeded
inputs; ``--with torch`` takes the gradients with PyTorch, faster than the NumPy default).
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from .. import finetune, formats
from ..finetune import DISTIL_PHOTOS
from ..formats import compress as C
from ..formats import dcz
from ..formats import deepcompression as D
from ..formats._io import atomic_write
from . import command
from .classify import load_image


def _density(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=FRACTION, got {text!r}") from None


def densities(path) -> int:
    """Print the per-layer densities of a ``.net`` file (non-zero weights / weights)."""
    with open(path, "rb") as f:
        variant, layers = D.parse(f.read())
    for conv, layer in zip(variant.convs(), layers):
        size = math.prod(conv.weight_shape)
        real = int((layer.codes != 0).sum())
        print(f"{conv.name:18s} {real / size:.6f}  ({real} of {size}; "
              f"{len(layer.codes) - real} fillers)")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="compress", description=__doc__.split("\n\n")[1])
    p.add_argument("src", help="weights file (any format tools/convert reads)")
    p.add_argument("dst", nargs="?", help="output: .dcz or .net")
    p.add_argument("--bits", type=int, default=6, help="codebook bits, 2 to 8 (default 6)")
    p.add_argument("--density", type=_density, action="append", default=[], metavar="NAME=F",
                   help="keep fraction F of layer NAME (e.g. conv10=0.2); default: the "
                        "released file's densities")
    p.add_argument("--iterations", type=int, default=100, help="k-means iterations at most")
    p.add_argument("--net-bits", type=int, choices=(4, 8), default=8,
                   help="codebook width of a .net output (default 8)")
    p.add_argument("--densities", action="store_true",
                   help="print SRC's (a .net) per-layer densities and exit")
    t = p.add_argument_group("fine-tuning (ports.finetune)")
    t.add_argument("--fine-tune", type=int, default=0, metavar="STEPS",
                   help="distil SRC's logits into the codebooks and biases for STEPS steps")
    t.add_argument("--distil-on", nargs="+", metavar="IMAGE",
                   default=[f"skimage:{name}" for name in DISTIL_PHOTOS],
                   help="image files or skimage:NAME (default: ten scikit-image pictures)")
    t.add_argument("--views", type=int, default=24, help="training views per image (24)")
    t.add_argument("--seeded", type=int, default=40, help="seeded inputs added (40)")
    t.add_argument("--mixed", type=int, default=80, help="blends of two views added (80)")
    t.add_argument("--with", dest="port", default="numpy",
                   help="port taking the gradients: numpy (default) or torch")
    t.add_argument("--lr", type=float, default=finetune.LR, help="Adam rate, in units of "
                   f"each codebook's spacing ({finetune.LR:g})")
    t.add_argument("--temperature", type=float, default=finetune.TEMPERATURE,
                   help=f"softmax temperature ({finetune.TEMPERATURE:g})")
    t.add_argument("--batch", type=int, default=32, help="inputs per step (32)")
    t.add_argument("--seed", type=int, default=0, help="views, noise and batches (0)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress or summary")
    args = p.parse_args(argv)
    if args.densities:
        return densities(args.src)
    if not args.dst:
        p.error("give DST (.dcz or .net), or --densities")
    ending = formats.detect(args.dst)
    if ending not in ("dcz", "deepcompression"):
        p.error(f"DST {args.dst}: expected a .dcz or .net file name")
    if ending == "deepcompression" and args.bits > args.net_bits:
        p.error(f"--bits {args.bits} does not fit a {args.net_bits}-bit .net codebook")
    weights = formats.read(args.src)
    names = {c.name for c in weights.variant.convs()}
    unknown = sorted(set(dict(args.density)) - names)
    if unknown:
        p.error(f"--density: {', '.join(unknown)} not a convolution of {weights.variant.id}")
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    result = C.compress(weights, args.bits, dict(args.density), iterations=args.iterations,
                        progress=log)
    if args.fine_tune > 0:
        images = [load_image(spec) for spec in args.distil_on]
        x = finetune.distillation_set(images, args.views, args.seeded, args.mixed, args.seed)
        if log:
            log(f"fine-tuning on {len(x)} inputs ({len(images)} pictures x {args.views} "
                f"views, {args.seeded} seeded, {args.mixed} blends) with ports.{args.port}")
        result, _ = finetune.fine_tune(result, weights, x, args.fine_tune, port=args.port,
                                       lr=args.lr, temperature=args.temperature,
                                       batch=args.batch, seed=args.seed, progress=log)
    if ending == "dcz":
        blobs = [dcz.pack_layer(layer, result.bits) for layer in result.layers]
        blob, sizes = dcz.assemble(result.meta, result.bits, blobs), [len(b) for b in blobs]
    else:
        layers = [layer._replace(codebook=np.concatenate(
            [layer.codebook, np.zeros((1 << args.net_bits) - len(layer.codebook), np.float32)]))
            for layer in result.layers]
        blob = D.pack(layers, args.net_bits)
        sizes = [len(D.pack([layer], args.net_bits)) - 4 for layer in layers]
    atomic_write(args.dst, blob, overwrite=args.force)
    if log:
        summary(weights, result, sizes, len(blob), args.dst)
    return 0


def summary(weights, result: C.Compressed, sizes: list[int], total: int, dst) -> None:
    """Per layer: density, codebook entries used, bytes, weight error; then the total."""
    quantized = result.weights()
    print(f"{'layer':18s} {'density':>8s} {'codebook':>9s} {'bytes':>7s} {'max rel err':>11s}",
          file=sys.stderr)
    for conv, layer, size in zip(result.variant.convs(), result.layers, sizes):
        w, q = weights[f"{conv.name}.weight"], quantized[f"{conv.name}.weight"]
        scale = float(np.abs(w).max()) or 1.0
        used = len(np.unique(layer.codes[layer.codes != 0]))
        book = f"{used}/{(1 << result.bits) - 1}"
        print(f"{conv.name:18s} {float((q != 0).mean()):8.4f} {book:>9s} {size:7d} "
              f"{float(np.abs(q - w).max()) / scale:11.4f}", file=sys.stderr)
    print(f"{dst}: {total} bytes, {result.bits}-bit codebooks", file=sys.stderr)


entry = command(main, "compress")  # console script squeezenet-compress

if __name__ == "__main__":
    sys.exit(entry())
