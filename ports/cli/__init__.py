"""Command-line entry points behind the thin executables in ``tools/``.

Every tool runs through :func:`run`: a bad input ends in one line naming the file and the
problem on stderr and exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from ..errors import WeightsError

EXIT_BAD_INPUT = 2


def run(main: Callable[[list[str]], int], argv: Sequence[str] | None = None,
        prog: str = "") -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
        return main(args)
    try:
        return main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (WeightsError, ValueError, OSError) as e:  # FileNotFoundError, FileExistsError ...
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
