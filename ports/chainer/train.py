"""Training with the Chainer port: gradients by Chainer's ``backward``, steps by
``chainer.optimizers.MomentumSGD`` with the ``WeightDecay`` optimizer hook.

    >>> from ports.chainer import load, train
    >>> loss, grads = train.loss_and_grads(model, x, labels)     # {canonical name: OIHW}
    >>> steps = train.train_steps(model, x, labels, lrs=[0.01, 0.0095])   # ports._api.Step

The loss is Caffe's ``SoftmaxWithLoss`` on the logits: ``F.softmax_cross_entropy`` (by
default the mean over the batch).  Dropout is off (``chainer.using_config("train",
False)``, where ``F.dropout`` is the identity), backprop on: the model returned by
``load`` (:class:`ports.chainer.fast.SqueezeNet`, whose fused layers are forward-only)
then runs the plain chain of :mod:`ports.chainer`, as its forward pass does whenever a
graph is recorded.

Caffe's solver rule is ``v <- m v + lr_t (g + wd w)``, ``w <- w - v``.  Chainer's
``MomentumSGD`` updates ``v <- m v - lr g``, ``w <- w + v`` (its ``v`` is Caffe's ``-v``):
the rate is inside the momentum, as in Caffe (PyTorch keeps it outside; Chainer's
``CorrectedMomentumSGD`` too).  ``optimizer_hooks.WeightDecay(wd)``, added to the optimizer,
runs before every update (its ``timing`` is ``"pre"``) on every parameter, biases
included, and adds ``wd w`` to the gradient: coupled L2, as in Caffe (not decoupled).  The
rate is set before each step (``optimizer.lr = lr_t``), nothing is folded, and the update
is NumPy arithmetic in the parameters' dtype with Python-float hyperparameters.
"""

from __future__ import annotations

import chainer
import chainer.functions as F
import numpy as np

from .. import spec as S
from .._api import Step
from .._predict import as_input
from ..formats.chainer import key_table
from .network import SqueezeNet


def _batch(model: SqueezeNet, x, labels) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(as_input(x, model.variant), model.dtype)
    return x, np.asarray(labels).astype(np.int32)


def _named(model: SqueezeNet) -> dict[str, chainer.Parameter]:
    params = dict(model.namedparams())
    return {name: params["/" + key] for name, key in key_table(model.variant).items()}


def _backward(model: SqueezeNet, x: np.ndarray, t: np.ndarray) -> float:
    """The mean softmax cross-entropy (dropout off), its gradients left in the parameters."""
    with chainer.using_config("train", False), chainer.using_config("enable_backprop", True):
        loss = F.softmax_cross_entropy(model(x), t)
    model.cleargrads()
    loss.backward()
    return float(loss.array)


def loss_and_grads(model: SqueezeNet, x, labels) -> tuple[float, dict[str, np.ndarray]]:
    """Mean softmax cross-entropy on ``x`` [N,3,H,W] with integer ``labels`` [N], and the
    gradient of every parameter: ``{canonical name: array}``, OIHW, the model's dtype."""
    loss = _backward(model, *_batch(model, x, labels))
    return loss, {k: p.grad.copy() for k, p in _named(model).items()}


def optimizer(model: SqueezeNet, momentum: float, weight_decay: float) -> chainer.Optimizer:
    """``MomentumSGD`` with the ``WeightDecay`` hook on ``model``: Caffe's solver rule (the
    module docstring); the rate is set before each step."""
    opt = chainer.optimizers.MomentumSGD(lr=0.0, momentum=momentum)
    opt.setup(model)
    opt.add_hook(chainer.optimizer_hooks.WeightDecay(weight_decay))
    return opt


def steps(model: SqueezeNet, x, labels, lrs, optimizer_: chainer.Optimizer) -> list[Step]:
    """One ``optimizer_.update()`` per rate in ``lrs``, in place; per step its loss, gradient
    (before the ``WeightDecay`` hook adds to it), velocity (``-v`` of ``MomentumSGD``) and
    the weights after it (:class:`ports._api.Step`)."""
    xb, t = _batch(model, x, labels)
    named, out = _named(model), []
    for lr in lrs:
        loss = _backward(model, xb, t)
        grads = {k: p.grad.copy() for k, p in named.items()}
        optimizer_.lr = lr
        optimizer_.update()
        out.append(Step(loss, grads, {k: -p.update_rule.state["v"] for k, p in named.items()},
                        {k: p.array.copy() for k, p in named.items()}))
    return out


def train_steps(model: SqueezeNet, x, labels, lrs, momentum: float = 0.9,
                weight_decay: float = 2e-4) -> list[Step]:
    """One Caffe SGD step per rate in ``lrs`` (see the module docstring), in place; per
    step its loss, gradient, velocity and the weights after it (:class:`ports._api.Step`)."""
    return steps(model, x, labels, lrs, optimizer(model, momentum, weight_decay))


def dropout(model: SqueezeNet, x, training: bool = True) -> np.ndarray:
    """``x`` through the model's dropout, ``F.dropout`` at the spec's rate, in training
    (``chainer.using_config("train", True)``) or at inference (the identity)."""
    rate = next(layer.rate for layer in model.variant.layers() if isinstance(layer, S.Dropout))
    with chainer.using_config("train", training):
        return np.array(F.dropout(np.asarray(x), rate).array)
