"""``tools/fetch NAME [--cache DIR] [--url URL] [--force] [--allow-unverified]`` and
``tools/fetch --list``.

Downloads an official checkpoint listed in ``weights/manifest.toml`` into the user cache
(``--cache``, else ``$SQUEEZENET_CACHE``, else ``~/.cache/squeezenet-ports``) with a progress
bar on stderr, verifies its size and checksum (full digest, or the hash prefix the publisher
embeds in the file name) and prints the cached file's path on stdout.  A mismatch deletes
the download and exits with status 2 and one line on stderr; nothing unverified ever lands
in the cache.  ``--list`` prints every entry (variant, preprocessing, claimed accuracy,
checksum, licence).
"""

from __future__ import annotations

import argparse
import sys

from ..formats import manifest as W
from . import command


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fetch", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="manifest entry to download (see --list)")
    p.add_argument("--list", action="store_true", help="print the manifest and exit")
    p.add_argument("--cache", metavar="DIR", help=f"cache folder (default: ${W.CACHE_ENV} or "
                                                  "~/.cache/squeezenet-ports)")
    p.add_argument("--url", metavar="URL", help="download from URL instead of the manifest's "
                                                "addresses (the checksum still applies)")
    p.add_argument("--manifest", metavar="FILE", help="manifest to read instead of "
                                                      "weights/manifest.toml")
    p.add_argument("--timeout", type=float, default=W.DEFAULT_TIMEOUT, metavar="S",
                   help=f"network timeout in seconds (default {W.DEFAULT_TIMEOUT:g})")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.add_argument("--allow-unverified", action="store_true",
                   help="accept an entry the manifest gives no checksum for")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    entries = W.load_manifest(args.manifest)
    if args.list:
        cache = W.cache_dir(args.cache)
        for entry in entries.values():
            cached = " [cached]" if (cache / entry.file).is_file() else ""
            print(W.describe(entry).replace("\n", cached + "\n", 1))
        return 0
    if not args.name:
        p.error("give a NAME to download, or --list")
    if args.name not in entries:
        raise W.FetchError(f"unknown weights {args.name!r}; known: {', '.join(entries)}")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    path = W.fetch(entries[args.name], cache=args.cache, url=args.url,
                   progress=None if args.quiet else sys.stderr, timeout=args.timeout,
                   allow_unverified=args.allow_unverified, force=args.force, log=sys.stderr)
    print(path)
    return 0



entry = command(main, "fetch")  # console script squeezenet-fetch

if __name__ == "__main__":
    sys.exit(entry())
