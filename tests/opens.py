"""Python-level file opens of a command, watched with an audit hook (``sys.addaudithook``)
in the command's process and in every Python process it starts (the isolated reader
included): ``tests/audit_site/sitecustomize.py``.

    audit = audited(["tools/convert", str(src), str(dst)])
    assert audit.returncode == 2
    assert not audit.outside(src, dst.parent)      # nothing opened beyond these and Python's own
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(__file__).resolve().parent / "audit_site"


def _system_roots() -> list[Path]:
    """What any Python process may open: the interpreter's own files, installed packages,
    this package's code and data, and the process's own /proc and devices."""
    import site
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             *sysconfig.get_paths().values(), *site.getsitepackages(), str(ROOT / "ports"),
             str(ROOT / "tools"), str(SITE), "/dev/null", "/dev/urandom",
             "/etc/localtime", "/usr/share/zoneinfo"}
    return [Path(os.path.realpath(r)) for r in roots if r] + [Path("/proc/self")]


@dataclass
class Audit:
    """What the watched command did: its status and output (audit lines removed), every
    path it or its Python children opened, and the processes that were watched."""

    returncode: int
    stdout: str
    stderr: str
    opens: list[tuple[int, Path]] = field(default_factory=list)
    processes: dict[int, str] = field(default_factory=dict)

    def outside(self, *allowed: os.PathLike | str) -> list[Path]:
        """Opened paths under none of ``allowed`` (files or folders; each as given and
        resolved) nor Python's and this package's own files."""
        roots = [Path(os.path.abspath(a)) for a in allowed]
        roots += [Path(os.path.realpath(a)) for a in allowed] + _system_roots()
        roots += [Path(f"/proc/{pid}") for pid in self.processes]
        out = []
        for _, path in self.opens:
            if not any(path == r or r in path.parents for r in roots):
                out.append(path)
        return out

    def opened(self, path: os.PathLike | str) -> bool:
        """Whether ``path`` (as given or resolved) or anything under it was opened."""
        targets = {Path(os.path.abspath(path)), Path(os.path.realpath(path))}
        return any(p in targets or targets & set(p.parents) for _, p in self.opens)


def audited(argv: list[str], *, cwd: os.PathLike | str | None = None,
            timeout: float = 300.0) -> Audit:
    """Run ``argv`` (``tools/...`` resolved against the repository; a Python script runs
    under this interpreter) with the hook installed."""
    if argv and argv[0].startswith("tools/"):
        argv = [sys.executable, str(ROOT / argv[0]), *argv[1:]]
    env = dict(os.environ, SQUEEZENET_AUDIT_OPENS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(SITE),
                                                        os.environ.get("PYTHONPATH")])),
               PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=timeout)
    opens, processes, other = [], {}, []
    for line in done.stderr.decode("utf-8", "replace").splitlines():
        if line.startswith("AUDIT-OPEN "):
            _, pid, path = line.split(" ", 2)
            opens.append((int(pid), Path(path)))
        elif line.startswith("AUDIT-HOOK "):
            _, pid, args = line.split(" ", 2)
            processes[int(pid)] = args
        else:
            other.append(line)
    return Audit(done.returncode, done.stdout.decode("utf-8", "replace"), "\n".join(other),
                 opens, processes)
