"""``tools/convert SRC DST [--from FMT] [--to FMT] [--variant V] [--READ-OPTION X] [--force]``.

Converts a SqueezeNet weights file through the canonical weights (no deep-learning
framework involved): ``SRC -> formats.<from>.read -> Weights (checked against the spec)
-> formats.<to>.write -> DST``.  Formats come from the file names' endings unless named.
SRC may also name an entry of the weights manifest (``tools/convert caffe-v1.1
out.safetensors``; ``tools/fetch --list``) when no file of that name exists: it is fetched
exactly as ``tools/fetch`` does (into the cache, size and checksum verified, a verified
cached copy reused; an entry without a checksum is refused) and read with the entry's
format and variant.
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
from pathlib import Path

from .. import formats
from ..errors import WeightsError
from ..formats import manifest as W
from ..formats.canonical import Weights
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


def fetched(name: str, args) -> tuple[Path, W.Entry] | None:
    """``(verified cached file, entry)`` when SRC ``name`` is no file but a manifest entry
    (downloaded through :func:`ports.formats.manifest.fetch`, the path ``tools/fetch`` takes), else
    None.  Prints which entry and which cached file it used."""
    if os.path.lexists(name) or "/" in name or os.sep in name:
        return None
    entries = W.load_manifest(args.manifest)
    if name not in entries:
        if args.src_format is None and not _has_known_ending(name):
            raise W.FetchError(f"{name}: no such file, nor an entry of the manifest (known: "
                               f"{', '.join(entries)})")
        return None
    entry = entries[name]
    if entry.checksum is None:
        raise W.FetchError(f"{name}: the manifest has no checksum for it, and convert reads "
                           f"only verified downloads (tools/fetch {name} --allow-unverified, "
                           f"then convert the file it prints)")
    if args.src_format and args.src_format != entry.format:
        raise ValueError(f"--from {args.src_format}: manifest entry {name} is a {entry.format} "
                         f"file")
    dest = W.cache_dir(args.cache) / entry.file
    before = _stat(dest)
    path = W.fetch(entry, cache=args.cache, progress=None if args.quiet else sys.stderr,
                   timeout=args.timeout, log=sys.stderr)
    how = "verified copy already in the cache" if before is not None and \
        before == _stat(path) else "downloaded and verified"
    print(f"entry {name}: {path} ({entry.format}, {entry.checksum}, {how})")
    return path, entry


def _has_known_ending(name: str) -> bool:
    try:
        formats.detect(name)
    except WeightsError:
        return False
    return True


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="convert", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="weights file to read, or the name of a manifest entry "
                               "(tools/fetch --list) to fetch, verified, and read")
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
    names = p.add_argument_group("SRC naming a manifest entry (as tools/fetch)")
    names.add_argument("--manifest", metavar="FILE",
                       help="manifest to read instead of weights/manifest.toml")
    names.add_argument("--cache", metavar="DIR", help=f"cache folder (default: ${W.CACHE_ENV} "
                                                      "or ~/.cache/squeezenet-ports)")
    names.add_argument("--timeout", type=float, default=W.DEFAULT_TIMEOUT, metavar="S",
                       help=f"network timeout in seconds (default {W.DEFAULT_TIMEOUT:g})")
    names.add_argument("--quiet", action="store_true", help="no download progress bar")
    args = p.parse_args(argv)
    if args.timeout <= 0:
        p.error("--timeout must be positive")

    variant = Variant.from_id(args.variant) if args.variant else None
    dst_format = args.dst_format or formats.detect(args.dst)
    options = {name: getattr(args, name) for name in read_options
               if getattr(args, name) is not None}
    if not args.force:  # before any download
        existing = [str(f) for f in formats.outputs(args.dst, dst_format) if f.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} exists; use --force to overwrite")
    src, src_format = args.src, args.src_format
    named = fetched(args.src, args)
    if named is not None:  # the entry says what the file is (a --variant must agree)
        src, src_format = named[0], named[1].format
        variant = variant or named[1].variant
        if src_format in read_options.get("preprocessing", (None, ()))[1]:
            options.setdefault("preprocessing", named[1].preprocessing)
    src_format = src_format or formats.detect(src)
    for name in options:
        if src_format not in read_options[name][1]:
            raise ValueError(f"--{name} applies to SRC of format "
                             f"{' or '.join(read_options[name][1])}, not {src_format}")
    weights = formats.read(src, src_format, variant=variant, **options)
    print(f"read  {src} ({src_format}): {summary(weights)}")
    written = formats.write(weights, args.dst, dst_format, overwrite=args.force)
    for path in written:
        print(f"wrote {path} ({dst_format}, {os.path.getsize(path):,} bytes)")
    notes = getattr(formats.codec(dst_format), "notes", None)  # what its users must know
    for line in notes(weights) if notes else ():
        print(f"note  {line}")
    return 0


entry = command(main, "convert")  # console script squeezenet-convert

if __name__ == "__main__":
    sys.exit(entry())
