"""Activations of the PyTorch port, for the layer trace: forward hooks on the port's own
modules record what they compute during one ordinary forward pass.

    >>> from ports.torch import load, trace
    >>> acts = trace.activations(load("w.safetensors"), x)   # {name: NumPy array}, NCHW

The port's ReLUs run in place, so each hook keeps a copy of the module's output at the
moment it is produced.  The hooks are removed afterwards; nothing else changes.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..formats.torch import sequential_groups
from .network import SqueezeNet


def _named_modules(model: SqueezeNet) -> list[tuple[str, torch.nn.Module]]:
    """(activation name, module whose output it is), in network order."""
    out = []
    for group, layers in sequential_groups(model.variant).items():
        modules = getattr(model, group)
        for index, layer in enumerate(layers):
            module = modules[index]
            if isinstance(layer, S.ReLU):
                out.append((layer.of, module))
            elif isinstance(layer, (S.MaxPool, S.GlobalAvgPool)):
                out.append((layer.name, module))
            elif isinstance(layer, S.Fire):
                out += [(layer.squeeze.name, module.squeeze_activation),
                        (layer.expand1x1.name, module.expand1x1_activation),
                        (layer.expand3x3.name, module.expand3x3_activation)]
                if layer.bypass_conv is not None:
                    out.append((layer.bypass_conv.name, module.bypass))
                out.append((layer.name, module))
    return out


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype; ``pool10`` and ``logits`` are ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    x = as_input(x, model.variant)
    out: dict[str, np.ndarray] = {}

    def keeper(name: str):
        def hook(module, inputs, output):
            out[name] = output.detach().flatten(1).numpy().copy() if name == "pool10" \
                else output.detach().numpy().copy()
        return hook

    handles = [module.register_forward_hook(keeper(name))
               for name, module in _named_modules(model) if name in names]
    dtype = next(model.parameters()).dtype
    try:
        with torch.inference_mode():
            out["logits"] = model(torch.from_numpy(np.ascontiguousarray(x)).to(dtype)).numpy()
    finally:
        for handle in handles:
            handle.remove()
    return {n: out[n] for n in names}
