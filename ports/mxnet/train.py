"""Training with the MXNet Gluon port: gradients by ``mxnet.autograd``, steps by a Gluon
``Trainer`` running MXNet's own ``sgd`` optimizer.

    >>> from ports.mxnet import load, train
    >>> loss, grads = train.loss_and_grads(net, x, labels)       # {canonical name: OIHW}
    >>> steps = train.train_steps(net, x, labels, lrs=[0.01, 0.0095])     # ports._api.Step

The loss is Caffe's ``SoftmaxWithLoss`` on the logits: Gluon's ``SoftmaxCrossEntropyLoss``
(one value per image), then the mean over the batch.  Dropout is off (see ``_loss``); the net's
hybridized blocks are differentiated through their compiled graphs.

Caffe's solver rule is ``v <- m v + lr_t (g + wd w)``, ``w <- w - v``.  MXNet's ``sgd`` with
momentum (``sgd_mom_update``) is that rule as it stands: ``state <- m state - lr (rescale_grad
g + wd w)``, ``w <- w + state`` (its ``state`` is ``-v``): the rate is inside the momentum,
as in Caffe (PyTorch keeps it outside), and the decay is added to the gradient (coupled L2,
not decoupled).  So the optimizer is configured with Caffe's numbers and nothing folded:

* ``momentum`` and ``wd`` as given; the rate set before every step with
  ``Trainer.set_learning_rate(lr_t)`` (a changing rate, as Caffe's ``poly`` policy);
* every parameter's ``wd_mult`` and ``lr_mult`` are 1 (Gluon's default, biases included;
  the Optimizer multiplies ``wd`` by the Parameter's ``wd_mult``), as the released Caffe
  prototxts set no ``decay_mult`` or ``lr_mult`` (tested);
* ``Trainer.step(1)``: ``step(batch_size)`` sets ``rescale_grad = 1 / batch_size`` for a
  summed loss; the loss here is already the batch mean.

MXNet's update kernels take ``momentum``, ``lr`` and ``wd`` as C++ ``float``: a float64 net
is stepped by Caffe's rule with those numbers rounded to float32 (0.9 -> 0.899999976),
which moves each update by ~6e-8 of its size from the exact rule, and by 4e-16 from the
rule with the rounded numbers (conformance/test_mxnet.py).  Each step reports MXNet's
momentum state negated (the Trainer's updater keeps it by parameter index).  (Caffe's own
``SolverParameter`` holds ``base_lr``, ``momentum`` and ``weight_decay`` as floats too.)
"""

from __future__ import annotations

from typing import Callable

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .._api import Step
from .._predict import as_input
from ..formats.mxnet import key_table
from .network import SqueezeNet


def _batch(model: SqueezeNet, x, labels) -> tuple[mx.nd.NDArray, mx.nd.NDArray]:
    x = as_input(x, model.variant)
    return (mx.nd.array(x, dtype=model.dtype),
            mx.nd.array(np.asarray(labels), dtype=model.dtype))  # class indices, exact


def _named(model: SqueezeNet) -> dict[str, gluon.Parameter]:
    params = model.structural_params()
    return {name: params[key] for name, key in key_table(model.variant).items()}


def _loss(model: SqueezeNet, xb: mx.nd.NDArray, yb: mx.nd.NDArray) -> mx.nd.NDArray:
    """Records the mean softmax cross-entropy for ``backward``, dropout off: the net's
    blocks in order with its ``nn.Dropout`` (the identity at inference) left out, recorded
    in training mode.  (Recorded in predict mode, ``train_mode=False``, MXNet's oneDNN
    float32 max pool keeps no workspace in its forward pass, and its backward is then
    wrong, by up to the gradient's whole size: conformance/test_mxnet.py.)"""
    with autograd.record(train_mode=True):
        h = model.features[:-1](xb)  # the features but their closing nn.Dropout
        return gluon.loss.SoftmaxCrossEntropyLoss()(model.output(h), yb).mean()


def loss_and_grads(model: SqueezeNet, x, labels) -> tuple[float, dict[str, np.ndarray]]:
    """Mean softmax cross-entropy on ``x`` [N,3,H,W] with integer ``labels`` [N], and the
    gradient of every parameter: ``{canonical name: array}``, OIHW, the model's dtype."""
    loss = _loss(model, *_batch(model, x, labels))
    loss.backward()  # grad_req "write": each call's gradients replace the last ones
    return float(loss.asscalar()), {k: p.grad().asnumpy() for k, p in _named(model).items()}


def trainer(model: SqueezeNet, momentum: float, weight_decay: float) -> gluon.Trainer:
    """Gluon's ``Trainer`` with MXNet's ``sgd``, Caffe's solver rule (module docstring);
    the rate is set before each step."""
    return gluon.Trainer(model.collect_params(), "sgd",
                         {"learning_rate": 0.0, "momentum": momentum, "wd": weight_decay},
                         kvstore=None)


def steps(model: SqueezeNet, x, labels, lrs, trainer_: gluon.Trainer,
          before_step: Callable[[int], None] | None = None) -> list[Step]:
    """One ``trainer_.step`` per rate in ``lrs`` (after ``before_step(i)``, if given), in
    place; per step its loss, gradient, velocity (``-state`` of MXNet's momentum) and the
    weights after it (:class:`ports._api.Step`)."""
    xb, yb = _batch(model, x, labels)
    named, out = _named(model), []
    for i, lr in enumerate(lrs):
        loss = _loss(model, xb, yb)
        loss.backward()
        grads = {k: p.grad().asnumpy() for k, p in named.items()}
        trainer_.set_learning_rate(lr)
        if before_step:
            before_step(i)
        trainer_.step(1)  # the loss is a mean already: rescale_grad 1
        states = trainer_._updaters[0].states  # MXNet's momentum, by the Trainer's index
        out.append(Step(float(loss.asscalar()), grads,
                        {k: -states[trainer_._param2idx[p.name]].asnumpy()
                         for k, p in named.items()},
                        {k: p.data().asnumpy() for k, p in named.items()}))
    return out


def train_steps(model: SqueezeNet, x, labels, lrs, momentum: float = 0.9,
                weight_decay: float = 2e-4) -> list[Step]:
    """One Caffe SGD step per rate in ``lrs`` (see the module docstring), in place; per
    step its loss, gradient, velocity and the weights after it (:class:`ports._api.Step`)."""
    return steps(model, x, labels, lrs, trainer(model, momentum, weight_decay))


def dropout(model: SqueezeNet, x, training: bool = True) -> np.ndarray:
    """``x`` through the net's own ``nn.Dropout`` block (the spec's rate), in training mode
    (``autograd.train_mode()``) or at inference (``predict_mode()``)."""
    layer = model.features[-1]  # the dropout closing the features, before conv10
    with autograd.train_mode() if training else autograd.predict_mode():
        return layer(mx.nd.array(np.asarray(x), dtype=np.asarray(x).dtype)).asnumpy()
