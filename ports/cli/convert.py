"""``tools/convert SRC DST [--from FMT] [--to FMT] [--variant V] [--prototxt P] [--force]``.

Converts a SqueezeNet weights file through the canonical weights (no deep-learning
framework involved): ``SRC -> formats.<from>.read -> Weights (checked against the spec)
-> formats.<to>.write -> DST``.  Formats come from the file names' endings unless named.
Prints what it read (format, variant, tensor/parameter/non-zero counts, metadata source) and
what it wrote.  An existing output is kept unless ``--force``; every file is written
atomically.  Exit status 0 on success, 2 (one line on stderr) on any bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import formats
from ..canonical import Weights, check
from ..spec import Variant
from . import command


def _outputs(dst: str, fmt: str) -> list[Path]:
    """Every file ``formats.write`` will create for ``dst`` in format ``fmt``."""
    out = [Path(dst)]
    if fmt == "caffe":
        from ..formats.caffe import prototxt_path

        out.append(prototxt_path(dst))
    return out


def summary(weights: Weights) -> str:
    """``SqueezeNet 1_0-p1-none, 52 tensors, 1,248,424 parameters, ...`` for ``weights``."""
    nonzero = sum(int((t != 0).sum()) for k, t in weights.tensors.items()
                  if k.endswith(".weight"))
    n_weights = sum(t.size for k, t in weights.tensors.items() if k.endswith(".weight"))
    return (f"SqueezeNet {weights.variant.id}, {len(weights.tensors)} tensors, "
            f"{weights.num_params():,} parameters, {nonzero:,} of {n_weights:,} weights "
            f"non-zero ({100.0 * nonzero / max(n_weights, 1):.1f} %), preprocessing "
            f"{weights.meta.get('preprocessing')!r}, source {weights.meta.get('source')!r}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="convert", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="weights file to read")
    p.add_argument("dst", help="weights file to write")
    p.add_argument("--from", dest="src_format", choices=sorted(formats.FORMATS),
                   help="format of SRC (default: from its file name)")
    p.add_argument("--to", dest="dst_format", choices=sorted(formats.FORMATS),
                   help="format of DST (default: from its file name)")
    p.add_argument("--variant", metavar="ID",
                   help="expected variant, e.g. 1_0-p1-none (VERSION-pPAD-BYPASS[-cN]); the "
                        "read fails unless SRC is exactly this; formats that do not record "
                        "the architecture take it from here")
    p.add_argument("--prototxt", metavar="FILE",
                   help="Caffe net definition for a .caffemodel SRC that lacks layer params")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = p.parse_args(argv)

    variant = Variant.from_id(args.variant) if args.variant else None
    src_format = args.src_format or formats.detect(args.src)
    dst_format = args.dst_format or formats.detect(args.dst)
    if not args.force:
        existing = [str(f) for f in _outputs(args.dst, dst_format) if f.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} exists; use --force to overwrite")
    if args.prototxt is not None:
        if src_format != "caffe":
            raise ValueError(f"--prototxt applies to a Caffe SRC, not {src_format}")
        if not Path(args.src).is_file():
            raise FileNotFoundError(f"{args.src}: no such file")
        weights = formats.codec("caffe").read(args.src, variant=variant,
                                              prototxt=args.prototxt)
        check(weights, variant, path=args.src, format=src_format)
    else:
        weights = formats.read(args.src, src_format, variant=variant)
    print(f"read  {args.src} ({src_format}): {summary(weights)}")
    written = formats.write(weights, args.dst, dst_format, overwrite=args.force)
    for path in written:
        print(f"wrote {path} ({dst_format}, {os.path.getsize(path):,} bytes)")
    return 0



entry = command(main, "convert")  # console script squeezenet-convert

if __name__ == "__main__":
    sys.exit(entry())
