"""Commands in a port's own tox environment, the environment created completely on first use.

The matrix, the bench and the layer trace run every port in its own environment (they cannot
share one: MXNet needs numpy 1.23.5, Chainer numpy<2, JAX/TensorFlow numpy 2).  This module
is the one place that talks to tox for them:

* :func:`ensure` runs ``tox run -e ENV --notest``, which creates the environment, installs
  its ``deps`` and the package with the environment's extras (everything ``tox -e ENV``
  would do before its test commands).  ``tox exec`` alone would skip the package and its
  extras, so a first run would find no framework.
* :func:`run` runs a command there (``tox exec -e ENV -- ...``).

Both take the port's pinned environment (``flax``) and use its twin ``flax-release`` when a
variable names another release of its framework (``SQUEEZENET_JAX_VERSION``;
:mod:`conformance.releases`).

Both stream tox's output with a prefix and print a heartbeat (environment, elapsed time)
whenever tox is silent for a while, so a first run that installs several GB never looks
hung.  A missing interpreter (an environment pinned to an older Python) ends in
:class:`EnvError` with one line that says which Python is needed.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from . import releases

ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_S = 20.0
# Variables an outer tox (the matrix's own environment) sets; an inner tox must not see them.
_TOX_VARS = ("TOX_ENV_NAME", "TOX_ENV_DIR", "TOX_WORK_DIR", "TOX_PACKAGE", "VIRTUAL_ENV",
             "PYTHONHOME", "TOX_PARALLEL_ENV")

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


class EnvError(RuntimeError):
    """A tox environment could not be created or a command in it failed to start.
    ``str(e)`` is one line naming the environment and the first error tox printed."""


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` for an inner tox: the outer tox's variables removed and the outer
    environment's ``bin`` dropped from ``PATH`` (so each inner env finds its own python)."""
    env = {k: v for k, v in os.environ.items() if k not in _TOX_VARS}
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if not p.startswith(venv))
    env.update(extra or {})
    return env


def _tox(*args: str) -> list[str]:
    return [sys.executable, "-m", "tox", *args]


def stream(cmd: list[str], label: str, log: Log = _print, *, env=None, echo: bool = True,
           heartbeat: float = HEARTBEAT_S, cwd: Path = ROOT) -> tuple[int, list[str]]:
    """Run ``cmd``; print each output line as ``   | line`` (if ``echo``) and, after
    ``heartbeat`` seconds of silence, ``   ... LABEL: 1m20s``.  Returns (exit status,
    every output line)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env if env is not None else clean_environ(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1)
    lines: list[str] = []
    q: queue.Queue = queue.Queue()

    def reader() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=reader, daemon=True).start()
    last = time.monotonic()
    while True:
        try:
            line = q.get(timeout=1.0)
        except queue.Empty:
            if time.monotonic() - last >= heartbeat:
                log(f"   ... {label}: {_elapsed(time.monotonic() - start)}")
                last = time.monotonic()
            continue
        if line is None:
            break
        lines.append(line)
        if echo:
            log(f"   | {line}")
            last = time.monotonic()
    return proc.wait(), lines


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def first_error(lines: list[str]) -> str:
    """The line that best says why a tox run failed (the missing-interpreter line, else the
    last line naming an error, else the last line)."""
    for line in lines:
        if _MISSING_PYTHON.search(line.strip()):
            return line.strip()
    for line in reversed(lines):
        low = line.lower()
        if any(w in low for w in ("error", "failed", "exception", "not found")):
            return line.strip()
    return lines[-1].strip() if lines else "(no output)"


_MISSING_PYTHON = re.compile(r"could not find python interpreter"
                             r"(?: with spec\(s\)| matching any of the specs)?:? (.+)$")


def missing_interpreter(lines: list[str]) -> str | None:
    """The interpreter spec tox could not find (``python3.11``), if that is why it failed
    (tox 4 says "could not find python interpreter matching any of the specs SPEC")."""
    for line in lines:
        found = _MISSING_PYTHON.search(line.strip())
        if found:
            return found.group(1).strip().strip("'\"")
    return None


_ENSURE = threading.Lock()
_ENSURED: set[str] = set()  # environments this process has brought up to date
RUN_LOCK = ROOT / "build" / "tox-run.lock"


@contextmanager
def _tox_run_turn():
    """One ``tox run`` at a time, among this process's threads and among processes of this
    checkout (say the matrix and a bench started by hand): they share tox's package build
    (``.tox/.pkg``), and two would reinstall the package into one environment at once."""
    from .results import file_lock

    with _ENSURE, file_lock(RUN_LOCK):
        yield


def ensure(env: str, log: Log = _print) -> float:
    """Create tox environment ``env`` completely (deps, the package and its extras) or
    bring it up to date; returns the seconds it took (0 when this process already has).
    Raises :class:`EnvError`.  Callers in several threads take turns."""
    if releases.tox_env(env) in _ENSURED:
        return 0.0
    with _tox_run_turn():
        return _ensure(env, log)


def config(envs: list[str], keys: tuple[str, ...] = ("env_dir", "env_python"), *,
           cwd: Path = ROOT) -> dict[str, dict[str, str]]:
    """``{env: {key: value}}`` from one ``tox config`` call (tox's own paths, whatever
    ``env_dir`` a release twin or ``--workdir`` gives them); a key tox cannot evaluate
    (e.g. the interpreter of an environment pinned to a Python this machine lacks) is left
    out."""
    proc = subprocess.run(_tox("config", "-e", ",".join(envs), "-k", *keys), cwd=cwd,
                          env=clean_environ(), capture_output=True, text=True)
    out: dict[str, dict[str, str]] = {}
    section = None
    for line in proc.stdout.splitlines():
        head = re.fullmatch(r"\[testenv:(.+)\]", line.strip())
        if head:
            section = out.setdefault(head.group(1), {})
            continue
        key, sep, value = line.partition(" = ")
        if section is not None and sep and key in keys and not value.startswith("#"):
            section[key] = value.strip()
    return out


def ensure_existing(envs: list[str], log: Log = _print, *, cwd: Path = ROOT) -> list[str]:
    """Bring those of ``envs`` that exist already up to date in one ``tox run`` (one tox
    start and package build for all of them, not one each) and return them; :func:`ensure`
    then passes over them.  Environments not yet created are left to :func:`ensure`, one at
    a time, so that a first run computes while the next one installs; if the joint run fails,
    all of them are, and each then fails with its own error."""
    names = list(dict.fromkeys(releases.tox_env(e) for e in envs))
    dirs = {n: c.get("env_dir") for n, c in config(names, ("env_dir",), cwd=cwd).items()}
    existing = [n for n in names if n not in _ENSURED and dirs.get(n)
                and Path(dirs[n]).is_absolute() and Path(dirs[n]).is_dir()]
    if len(existing) < 2:
        return []
    log(f"   tox run -e {','.join(existing)} --notest (they exist: brought up to date "
        f"together)")
    with _tox_run_turn():
        code, lines = stream(_tox("run", "-e", ",".join(existing), "--notest"),
                             "bringing the environments up to date", log, echo=False,
                             cwd=cwd)
    if code != 0:
        log(f"   (exit {code}: {first_error(lines)}; each environment on its own instead)")
        return []
    _ENSURED.update(existing)
    return existing


def _ensure(env: str, log: Log) -> float:
    start = time.monotonic()
    pinned, env = env, releases.tox_env(env)
    if env != pinned:
        names = releases.VARIABLES[pinned].values()
        log(f"   {', '.join(f'{k}={v}' for k, v in releases.requested().items() if k in names)}"
            f": tox env {env} instead of {pinned}")
    log(f"   tox run -e {env} --notest (creates the environment on first use)")
    code, lines = stream(_tox("run", "-e", env, "--notest"), f"building tox env {env!r}", log)
    if code != 0:
        needed = missing_interpreter(lines)
        if needed:
            raise EnvError(f"tox env {env} needs {needed}, which is not installed on this "
                           f"machine")
        raise EnvError(f"tox env {env} could not be created (exit {code}): "
                       f"{first_error(lines)}")
    _ENSURED.add(env)
    return time.monotonic() - start


def run(env: str, argv: list[str], log: Log = _print, *, echo: bool = True,
        extra_env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """``argv`` in tox environment ``env`` (which :func:`ensure` has created)."""
    env = releases.tox_env(env)
    return stream(_tox("exec", "-q", "-e", env, "--", *argv), f"{env}: {argv[-1]}", log,
                  env=clean_environ(extra_env), echo=echo)


def pythons(envs: list[str], log: Log = _print) -> dict[str, str]:
    """``{env: its interpreter}`` for the tox environments ``envs``, each created
    completely first (those that exist together: :func:`ensure_existing`); an environment
    that cannot be created is left out (:func:`python` says why)."""
    ensure_existing(envs, log)
    for env in envs:
        try:
            ensure(env, log)
        except EnvError as e:
            log(f"   {e}")
    found = config([releases.tox_env(e) for e in envs], ("env_python",))
    out = {}
    for env in envs:
        exe = found.get(releases.tox_env(env), {}).get("env_python", "")
        if releases.tox_env(env) in _ENSURED and os.path.isfile(exe):
            out[env] = exe
    return out


def python(env: str, log: Log = _print) -> str:
    """The interpreter of tox environment ``env``, created completely first."""
    ensure(env, log)
    code, lines = run(env, ["python", "-c", "import sys; print(sys.executable)"], log,
                      echo=False)
    # tox may add its own report after the command's output ("congratulations :) ...")
    found = [ln.strip() for ln in lines if os.path.isfile(ln.strip())]
    if code != 0 or not found:
        raise EnvError(f"tox env {env}: cannot start its python: {first_error(lines)}")
    return found[-1]
