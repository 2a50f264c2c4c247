"""The inference modes the bench tries for each port, one module per framework.

``candidates(port, module, weights, quick) -> [(mode name, make)]``: ``make(x_nchw)``
prepares a run on that batch and returns ``run() -> logits ndarray``, which computes the full
logits and hands them back as NumPy every call.  The first entry is the port's plain
``predict``-equivalent; the worker times them all and keeps the fastest whose logits agree
with the float64 reference.  A port without a module of its own gets its ``predict``.
"""

from __future__ import annotations

import importlib


def candidates(port: str, mod, weights, quick: bool, dtype: str = "float32") -> list:
    """(A module's ``candidates`` takes ``dtype`` too when its port computes a reduced
    precision: the model loaded in it, the input cast by the port, float32 logits out.)"""
    from conformance.registry import PORTS

    name = PORTS[port].bench if port in PORTS else None  # its registry record
    if name is None:
        model = mod.load(weights, dtype)
        return [("port predict()", lambda x: lambda: mod.predict(model, x))]
    module = importlib.import_module(f"{__name__}.{name}")
    if dtype != "float32":
        return module.candidates(port, mod, weights, quick, dtype)
    return module.candidates(port, mod, weights, quick)
