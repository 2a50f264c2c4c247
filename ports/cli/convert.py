"""``tools/convert SRC DST [--from FMT] [--to FMT] [--variant V] [--READ-OPTION X] [--force]``.

Converts a SqueezeNet weights file through the canonical weights (no deep-learning
framework involved): ``SRC -> formats.<from>.read -> Weights (checked against the spec)
-> formats.<to>.write -> DST``.  Formats come from the file names' endings unless named.
Prints what it read (format, variant, tensor/parameter/non-zero counts, metadata source) and
what it wrote.  An existing output (DST and the files written beside it) is kept unless
``--force``; every file is written atomically.  Exit status 0 on success, 2 (one line on
stderr) on any bad input.  The formats, and the options each format's reader takes (e.g.
``--prototxt`` for a Caffe SRC), come from the registry ``ports.formats.FORMATS``.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import formats
from ..canonical import Weights
from ..spec import Variant
from . import command


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
    read_options = formats.read_options()
    for name, (option, takers) in read_options.items():
        p.add_argument(f"--{name}", metavar=option.metavar, type=option.type,
                       choices=option.choices or None,
                       help=f"{option.help} (SRC of format {' or '.join(takers)})")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = p.parse_args(argv)

    variant = Variant.from_id(args.variant) if args.variant else None
    src_format = args.src_format or formats.detect(args.src)
    dst_format = args.dst_format or formats.detect(args.dst)
    options = {name: getattr(args, name) for name in read_options
               if getattr(args, name) is not None}
    for name in options:
        if src_format not in read_options[name][1]:
            raise ValueError(f"--{name} applies to SRC of format "
                             f"{' or '.join(read_options[name][1])}, not {src_format}")
    if not args.force:
        existing = [str(f) for f in formats.outputs(args.dst, dst_format) if f.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} exists; use --force to overwrite")
    weights = formats.read(args.src, src_format, variant=variant, **options)
    print(f"read  {args.src} ({src_format}): {summary(weights)}")
    written = formats.write(weights, args.dst, dst_format, overwrite=args.force)
    for path in written:
        print(f"wrote {path} ({dst_format}, {os.path.getsize(path):,} bytes)")
    return 0


entry = command(main, "convert")  # console script squeezenet-convert

if __name__ == "__main__":
    sys.exit(entry())
