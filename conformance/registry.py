"""The registry of implementations under test: which ports and external engines take part in
conformance, and how to reach them.

Every entry's module exposes the uniform interface (:mod:`ports._api`):
``load(weights_or_path, dtype=...) -> model``, ``predict(model, x_nchw) -> logits`` and
``activations(model, x, layers=None)``; a ``training`` port also ``loss_and_grads``,
``train_steps`` and ``dropout``.
``env`` is the tox environment it runs in; ``setenv`` is applied before import.
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
    training: bool = False  # has loss_and_grads / train_steps / dropout (the float64 NumPy
                            # reference is what the others are compared with: not itself)

    def import_module(self) -> ModuleType:
        for k, v in self.setenv.items():
            current = os.environ.get(k)
            if current is not None and current != v:
                raise RuntimeError(f"{self.name} needs {k}={v}, but the environment has {current}")
            os.environ[k] = v
        return importlib.import_module(self.module)


PORTS: dict[str, Port] = {p.name: p for p in [
    Port("numpy", "ports.numpy", "core", ("float64",)),
    Port("torch", "ports.torch", "torch", training=True),
    Port("keras-tf", "ports.keras", "keras-tf", setenv={"KERAS_BACKEND": "tensorflow"}),
    Port("keras-jax", "ports.keras", "keras-jax",
         setenv={"KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1"}),
    Port("keras-torch", "ports.keras", "keras-torch", setenv={"KERAS_BACKEND": "torch"}),
    Port("flax", "ports.flax", "flax", setenv={"JAX_ENABLE_X64": "1"}),
    Port("mxnet", "ports.mxnet", "mxnet"),
    Port("chainer", "ports.chainer", "chainer"),
    Port("opencv", "conformance.engines.opencv", "opencv", ("float32",)),
    Port("onnxruntime", "conformance.engines.onnxruntime", "onnx", ("float32",)),
]}
