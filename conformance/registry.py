"""The registry of implementations under test: which ports and external engines take part in
conformance, and how to reach them.

Every entry's module exposes the uniform interface (:mod:`ports._api`):
``load(weights_or_path, dtype=...) -> model``, ``predict(model, x_nchw) -> logits`` and
``activations(model, x, layers=None)``; a ``training`` port also ``loss_and_grads``,
``train_steps`` (one :class:`ports._api.Step` per rate) and ``dropout``.
``env`` is the tox environment it runs in (``None``: the current interpreter);
``setenv`` is applied before import.

Other implementations take part without a fork of this project (the port protocol is
documented in :mod:`ports._api` and ``docs/port-protocol.md``):

* by **module path**: ``python -m conformance.collect mypackage.squeezenet`` (any name with
  a dot that imports), run in the current environment;
* by **entry point**: a package that declares ``[project.entry-points."squeezenet_ports.ports"]
  myport = "mypackage.squeezenet"`` is listed under ``myport`` beside the built-in ports.

Such a module may set ``DTYPES`` (default ``("float32",)``) and ``REDUCED`` (e.g.
``("bfloat16",)``, default none); it is a training port when it has ``loss_and_grads``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from types import ModuleType


@dataclass(frozen=True)
class Port:
    name: str
    module: str
    env: str
    dtypes: tuple[str, ...] = ("float32", "float64")
    setenv: dict = field(default_factory=dict)
    # Reduced precisions it also runs (``ports._api.REDUCED``): golden and fixture cases only,
    # at BF16 sizes (conformance.collect), with their own bounds; never training.
    reduced: tuple[str, ...] = ()
    training: bool = False  # has loss_and_grads / train_steps / dropout (the float64 NumPy
                            # reference is what the others are compared with: not itself)
    compiles: bool = False  # compiles each case before running it (XLA): the longest ports
    # The distributions that are its framework, each with the variable that names another
    # release of it (None: shown, not chosen), read by tox's release twins
    # (conformance.releases), drift, the bench and the trace.
    framework: dict = field(default_factory=dict)
    bench: str | None = None  # its module of devtools.bench.candidates (None: predict)

    def import_module(self) -> ModuleType:
        for k, v in self.setenv.items():
            current = os.environ.get(k)
            if current is not None and current != v:
                raise RuntimeError(f"{self.name} needs {k}={v}, but the environment has {current}")
            os.environ[k] = v
        return importlib.import_module(self.module)


ENTRY_POINTS = "squeezenet_ports.ports"


def external(name: str, module: str | None = None) -> Port:
    """A port outside this project: ``module`` (default ``name``) imported in the current
    environment; its dtypes and training from the module itself."""
    mod = importlib.import_module(module or name)
    for needed in ("load", "predict"):
        if not callable(getattr(mod, needed, None)):
            raise ValueError(f"port {name}: module {mod.__name__} has no {needed}() (see "
                             f"the port protocol, ports._api)")
    dtypes = tuple(getattr(mod, "DTYPES", ("float32",)))
    return Port(name, mod.__name__, None, dtypes, reduced=tuple(getattr(mod, "REDUCED", ())),
                training=callable(getattr(mod, "loss_and_grads", None)))


class Registry(dict):
    """The built-in ports, those packages register under :data:`ENTRY_POINTS`, and any
    importable module path named (resolved on first use)."""

    def __missing__(self, name: str) -> Port:
        if not isinstance(name, str) or "." not in name:
            raise KeyError(name)
        try:
            port = external(name)
        except ImportError as e:
            raise KeyError(f"{name} (cannot import it: {e})") from None
        self[name] = port
        return port

    def __contains__(self, name) -> bool:
        if dict.__contains__(self, name):
            return True
        try:
            self[name]
        except (KeyError, ValueError):
            return False
        return True

    def discover(self) -> Registry:
        """Add the ports that installed packages declare as entry points."""
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINTS):
            if dict.__contains__(self, ep.name):
                continue
            try:
                self[ep.name] = external(ep.name, ep.value)
            except Exception:  # a broken plugin is a port that fails to run, not a crash
                self[ep.name] = Port(ep.name, ep.value, None, ("float32",))
        return self


_KERAS = {"keras": "SQUEEZENET_KERAS_VERSION"}
_JAX = {"jax": "SQUEEZENET_JAX_VERSION", "jaxlib": None}
_TORCH = {"torch": "SQUEEZENET_TORCH_VERSION"}
_BF16 = ("bfloat16",)  # computed on the CPU by the framework (docs/deployment.md: which natively)
BUILT_IN: list[Port] = [
    Port("numpy", "ports.numpy", "core", ("float64",), framework={"numpy": None}),
    Port("torch", "ports.torch", "torch", reduced=_BF16, training=True, bench="torch",
         framework={**_TORCH, "torchvision": "SQUEEZENET_TORCHVISION_VERSION"}),
    Port("keras-tf", "ports.keras", "keras-tf", setenv={"KERAS_BACKEND": "tensorflow"},
         reduced=_BF16, training=True, bench="keras",
         framework={**_KERAS, "tensorflow-cpu": "SQUEEZENET_TF_VERSION", "tensorflow": None}),
    Port("keras-jax", "ports.keras", "keras-jax",
         setenv={"KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1"}, reduced=_BF16, training=True,
         compiles=True,
         bench="keras", framework={**_KERAS, **_JAX}),
    Port("keras-torch", "ports.keras", "keras-torch", setenv={"KERAS_BACKEND": "torch"},
         reduced=_BF16, training=True, bench="keras", framework={**_KERAS, **_TORCH}),
    Port("flax", "ports.flax", "flax", setenv={"JAX_ENABLE_X64": "1"}, reduced=_BF16, training=True,
         compiles=True, bench="flax", framework={"flax": "SQUEEZENET_FLAX_VERSION", **_JAX}),
    Port("mxnet", "ports.mxnet", "mxnet", training=True, bench="mxnet",
         framework={"mxnet": "SQUEEZENET_MXNET_VERSION"}),
    Port("chainer", "ports.chainer", "chainer", training=True, bench="chainer",
         framework={"chainer": "SQUEEZENET_CHAINER_VERSION"}),
    Port("opencv", "conformance.engines.opencv", "opencv", ("float32",), bench="opencv",
         framework={"opencv-python-headless": "SQUEEZENET_OPENCV_VERSION"}),
    Port("onnxruntime", "conformance.engines.onnxruntime", "onnx", ("float32",),
         bench="onnxruntime",
         framework={"onnxruntime": "SQUEEZENET_ONNXRUNTIME_VERSION", "onnx": None}),
    Port("openvino", "conformance.engines.openvino", "openvino", ("float32",), reduced=_BF16,
         bench="openvino", framework={"openvino": "SQUEEZENET_OPENVINO_VERSION"}),
    Port("litert", "conformance.engines.litert", "litert", ("float32",), bench="litert",
         framework={"ai-edge-litert": "SQUEEZENET_LITERT_VERSION"}),
]

PORTS: Registry = Registry({p.name: p for p in BUILT_IN}).discover()


def keras_port() -> str:
    """The Keras port of the backend ``KERAS_BACKEND`` names (the keras-* tox envs set it),
    for the Keras test modules; a clear error without it."""
    backend = os.environ.get("KERAS_BACKEND")
    by_backend = {p.setenv["KERAS_BACKEND"]: name for name, p in PORTS.items()
                  if "KERAS_BACKEND" in p.setenv}
    if backend not in by_backend:
        raise RuntimeError(f"set KERAS_BACKEND to {', '.join(by_backend)} "
                           f"(tox -e {', '.join(by_backend.values())})")
    return by_backend[backend]


def main(argv=None) -> int:
    """``python -m conformance.registry``: the ports (built-in and declared by installed
    packages) as a JSON list; ``--github-output``, run in a checkout, also tox.ini's test
    environments but the matrix (which runs as one job per port), as the lines
    ``ports=[...]`` and ``envs=[...]`` of a GitHub Actions step output (the workflow's job
    lists)."""
    import argparse
    import configparser
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--github-output", action="store_true")
    args = parser.parse_args(argv)
    ports = json.dumps(list(PORTS))
    if not args.github_output:
        print(ports)
        return 0
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(Path(__file__).resolve().parent.parent / "tox.ini")
    envs = [e.strip() for e in ini["tox"]["env_list"].split(",") if e.strip() != "matrix"]
    print(f"ports={ports}")
    print(f"envs={json.dumps(envs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
