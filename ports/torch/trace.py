"""Activations of the PyTorch port, for the layer trace: forward hooks on the port's own
modules copy what they compute (the ReLUs run in place) during one ordinary forward pass.

    >>> from ports.torch import load, trace
    >>> acts = trace.activations(load("w.safetensors"), x)   # {name: NumPy array}, NCHW
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _api
from .._predict import as_input
from .network import Fire, SqueezeNet


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as NumPy in its dtype; bfloat16 (which NumPy lacks) widened to float32."""
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _named_modules(model: SqueezeNet) -> list[tuple[str, torch.nn.Module]]:
    """(activation name, module whose output it is), in network order; a pool is named
    after the layer before it (``pool1`` after conv1, ``pool4`` after fire4)."""
    out, last = [], 1  # the number of the last conv or Fire module so far
    for module in model.features:
        if isinstance(module, torch.nn.ReLU):
            out.append(("conv1", module))
        elif isinstance(module, torch.nn.MaxPool2d):
            out.append((f"pool{last}", module))
        elif isinstance(module, Fire):
            last, name = last + 1, f"fire{last + 1}"
            out += [(f"{name}.squeeze", module.squeeze_activation),
                    (f"{name}.expand1x1", module.expand1x1_activation),
                    (f"{name}.expand3x3", module.expand3x3_activation)]
            out += [(f"{name}.bypass", module.bypass)] if hasattr(module, "bypass") else []
            out.append((name, module))
    return out + [("conv10", model.classifier[2]), ("pool10", model.classifier[3])]


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype (bfloat16 widened to float32); ``pool10`` and
    ``logits`` are ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    x = as_input(x, model.variant)
    out: dict[str, np.ndarray] = {}

    def keeper(name: str):
        def hook(module, inputs, output):
            out[name] = to_numpy(output.detach().flatten(1) if name == "pool10"
                                 else output.detach()).copy()
        return hook

    handles = [module.register_forward_hook(keeper(name))
               for name, module in _named_modules(model) if name in names]
    dtype = next(model.parameters()).dtype
    try:
        with torch.inference_mode():
            out["logits"] = to_numpy(model(torch.from_numpy(np.ascontiguousarray(x)).to(dtype)))
    finally:
        for handle in handles:
            handle.remove()
    return {n: out[n] for n in names}
