"""MXNet Gluon: ``hybridize(static_alloc=True, static_shape=True)``, or the same after
``optimize_for(backend="MKLDNN")`` (conv + ReLU fused: MXNet's CPU inference recipe)."""

from __future__ import annotations

import mxnet as mx


def candidates(port: str, mod, weights, quick: bool) -> list:
    def mx_run(x, onednn=False):
        xd = mx.nd.array(x, ctx=mx.cpu(), dtype="float32")
        net = mod.load(weights)  # hybridized, no graph yet: the next call sets its flags
        if onednn:
            net.optimize_for(xd, backend="MKLDNN", static_alloc=True, static_shape=True)
        else:
            net.hybridize(static_alloc=True, static_shape=True)
        return lambda: net(xd).asnumpy()
    return [("hybridize(static_alloc, static_shape)", mx_run),
            ("optimize_for(backend='MKLDNN', static_alloc, static_shape)",
             lambda x: mx_run(x, True))]
