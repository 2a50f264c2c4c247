"""Records every Python-level file open of this process (and of every Python process it
starts that inherits the environment): ``tests/opens.py`` puts this folder on
``PYTHONPATH`` with ``SQUEEZENET_AUDIT_OPENS=1``.

Each ``open`` audit event (``open()``, ``io.open_code``, ``os.open``) is written to file
descriptor 2 as one line ``AUDIT-OPEN <pid> <absolute path>`` with ``os.write`` (which opens
nothing itself); a process announces its hook with ``AUDIT-HOOK <pid> <argv>``, so a test
can tell that the isolated reader process was watched too.  A relative path is written
joined to the working directory.
"""

import os
import sys

if os.environ.get("SQUEEZENET_AUDIT_OPENS") == "1":
    _PID = str(os.getpid()).encode()

    def _line(*parts: bytes) -> None:
        try:
            os.write(2, b" ".join(parts).replace(b"\n", b"\\n") + b"\n")
        except OSError:
            pass

    def _hook(event, args):
        if event != "open" or not args:
            return
        path = args[0]
        if isinstance(path, int) or path is None:
            return   # an already-open descriptor (os.fdopen): nothing new is opened
        try:
            raw = os.fsencode(path)
        except TypeError:
            return
        if os.path.isabs(raw):
            _line(b"AUDIT-OPEN", _PID, os.path.normpath(raw))
        else:
            _line(b"AUDIT-OPEN", _PID, os.path.normpath(os.path.join(os.getcwdb(), raw)))

    sys.addaudithook(_hook)
    _line(b"AUDIT-HOOK", _PID, repr(sys.argv).encode())
