"""Activations of the MXNet Gluon port, for the layer trace: the internal outputs of the
net's own graph, the one ``hybridize`` compiles.

    >>> from ports.mxnet import load, trace
    >>> acts = trace.activations(load("w.safetensors"), x)   # {name: NumPy array}, NCHW

A hybridized net runs one compiled graph and calls none of its blocks' Python hooks.  But a
``HybridBlock`` called on a :class:`mxnet.symbol.Symbol` composes that very graph, block by
block, and runs their forward hooks: the hooks here collect the symbol each block outputs.
Grouped, those symbols become a ``gluon.SymbolBlock`` that shares the net's parameters (the
Gluon recipe for feature extraction) and is evaluated once, at inference (dropout off).
The net itself is left as it was: hybridized or not, no hook attached, no cached graph
touched, so ``predict`` returns what it did.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

from .. import _api
from .._predict import as_input
from .network import Fire, SqueezeNet


def _blocks(model: SqueezeNet) -> dict[str, HybridBlock]:
    """Activation name -> the block whose output it is (a conv's: its ReLU's)."""
    out, n = {"conv1": model.features[1], "conv10": model.output[1],
              "pool10": model.output[2]}, 1  # n: conv1, then fire2 .. fire9
    for block in model.features:
        if isinstance(block, nn.MaxPool2D):
            out[f"pool{n}"] = block
        elif isinstance(block, Fire):  # [squeeze, [expand1x1, expand3x3]], each [conv, relu]
            n += 1
            out.update({f"fire{n}.squeeze": block[0][1], f"fire{n}.expand1x1": block[1][0][1],
                        f"fire{n}.expand3x3": block[1][1][1], f"fire{n}": block})
            if hasattr(block, "bypass"):
                out[f"fire{n}.bypass"] = block.bypass
    return out


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype; ``pool10`` and ``logits`` are ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    x = as_input(x, model.variant)
    dtype = model.dtype
    symbols: dict[str, mx.sym.Symbol] = {}

    def keep(name: str):  # a forward hook: keeps the block's output symbol
        return lambda block, inputs, output: symbols.__setitem__(name, output)

    handles = [block.register_forward_hook(keep(name))
               for name, block in _blocks(model).items() if name in names]
    data = mx.sym.var("data", dtype=dtype)
    try:
        symbols["logits"] = model(data)  # composes the graph; computes nothing
    finally:
        for handle in handles:
            handle.detach()
    graph = mx.gluon.SymbolBlock(mx.sym.Group([symbols[n] for n in names]), data,
                                 params=model.collect_params())
    with mx.autograd.predict_mode():
        values = graph(mx.nd.array(x, dtype=dtype))
    values = values if isinstance(values, (list, tuple)) else [values]
    return {n: v.asnumpy().reshape(len(x), -1) if n == "pool10" else v.asnumpy()
            for n, v in zip(names, values)}
