"""Training with the Flax NNX port: gradients by JAX autodiff (``nnx.value_and_grad``),
steps by an optax chain on an ``nnx.Optimizer``.

    >>> from ports.flax import load, train
    >>> loss, grads = train.loss_and_grads(model, x, labels)     # {canonical name: OIHW}
    >>> steps = train.train_steps(model, x, labels, lrs=[0.01, 0.0095])   # ports._api.Step

The loss is Caffe's ``SoftmaxWithLoss`` on the logits
(``optax.softmax_cross_entropy_with_integer_labels``, mean over the batch); dropout is off
(the network's ``nnx.Dropout`` is deterministic unless :func:`dropout` asks otherwise).
Training runs the plain forward (``network.SqueezeNet.__call__``), every layer batched, also
for the fast model: its image-by-image head (:mod:`ports.flax.fast`) speeds up inference only.
Differentiated, the ``lax.map`` keeps each image's activations apart for the backward pass
(1_1, batch 32 at 224, 2 cores: a gradient took 4.2 s with the head, 2.0 s batched).

Caffe's solver rule is ``v <- m v + lr_t (g + wd w)``, ``w <- w - v``.  ``optax.sgd``
keeps the rate outside its momentum trace (``t <- m t + g``, ``w <- w - lr_t t``: PyTorch's
convention, the same steps only while the rate is constant) and has no weight decay, so
:func:`caffe_sgd` composes optax's parts in Caffe's order instead: the decay is added to the
gradient of every weight and bias (L2, not decoupled), the step's rate scales that sum
*before* the momentum trace accumulates it, and the trace is subtracted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .._api import Step
from .._predict import as_input
from ..formats.flax import key_table
from ..layouts import hwio_to_oihw, nchw_to_nhwc
from .network import SqueezeNet


def _batch(model: SqueezeNet, x, labels) -> tuple[jnp.ndarray, jnp.ndarray]:
    x = nchw_to_nhwc(as_input(x, model.variant).astype(model.dtype, copy=False))
    labels = np.asarray(labels)
    classes = model.variant.num_classes
    if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min() < 0 or labels.max() >= classes:  # JAX would not say
        raise ValueError(f"labels: expected {len(x)} integer classes in 0..{classes - 1}, "
                         f"got shape {labels.shape} dtype {labels.dtype}")
    return jnp.asarray(x), jnp.asarray(labels)


def _loss(model: SqueezeNet, x: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    logits = SqueezeNet.__call__(model, x)  # every layer batched (module docstring)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@nnx.jit  # compiled once per architecture, dtype and batch shape (and shared by the steps)
def _loss_and_grads(model: SqueezeNet, x, labels):
    return nnx.value_and_grad(_loss)(model, x, labels)


@nnx.jit  # one compiled update for all the parameters (op by op, each shape compiles)
def _update(model: SqueezeNet, optimizer: nnx.Optimizer, grads) -> None:
    optimizer.update(model, grads)  # tx.update, then optax.apply_updates


def _canonical(model: SqueezeNet, tree) -> dict[str, np.ndarray]:
    """A tree shaped like the model's parameters (NNX state, kernels HWIO; or its pure
    dict) -> ``{canonical name: array}``, OIHW, in the tree's dtype."""
    pure = tree if isinstance(tree, dict) else nnx.to_pure_dict(nnx.state(tree, nnx.Param))
    out = {}
    for name, path in key_table(model.variant).items():
        node = pure
        for part in path.split("/"):
            node = node[part]
        out[name] = (hwio_to_oihw if path.endswith("/kernel") else np.array)(np.asarray(node))
    return out


def loss_and_grads(model: SqueezeNet, x, labels) -> tuple[float, dict[str, np.ndarray]]:
    """Mean softmax cross-entropy on ``x`` [N,3,H,W] with integer ``labels`` [N], and the
    gradient of every parameter: ``{canonical name: array}``, OIHW, the model's dtype."""
    loss, grads = _loss_and_grads(model, *_batch(model, x, labels))
    return float(loss), _canonical(model, grads)


def caffe_sgd(lrs, momentum: float = 0.9, weight_decay: float = 2e-4
              ) -> optax.GradientTransformation:
    """Caffe's ``SGDSolver`` with rate ``lrs[t]`` at step ``t`` (see the module docstring)."""
    rates = jnp.asarray(lrs)
    return optax.chain(
        optax.add_decayed_weights(weight_decay),         # g + wd w, every weight and bias
        optax.scale_by_schedule(lambda t: rates[t]),     # lr_t (g + wd w)
        optax.trace(decay=momentum),                     # v <- m v + lr_t (g + wd w)
        optax.scale(-1.0),                               # w <- w - v
    )


def optimize(model: SqueezeNet, x, labels, tx: optax.GradientTransformation,
             steps: int) -> list[Step]:
    """``steps`` steps of ``tx`` on the parameters, in place: per step its loss, gradient,
    velocity (the state of ``tx``'s ``optax.trace``; zeros if it has none) and the weights
    after it (:class:`ports._api.Step`; canonical names, OIHW, the model's dtype)."""
    xb, yb = _batch(model, x, labels)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    out = []
    for _ in range(steps):
        loss, grads = _loss_and_grads(model, xb, yb)
        _update(model, optimizer, grads)
        weights = _canonical(model, model)
        traces = [s for s in jax.tree_util.tree_leaves(
            optimizer.opt_state, is_leaf=lambda s: isinstance(s, optax.TraceState))
            if isinstance(s, optax.TraceState)]
        velocity = (_canonical(model, nnx.to_pure_dict(traces[0].trace)) if traces
                    else {k: np.zeros_like(w) for k, w in weights.items()})
        out.append(Step(float(loss), _canonical(model, grads), velocity, weights))
    return out


def train_steps(model: SqueezeNet, x, labels, lrs, momentum: float = 0.9,
                weight_decay: float = 2e-4) -> list[Step]:
    """One Caffe SGD step per rate in ``lrs`` (:func:`caffe_sgd`), in place; per step its
    loss, gradient, velocity and the weights after it (:class:`ports._api.Step`)."""
    return optimize(model, x, labels, caffe_sgd(lrs, momentum, weight_decay), len(lrs))


def dropout(model: SqueezeNet, x, training: bool = True, seed: int = 0) -> np.ndarray:
    """``x`` through the model's own dropout layer (its ``nnx.Dropout``, the spec's rate), in
    training mode (mask from ``nnx.Rngs(dropout=seed)``) or at inference (the identity); the
    layer itself stays deterministic."""
    return np.asarray(model.drop9(jnp.asarray(x), deterministic=not training,
                                  rngs=nnx.Rngs(dropout=seed)))
