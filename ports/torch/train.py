"""Training with the PyTorch port: gradients by autograd, steps by ``torch.optim.SGD``.

    >>> from ports.torch import load, train
    >>> loss, grads = train.loss_and_grads(model, x, labels)     # {canonical name: OIHW}
    >>> steps = train.train_steps(model, x, labels, lrs=[0.01, 0.0095])   # ports._api.Step
    >>> loss, grads = train.distill_loss_and_grads(model, x, teacher_logits, temperature=2)

The loss is Caffe's ``SoftmaxWithLoss`` on the logits (``F.cross_entropy``, mean over the
batch); dropout is off (the model stays in ``eval()``, which here only disables dropout).

Caffe's solver rule is ``v <- m v + lr_t (g + wd w)``, ``w <- w - v``.  ``torch.optim.SGD``
keeps the rate outside its momentum buffer (``b <- m b + (g + wd w)``, ``w <- w - lr_t b``):
the same steps while the rate is constant, others when it changes.  So the optimizer runs
with ``lr=1``, ``weight_decay=lr_t * wd`` and the loss scaled by ``lr_t``: its buffer is then
``m b + lr_t (g + wd w)``, Caffe's ``v``, and ``w - 1 * b`` is Caffe's step, decay on weights
and biases alike.  Each step reports the gradient it used as ``p.grad / lr_t``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._api import Step
from .._predict import as_input
from ..formats.torch import key_table
from .network import SqueezeNet


def _input(model: SqueezeNet, x) -> torch.Tensor:
    x = as_input(x, model.variant)
    return torch.from_numpy(np.ascontiguousarray(x)).to(next(model.parameters()).dtype)


def _batch(model: SqueezeNet, x, labels) -> tuple[torch.Tensor, torch.Tensor]:
    return _input(model, x), torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def _named(model: SqueezeNet) -> dict[str, torch.nn.Parameter]:
    params = dict(model.named_parameters())
    return {name: params[key] for name, key in key_table(model.variant).items()}


def loss_and_grads(model: SqueezeNet, x, labels) -> tuple[float, dict[str, np.ndarray]]:
    """Mean softmax cross-entropy on ``x`` [N,3,H,W] with integer ``labels`` [N], and the
    gradient of every parameter: ``{canonical name: array}``, OIHW, the model's dtype."""
    xt, yt = _batch(model, x, labels)
    model.eval()  # dropout off
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(xt), yt)
    loss.backward()
    return loss.item(), {k: p.grad.detach().numpy().copy() for k, p in _named(model).items()}


def distill_loss_and_grads(model: SqueezeNet, x, teacher, temperature: float = 1.0
                           ) -> tuple[float, dict[str, np.ndarray]]:
    """Hinton's soft-target loss against ``teacher`` [N, C] (another network's logits on
    ``x``): ``T**2`` times the batch mean of ``KL(softmax(teacher/T) || softmax(logits/T))``
    (``ports.numpy.train.distillation``), and every parameter's gradient, as
    :func:`loss_and_grads`."""
    xt = _input(model, x)
    model.eval()  # dropout off
    model.zero_grad(set_to_none=True)
    target = F.log_softmax(torch.as_tensor(np.asarray(teacher, np.float64)) / temperature, 1)
    student = F.log_softmax(model(xt).double() / temperature, 1)
    loss = F.kl_div(student, target, reduction="batchmean", log_target=True) * temperature ** 2
    loss.backward()
    return loss.item(), {k: p.grad.detach().numpy().copy() for k, p in _named(model).items()}


def train_steps(model: SqueezeNet, x, labels, lrs, momentum: float = 0.9,
                weight_decay: float = 2e-4) -> list[Step]:
    """One Caffe SGD step per rate in ``lrs`` (see the module docstring), in place; per step
    its loss, gradient, velocity and the weights after it (:class:`ports._api.Step`)."""
    xt, yt = _batch(model, x, labels)
    model.eval()  # dropout off
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=momentum,
                                weight_decay=0.0)
    named, out = _named(model), []
    for lr in lrs:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xt), yt)
        (loss * lr).backward()  # the rate goes inside the momentum buffer, as in Caffe
        grads = {k: p.grad.detach().numpy() / lr for k, p in named.items()}
        for group in optimizer.param_groups:
            group["weight_decay"] = lr * weight_decay
        optimizer.step()
        out.append(Step(loss.item(), grads,
                        {k: optimizer.state[p]["momentum_buffer"].detach().numpy().copy()
                         for k, p in named.items()},
                        {k: p.detach().numpy().copy() for k, p in named.items()}))
    return out


def dropout(model: SqueezeNet, x, training: bool = True) -> np.ndarray:
    """``x`` through the model's own dropout layer (its ``nn.Dropout``, the spec's rate), in
    training mode or at inference; the model's mode is left as it was."""
    layer, was = model.classifier[0], model.classifier[0].training
    try:
        with torch.no_grad():
            return layer.train(training)(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    finally:
        layer.train(was)
