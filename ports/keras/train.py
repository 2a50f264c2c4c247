"""Training with the Keras port: gradients by the backend's autodiff, steps by
``keras.optimizers.SGD``.

    >>> from ports.keras import load, train
    >>> loss, grads = train.loss_and_grads(model, x, labels)     # {canonical name: OIHW}
    >>> steps = train.train_steps(model, x, labels, lrs=[0.01, 0.0095])   # ports._api.Step

The loss is Caffe's ``SoftmaxWithLoss`` on the logits, mean over the batch, in the model's
dtype (``SparseCategoricalCrossentropy(from_logits=True)``; on torch torch's own: Keras' is
2e-8 off in float64 there), dropout off.  Gradients come from each backend's autodiff
(``jax.value_and_grad`` of ``stateless_call``, ``tf.GradientTape``, ``torch.autograd.grad``),
through the model's ``call`` with every layer batched: the fast model's image-by-image head
on JAX/CPU speeds up inference only (differentiated, 1_1 at batch 32: 4.1 s mapped, 2.0 s
batched, the plain model 2.6 s).

Caffe's solver rule is ``v <- m v + lr_t (g + wd w)``, ``w <- w - v``.  Keras' SGD keeps the
rate inside its velocity (``v <- m v - lr_t g``, ``w <- w + v``), Caffe's convention even
when the rate changes; the rate is set before each step (``optimizer.learning_rate``), in a
variable of the model's dtype (Keras makes it ``floatx``, whose rounding of a rate would show
in float64).  Keras' own ``weight_decay`` is decoupled (``w <- w - lr_t wd w``, outside the
velocity), not Caffe's: instead ``wd * w`` is added to the gradient of every kernel and bias
before the optimizer takes it, as in Caffe.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .._api import Step
from .._predict import as_input
from ..formats.keras import conv_layer_names
from ..layouts import hwio_to_oihw, nchw_to_nhwc, nhwc_to_nchw
from . import fast as _fast
from .network import SqueezeNet

BACKEND = keras.backend.backend()
_JAX_COMPILED: dict = {}  # see gradients()


def parameters(model: SqueezeNet) -> dict[str, keras.Variable]:
    """Canonical name -> the model's variable (kernels HWIO), in spec order."""
    out = {}
    for canonical, name in conv_layer_names(model.variant).items():
        layer = model.get_layer(name)
        out[f"{canonical}.weight"], out[f"{canonical}.bias"] = layer.kernel, layer.bias
    return out


def _batch(model: SqueezeNet, x, labels) -> tuple[np.ndarray, np.ndarray]:
    x = nchw_to_nhwc(as_input(x, model.variant)).astype(model.inputs[0].dtype)  # NHWC
    labels, classes = np.asarray(labels), model.variant.num_classes
    if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min() < 0 or labels.max() >= classes:  # the backends would not say
        raise ValueError(f"labels: expected {len(x)} integer classes in 0..{classes - 1}, "
                         f"got shape {labels.shape} dtype {labels.dtype}")
    return x, labels.astype(np.int32)


def gradients(model: SqueezeNet, x, labels) -> tuple[float, list]:
    """The mean cross-entropy on ``x`` [N,3,H,W] (dropout off), and its gradient for each of
    ``model.trainable_variables``, as the backend's tensors."""
    x, y = _batch(model, x, labels)
    variables = model.trainable_variables
    dtype = model.inputs[0].dtype
    # exact in float64 on JAX and TF (keras.ops.sparse_categorical_crossentropy: 2e-8 off)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
    if BACKEND == "jax":
        import jax

        # Compiled once per class, architecture, shape and dtype (op by op a step takes
        # seconds on CPU): traced through one model's stateless_call, it serves them all.
        key = (type(model), model.variant, str(dtype), x.shape)
        if key not in _JAX_COMPILED:
            batched = {"per_image": False} if isinstance(model, _fast.SqueezeNet) else {}

            def total(values, fixed, x, y):
                logits, _ = model.stateless_call(values, fixed, x, training=False, **batched)
                return loss(y, logits)

            _JAX_COMPILED[key] = jax.jit(jax.value_and_grad(total))
        ce, grads = _JAX_COMPILED[key](
            [v.value for v in variables], [v.value for v in model.non_trainable_variables],
            x, y)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            ce = loss(y, model(x, training=False))
        grads = tape.gradient(ce, variables)
    elif BACKEND == "torch":
        import torch

        # torch's own: Keras 3.15's loss and op are 2e-8 off in float64 here (gradient exact)
        ce = torch.nn.functional.cross_entropy(model(x, training=False),
                                               torch.as_tensor(y, dtype=torch.long))
        grads = list(torch.autograd.grad(ce, [v.value for v in variables]))
    else:  # pragma: no cover
        raise NotImplementedError(f"no gradients for the Keras backend {BACKEND}")
    return float(ops.convert_to_numpy(ce)), grads


def _canonical(model: SqueezeNet, tensors: dict) -> dict[str, np.ndarray]:
    """``{canonical name: tensor}`` (kernels HWIO) -> NumPy arrays, kernels OIHW."""
    return {k: (hwio_to_oihw if k.endswith(".weight") else np.array)(
        np.asarray(ops.convert_to_numpy(t))) for k, t in tensors.items()}


def loss_and_grads(model: SqueezeNet, x, labels) -> tuple[float, dict[str, np.ndarray]]:
    """Mean softmax cross-entropy on ``x`` [N,3,H,W] with integer ``labels`` [N], and the
    gradient of every parameter: ``{canonical name: array}``, OIHW, the model's dtype."""
    loss, grads = gradients(model, x, labels)
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    return loss, _canonical(model, {k: grads[position[id(v)]]
                                    for k, v in parameters(model).items()})


def sgd(model: SqueezeNet, momentum: float = 0.9, **kwargs) -> keras.optimizers.SGD:
    """``keras.optimizers.SGD(momentum=...)`` whose rate variable has the model's dtype."""
    floatx = keras.config.floatx()
    keras.config.set_floatx(model.inputs[0].dtype)  # the rate variable is made in floatx
    try:
        # np.float64, not float: Keras casts the momentum to the variables' dtype, and on
        # TensorFlow a Python float goes through float32 on the way (0.9 -> 0.899999976).
        return keras.optimizers.SGD(momentum=np.float64(momentum), **kwargs)
    finally:
        keras.config.set_floatx(floatx)


def optimize(model: SqueezeNet, x, labels, lrs, optimizer: keras.optimizers.Optimizer,
             weight_decay: float = 0.0, decayed=None) -> list[Step]:
    """One step of ``optimizer`` per rate in ``lrs`` on the gradients of :func:`gradients`
    plus ``weight_decay * w`` for the ``decayed`` canonical names (default: every kernel and
    bias), in place: per step its loss, gradient (without the decay), velocity (``-v`` of
    the optimizer's momentum, zeros if it has none) and the weights after it
    (:class:`ports._api.Step`; canonical names, OIHW)."""
    named = parameters(model)
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    decay = {position[id(named[n])] for n in (named if decayed is None else decayed)}
    dtype = model.inputs[0].dtype
    # A NumPy scalar of the model's dtype: TensorFlow turns a Python float into a float32
    # tensor first, so ops.cast(2e-4, "float64") is 2e-4 rounded to float32.
    wd = ops.convert_to_tensor(np.asarray(weight_decay, dtype))
    apply = _jax_apply(optimizer, model) if BACKEND == "jax" else optimizer.apply
    out = []
    for lr in lrs:
        optimizer.learning_rate = lr  # Keras' SGD puts it inside the velocity
        loss, grads = gradients(model, x, labels)
        variables = model.trainable_variables
        apply([g + wd * v.value if i in decay else g
               for i, (g, v) in enumerate(zip(grads, variables))], variables)
        velocity = _velocities(optimizer, model)
        out.append(Step(loss, _canonical(model, {k: grads[position[id(v)]]
                                                 for k, v in named.items()}),
                        {k: -velocity[k] if k in velocity else np.zeros(v.shape, dtype)
                         for k, v in _canonical(model, named).items()},
                        _canonical(model, named)))
    return out


def _velocities(optimizer: keras.optimizers.Optimizer, model: SqueezeNet) -> dict:
    """``{canonical name: the optimizer's momentum}`` (OIHW) for an optimizer that keeps
    one per variable (Keras' SGD: ``momentums``), else ``{}``."""
    momentums = getattr(optimizer, "momentums", None)
    if not momentums:
        return {}
    index = optimizer._get_variable_index  # Keras 3: the slot of each trainable variable
    return _canonical(model, {k: momentums[index(v)] for k, v in parameters(model).items()})


def _jax_apply(optimizer: keras.optimizers.Optimizer, model: SqueezeNet):
    """``optimizer.apply`` as one compiled ``optimizer.stateless_apply`` (Keras' recipe for
    JAX training loops; applied op by op, five steps take ~15 s on CPU)."""
    import jax

    optimizer.build(model.trainable_variables)
    compiled = jax.jit(optimizer.stateless_apply)

    def apply(grads, variables) -> None:
        state = [v.value for v in optimizer.variables]
        new_values, new_state = compiled(state, grads, [v.value for v in variables])
        for v, value in zip(variables, new_values):
            v.assign(value)
        for v, value in zip(optimizer.variables, new_state):
            v.assign(value)

    return apply


def train_steps(model: SqueezeNet, x, labels, lrs, momentum: float = 0.9,
                weight_decay: float = 2e-4) -> list[Step]:
    """One Caffe SGD step per rate in ``lrs`` (see the module docstring), in place; per
    step its loss, gradient, velocity and the weights after it (:class:`ports._api.Step`)."""
    # Coupled decay on every kernel and bias added to the gradient, not SGD(weight_decay=...),
    # which Keras applies decoupled from the gradient (not Caffe's rule).
    return optimize(model, x, labels, lrs, sgd(model, momentum), weight_decay)


def dropout(model: SqueezeNet, x, training: bool = True) -> np.ndarray:
    """``x`` [N,C,H,W] through the model's own ``keras.layers.Dropout`` (the spec's rate), in
    training mode or at inference (the identity)."""
    y = model.get_layer("drop9")(nchw_to_nhwc(np.asarray(x)), training=training)
    return nhwc_to_nchw(np.asarray(ops.convert_to_numpy(y)))
