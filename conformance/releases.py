"""Another release of a port's framework, named by variables: which tox environment runs it,
where its results go, and a check that the environment has what was asked for.

Every framework environment ``ENV`` of ``tox.ini`` has a twin ``ENV-release`` that installs
the framework from pins such as ``flax=={env:SQUEEZENET_FLAX_VERSION:0.12.8}`` (the default is
the pinned release, pyproject.toml's extra) in a directory of its own,
``.tox/ENV-release/<versions>``; the pinned ``ENV`` is configured exactly as without it.
:data:`VARIABLES` says which variables each environment reads (tests/test_drift.py checks it
against tox.ini).  With any of them set,

* :func:`tox_env` sends the matrix, the bench and the layer trace to ``ENV-release`` for the
  ports whose framework is named (the others keep their pinned environment);
* :func:`results_folder` puts the results in ``build/conformance/release/<label>``
  (``flax-0.12.0_jax-0.9.0``)
  (``SQUEEZENET_RESULTS`` overrides it), so the pinned results are never replaced; they could
  not be taken for the pinned ones anyway: their key records every installed version
  (:mod:`conformance.results`);
* :func:`check` refuses to compute in an environment whose installed framework is not the
  release asked for (``tox -e flax`` with ``SQUEEZENET_FLAX_VERSION`` set: use
  ``tox -e flax-release``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .host import versions
from .registry import BUILT_IN

# tox environment -> {distribution: variable naming its release}, from the port registry
VARIABLES: dict[str, dict[str, str]] = {
    p.env: {d: v for d, v in p.framework.items() if v}
    for p in BUILT_IN if p.env and any(p.framework.values())}
ALL = sorted({v for names in VARIABLES.values() for v in names.values()})
SUFFIX = "-release"


def requested(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The release variables that are set (non-empty), by name."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in ALL if environ.get(k)}


def tox_env(env: str, environ: Mapping[str, str] | None = None) -> str:
    """The tox environment that runs ``env``'s port: ``ENV-release`` when a variable of its
    framework is set, else ``env`` itself."""
    wanted = requested(environ)
    if env in VARIABLES and any(v in wanted for v in VARIABLES[env].values()):
        return env + SUFFIX
    return env


def label(environ: Mapping[str, str] | None = None) -> str:
    """``flax-0.12.0_jax-0.9.0``: the releases the variables name, sorted ("" when none)."""
    return "_".join(f"{k.removeprefix('SQUEEZENET_').removesuffix('_VERSION').lower()}-{v}"
                    for k, v in sorted(requested(environ).items()))


def results_folder(default, environ: Mapping[str, str] | None = None):
    """Where results go: ``default`` (``build/conformance``) when no release variable is
    set, else ``default/release/<label>``."""
    name = label(environ)
    return default / "release" / name if name else default


def _public(version: str) -> str:
    return version.split("+", 1)[0]  # torch 2.13.0+cpu is release 2.13.0


def mismatches(installed: Mapping[str, str],
               environ: Mapping[str, str] | None = None) -> list[str]:
    """Each framework distribution installed here whose variable asks for another release:
    ``"flax 0.12.8 installed, SQUEEZENET_FLAX_VERSION=0.12.0"``."""
    wanted = requested(environ)
    out = []
    for dist, var in sorted({(d, v) for names in VARIABLES.values()
                             for d, v in names.items()}):
        have = installed.get(dist)
        if var in wanted and have is not None and _public(have) != _public(wanted[var]):
            out.append(f"{dist} {have} installed, {var}={wanted[var]}")
    return out


def check(installed: Mapping[str, str] | None = None) -> None:
    """Raise when this environment's framework is not the release the variables name."""
    if installed is None:
        installed = versions()
    bad = mismatches(installed)
    if bad:
        env = os.environ.get("TOX_ENV_NAME", "")
        hint = (f" (tox -e {env}{SUFFIX} installs the release named; tox -e {env} is the "
                f"pinned one)" if env in VARIABLES else "")
        raise RuntimeError("this environment has another framework release than asked for: "
                           + "; ".join(bad) + hint)
