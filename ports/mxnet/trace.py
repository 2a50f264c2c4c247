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
from mxnet.gluon import HybridBlock

from .. import _api
from .. import spec as S
from .._predict import as_input
from ..formats.mxnet import gluon_groups
from . import SqueezeNet


def _blocks(model: SqueezeNet) -> dict[str, HybridBlock]:
    """Activation name -> the block whose output it is."""
    out: dict[str, HybridBlock] = {}
    for group, layers in gluon_groups(model.variant).items():
        for layer, block in zip(layers, getattr(model, group)):  # (output ends in Flatten)
            if isinstance(layer, S.Fire):
                out.update(_fire_blocks(layer, block))
            elif isinstance(layer, S.ReLU):
                out[layer.of] = block
            elif isinstance(layer, (S.MaxPool, S.GlobalAvgPool)):
                out[layer.name] = block
    return out


def _fire_blocks(fire: S.Fire, block: HybridBlock) -> dict[str, HybridBlock]:
    """The ReLUs of a Fire's ``[Conv2D, relu]`` pairs, its bypass conv and itself."""
    squeeze, expand = block._children["0"], block._children["1"]
    out = {fire.squeeze.name: squeeze[1], fire.expand1x1.name: expand[0][1],
           fire.expand3x3.name: expand[1][1], fire.name: block}
    if fire.bypass_conv is not None:
        out[fire.bypass_conv.name] = block.bypass
    return out


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype; ``pool10`` and ``logits`` are ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    x = as_input(x, model.variant)
    dtype = model.dtype
    symbols: dict[str, mx.sym.Symbol] = {}

    def keeper(name: str):
        def hook(block, inputs, output):
            symbols[name] = output
        return hook

    handles = [block.register_forward_hook(keeper(name))
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
