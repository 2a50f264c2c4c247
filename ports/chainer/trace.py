"""Activations of the Chainer port, for the layer trace: the model's own links and functions
applied in the order of its inference forward pass, each named output kept as it passes.

    >>> from ports.chainer import load, trace
    >>> acts = trace.activations(load("w.npz"), x)            # {name: NumPy array}, NCHW

The steps are those of the model's path: for the plain chain (``load(..., fast=False)``) its
convolution links, ``F.relu`` and ``F.max_pooling_2d(cover_all=True)``; for
:class:`ports.chainer.fast.SqueezeNet` (``load``'s default) the fused convolution + ReLU
(:func:`~ports.chainer.fast.conv`) and the separable pool (:func:`~ports.chainer.fast.max_pool`)
its forward pass runs at inference, where no graph is recorded.  Nothing is changed on the
model.
"""

from __future__ import annotations

import chainer
import chainer.functions as F
import numpy as np

from .. import _api
from .. import spec as S
from .._predict import as_input
from . import SqueezeNet, fast


def _plain_conv(link, h, relu: bool = False):
    """``link(h)``, then ``F.relu`` if ``relu``: the plain chain's steps."""
    y = link(h)
    return F.relu(y) if relu else y


def _plain_pool(h, pool: S.MaxPool):
    return F.max_pooling_2d(h, pool.kernel, pool.stride, cover_all=pool.ceil_mode)


def activations(model: SqueezeNet, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` for ``model.variant.activation_names()`` (or ``layers``), in
    network order, in the model's dtype; ``pool10`` and ``logits`` are ``[N, C]``."""
    names = _api.activation_names(model.variant, layers)
    conv, pool = ((fast.conv, fast.max_pool) if isinstance(model, fast.SqueezeNet)
                  else (_plain_conv, _plain_pool))
    out: dict[str, np.ndarray] = {}

    def keep(name: str, h):
        out[name] = np.array(h.array, copy=True)
        return h

    steps = model.variant.layers()
    h = chainer.Variable(np.ascontiguousarray(as_input(x, model.variant), model.dtype))
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        for i, layer in enumerate(steps):
            if isinstance(layer, S.Conv):  # with the ReLU that follows it (conv1, conv10)
                h = keep(layer.name, conv(model[layer.name], h,
                                          relu=isinstance(steps[i + 1], S.ReLU)))
            elif isinstance(layer, S.ReLU) and not isinstance(steps[i - 1], S.Conv):
                h = keep(layer.of, F.relu(h))  # pragma: no cover  (no such ReLU in the spec)
            elif isinstance(layer, S.MaxPool):
                h = keep(layer.name, pool(h, layer))
            elif isinstance(layer, S.Fire):
                h = keep(layer.name, _fire(model[layer.name], layer, h, conv, keep))
            elif isinstance(layer, S.GlobalAvgPool):  # Dropout: the identity at inference
                h = keep(layer.name, F.average(h, axis=(2, 3)))
    out["logits"] = out["pool10"].copy()  # the model's output: the global average
    return {n: out[n] for n in names}


def _fire(link, fire: S.Fire, x, conv, keep):
    """:meth:`ports.chainer.Fire.forward` by ``conv``, keeping each convolution's output."""
    s = keep(fire.squeeze.name, conv(link.squeeze, x, relu=True))
    e1 = keep(fire.expand1x1.name, conv(link.expand1x1, s, relu=True))
    e3 = keep(fire.expand3x3.name, conv(link.expand3x3, s, relu=True))
    out = F.concat((e1, e3), axis=1)
    if link.identity_bypass:
        return out + x
    if link.conv_bypass:
        return out + keep(fire.bypass_conv.name, conv(link.bypass, x))
    return out
