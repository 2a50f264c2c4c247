"""Command-line entry points: the console scripts ``squeezenet-*``, ``python -m
ports.cli.NAME`` and the thin executables in ``tools/``.

Every tool runs through :func:`run`: a bad input ends in one line naming the file and the
problem on stderr and exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from ..errors import WeightsError

EXIT_BAD_INPUT = 2


def message(e: BaseException) -> str:
    """``e`` as one line: ``FILE: problem`` for OS errors, newlines folded."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.filename}: {e.strerror}"
        if e.filename2 is not None:
            text = f"{e.filename} -> {e.filename2}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def run(main: Callable[[list[str]], int], argv: Sequence[str] | None = None,
        prog: str = "") -> int:
    """Call ``main(args)``; a bad input (WeightsError, ValueError, OSError) becomes one line
    ``PROG: error: MESSAGE`` on stderr and exit status 2, unless ``--debug`` is given."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0] or "") or "ports"
    debug = "--debug" in args
    if debug:
        args = [a for a in args if a != "--debug"]
        return main(args)
    try:
        return main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (WeightsError, ValueError, OSError) as e:  # FileNotFoundError, FileExistsError ...
        print(f"{prog}: error: {message(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def command(main: Callable[[list[str]], int], prog: str) -> Callable[[], int]:
    """The entry point of a tool: ``main`` through :func:`run` on ``sys.argv`` (the
    console script ``squeezenet-PROG``, ``python -m ports.cli.PROG`` and ``tools/PROG``)."""
    def entry() -> int:
        return run(main, prog=prog)

    entry.__doc__ = f"``squeezenet-{prog}``: {prog} on the command line."
    return entry
