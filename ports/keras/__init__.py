"""SqueezeNet in Keras 3 (TensorFlow, JAX or PyTorch backend), built from :mod:`ports.spec`.

A functional ``keras.Model``, channels-last (NHWC activations, HWIO kernels), built by
interpreting ``Variant.layers()``: no channel count is written here.  Layer names follow
the canonical names with ``.`` replaced by ``_`` (Keras names cannot hold ``/`` and the
project keeps dots for canonical names)::

    conv1, relu1, pool1, fire2_squeeze, fire2_expand1x1, fire2_expand3x3, fire2_concat,
    fire2_bypass (complex bypass conv), fire2_add (bypass sum), ..., drop9,
    conv10_pad (only when final_conv_padding=1), conv10, relu10, pool10

The full table (and the ``.weights.h5`` paths real Keras uses for them) lives in
:mod:`ports.formats.keras`, which reads and writes these files without Keras.

The global average pool is ``ExactGlobalAveragePooling2D`` (Keras' own computes float64
means in float32 on JAX and PyTorch).  Ceil-mode max pooling (Caffe, torchvision) has no
Keras equivalent: ``CeilMaxPooling2D`` pads the bottom/right edge with the cells of ``-inf``
a last partial window needs (v1.1 at 224 needs none; at 227 every pool does) and then
pools ``valid``.
For ``kernel >= stride`` that gives exactly ``ceil((size - kernel) / stride) + 1`` windows
and the padded cells never win, even for negative inputs (complex-bypass v1.0 pools after
fire4 and fire8 see conv-bypass sums, which can be negative, so zero padding would be
wrong there).

Speed (``tools/bench``, ``docs/performance.md``): ``build`` returns a
:class:`SqueezeNetModel` (a functional model; same layers, weights and files), whose
:class:`Conv2D` and pooling take each backend's fast road (torch: NCHW views with
channels-last strides instead of Keras' two copies per layer; JAX: 1x1 convolutions as
matrix products, pooling as strided maxima, the high-resolution layers mapped over the
images on CPU); every road is tested against Keras' own layers.

    >>> from ports.keras import load, predict
    >>> model = load("w.safetensors")            # or "w.weights.h5"
    >>> logits = predict(model, x)               # x: NCHW [N,3,H,W] -> [N, classes]

float32 and float64 (JAX needs ``JAX_ENABLE_X64=1``, set before JAX is imported).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .. import spec as S
from .._predict import as_input
from ..canonical import Weights, check, make
from ..formats.keras import conv_layer_names, layer_name, model_name
from ..layouts import hwio_to_oihw, nchw_to_nhwc, oihw_to_hwio
from ..spec import Variant

__all__ = ["SqueezeNet", "SqueezeNetModel", "Conv2D", "CeilMaxPooling2D",
           "ExactGlobalAveragePooling2D", "build", "load", "load_weights", "predict",
           "to_weights", "variant_of"]


@keras.saving.register_keras_serializable(package="squeezenet_ports")
class CeilMaxPooling2D(layers.Layer):
    """Max pooling whose output size rounds up (Caffe / ``ceil_mode=True``), NHWC.

    Pads ``stride - 1`` rows/columns of ``-inf`` at the bottom/right, then pools
    ``valid``: ``floor((size + stride - 1 - kernel) / stride) + 1`` equals
    ``ceil((size - kernel) / stride) + 1``, and with ``kernel >= stride`` every window
    starts inside the input (as Caffe and PyTorch require), so a padded cell never
    decides a maximum.
    """

    def __init__(self, pool_size: int = 3, strides: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 1 <= strides <= pool_size:
            raise ValueError(f"CeilMaxPooling2D needs 1 <= strides <= pool_size, got "
                             f"pool_size={pool_size}, strides={strides}")
        self.pool_size = int(pool_size)
        self.strides = int(strides)

    def call(self, x):  # [N,H,W,C] -> [N,H',W',C]
        eh, ew = (self._extra(d) for d in x.shape[1:3])
        if eh or ew:
            x = ops.pad(x, [[0, 0], [0, eh], [0, ew], [0, 0]], constant_values=float("-inf"))
        k, s = self.pool_size, self.strides
        if _BACKEND == "torch":  # an NCHW view with channels-last strides: no copies
            y = ops.max_pool(ops.transpose(x, (0, 3, 1, 2)), k, s, padding="valid",
                             data_format="channels_first")
            return ops.transpose(y, (0, 2, 3, 1))
        if _BACKEND == "jax":  # XLA:CPU's reduce_window is ~3x slower than k*k strided maxima
            ho, wo = ((d - k) // s + 1 for d in x.shape[1:3])  # padded: floor is the ceil size
            out = None
            for i in range(k):
                for j in range(k):
                    v = x[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
                    out = v if out is None else ops.maximum(out, v)
            return out
        return ops.max_pool(x, k, s, padding="valid", data_format="channels_last")

    def _extra(self, size) -> int:
        """Rows (columns) of -inf the bottom (right) edge needs for a last, partial window
        (the spec's ``MaxPool.ceil_extra``), or ``stride - 1`` when the size is not known
        while tracing (also exact: ``floor((size + s - 1 - k) / s) + 1`` windows)."""
        if size is None:
            return self.strides - 1
        return S.MaxPool("", self.pool_size, self.strides).ceil_extra(int(size))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape

        def side(s):
            return None if s is None else -(-(s - self.pool_size) // self.strides) + 1

        return (n, side(h), side(w), c)

    def get_config(self) -> dict:
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides}


@keras.saving.register_keras_serializable(package="squeezenet_ports")
class ExactGlobalAveragePooling2D(layers.Layer):
    """Mean over H and W, ``[N,H,W,C] -> [N,C]``, accumulated in the input's dtype.

    Keras 3.15's ``GlobalAveragePooling2D`` (``ops.mean``) computes a float64 mean in
    float32 on the JAX and PyTorch backends (its ``result_type(float64, "float32")`` is
    float32 there), which costs ~1e-8 relative; a sum divided by the count does not.
    """

    def call(self, x):  # [N,H,W,C] -> [N,C]
        shape = ops.shape(x)
        return ops.sum(x, axis=[1, 2]) / ops.cast(shape[1] * shape[2], x.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])


_BACKEND = keras.backend.backend()


@keras.saving.register_keras_serializable(package="squeezenet_ports")
class Conv2D(layers.Conv2D):
    """``keras.layers.Conv2D``, channels-last, whose convolution takes the backend's fast
    road.  Same kernel ``[kh, kw, in, out]``, config and ``.weights.h5`` paths (Keras names
    weight groups after the class, and the class name is the same).

    * torch: Keras copies each NHWC input to contiguous NCHW and then back to
      channels-last memory before every ``conv2d``; here the NHWC tensor goes to torch as
      an NCHW *view* with channels-last strides, which oneDNN takes as it is.
    * jax: a 1x1, stride-1 convolution is the matrix product ``[N,H,W,in] @ [in,out]``,
      which XLA:CPU runs 2-8x faster than its 1x1 convolution (``tools/bench`` notes).
    * tensorflow: Keras' own ``convolution_op``.
    """

    def convolution_op(self, inputs, kernel):
        if self.data_format == "channels_last" and self.groups == 1:
            if _BACKEND == "torch":
                y = ops.conv(ops.transpose(inputs, (0, 3, 1, 2)), kernel,
                             strides=list(self.strides), padding=self.padding,
                             dilation_rate=self.dilation_rate, data_format="channels_first")
                return ops.transpose(y, (0, 2, 3, 1))
            if (_BACKEND == "jax" and tuple(self.kernel_size) == (1, 1)
                    and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1)):
                return ops.matmul(inputs, kernel[0, 0])  # [N,H,W,in] @ [in,out]
        return super().convolution_op(inputs, kernel)


def _conv(c: S.Conv, get, activation=None):
    """One spec convolution as Keras layers: ``[ZeroPadding2D], Conv2D`` (HWIO kernel)."""
    name = layer_name(c.name)
    if c.padding == 0:
        padding, pad = "valid", None
    elif c.stride == 1 and 2 * c.padding == c.kernel - 1:
        padding, pad = "same", None   # symmetric padding (k-1)/2 at stride 1 is exactly "same"
    else:
        padding = "valid"
        pad = get(layers.ZeroPadding2D, f"{name}_pad", c.padding)
    conv = get(Conv2D, name, c.out_channels, c.kernel, strides=c.stride, padding=padding,
               activation=activation)
    if pad is None:
        return conv
    return lambda h: conv(pad(h))


def _fire(fire: S.Fire, h, get):
    """squeeze+ReLU -> [expand1x1+ReLU, expand3x3+ReLU] concatenated (1x1 first) -> + bypass."""
    s = _conv(fire.squeeze, get, "relu")(h)
    e1, e3 = _conv(fire.expand1x1, get, "relu")(s), _conv(fire.expand3x3, get, "relu")(s)
    out = get(layers.Concatenate, f"{fire.name}_concat", axis=-1)([e1, e3])
    if fire.bypass is not None:
        add = get(layers.Add, f"{fire.name}_add")
        out = add([out, h if fire.bypass == "identity" else _conv(fire.bypass_conv, get)(h)])
    return out


def _layers(spec_layers, h, get, training=None):
    """Run (or build) ``spec_layers`` on ``h``.

    ``get(cls, name, *args, **kwargs)`` is the Keras layer called ``name``: a new
    ``cls(*args, name=name, dtype=..., **kwargs)`` while :func:`build` traces the graph,
    ``model.get_layer(name)`` when :class:`SqueezeNetModel` runs the graph itself."""
    for layer in spec_layers:
        if isinstance(layer, S.Conv):
            h = _conv(layer, get)(h)
        elif isinstance(layer, S.ReLU):
            h = get(layers.ReLU, layer.name)(h)
        elif isinstance(layer, S.MaxPool):
            pool = CeilMaxPooling2D if layer.ceil_mode else layers.MaxPooling2D
            h = get(pool, layer.name, layer.kernel, layer.stride)(h)
        elif isinstance(layer, S.Fire):
            h = _fire(layer, h, get)
        elif isinstance(layer, S.Dropout):
            h = get(layers.Dropout, layer.name, layer.rate)(h, training=training)
        elif isinstance(layer, S.GlobalAvgPool):
            h = get(ExactGlobalAveragePooling2D, layer.name)(h)
        else:  # pragma: no cover - the spec has no other layer kinds
            raise TypeError(f"unknown layer {layer!r}")
    return h


def _per_image_head(spec_layers) -> int:
    """How many leading layers :class:`SqueezeNetModel` maps over the images on JAX/CPU:
    through the second max pool, where the activations are large (conv1's output is 3 MB
    per image at 224, 100 MB at batch 32).  Batched, XLA:CPU streams each of them through
    memory between its convolution, ReLU, pooling and concatenation kernels; one image at
    a time they stay in cache.  Measured for 1_1 at batch 32 on 2 cores: 94 -> 127 img/s,
    bit-identical logits."""
    return S.through_pool(spec_layers, 2)


@keras.saving.register_keras_serializable(package="squeezenet_ports")
class SqueezeNetModel(keras.Model):
    """The functional model :func:`build` returns (same layers, weights and files as a
    plain functional ``keras.Model``).  Its ``call`` is Keras' own graph run, except for
    inference with a batch on the JAX backend on CPU, where the layers up to the second
    pool run image by image (``ops.map``, see :func:`_per_image_head`) and the rest
    batched; the logits are the same."""

    def call(self, inputs, training=None, mask=None, **kwargs):
        head = 0
        if (_BACKEND == "jax" and not training and mask is None and not kwargs
                and len(getattr(inputs, "shape", ())) == 4 and (inputs.shape[0] or 1) > 1
                and str(keras.distribution.list_devices()[0]).startswith("cpu")):
            spec_layers = variant_of(self).layers()
            head = _per_image_head(spec_layers)
        if not head:
            return super().call(inputs, training=training, mask=mask, **kwargs)

        def get(cls, name, *args, **kwargs):
            return self.get_layer(name)

        h = ops.map(lambda xi: _layers(spec_layers[:head], xi[None], get)[0], inputs)
        return _layers(spec_layers[head:], h, get, training=False)


def build(variant: Variant, dtype="float32") -> keras.Model:
    """The functional model for ``variant``: NHWC ``[N, H, W, 3]`` -> ``[N, classes]``."""
    dtype = np.dtype(dtype).name
    inputs = keras.Input(shape=(None, None, 3), dtype=dtype, name="input")

    def make(cls, name, *args, **kwargs):
        return cls(*args, name=name, dtype=dtype, **kwargs)

    outputs = _layers(variant.layers(), inputs, make)
    model = SqueezeNetModel(inputs, outputs, name=model_name(variant))
    model.variant = variant
    return model


def SqueezeNet(version: str = "1_1", num_classes: int = 1000, final_conv_padding: int = 0,
               bypass: str = "none", dtype="float32") -> keras.Model:
    """A freshly initialised Keras SqueezeNet for the given variant (``model.variant``)."""
    return build(Variant(version, num_classes, final_conv_padding, bypass), dtype)


def variant_of(model: keras.Model) -> Variant:
    """The :class:`Variant` of a ``ports.keras`` model: ``model.variant``, or, for a model
    restored by ``keras.models.load_model`` (which keeps no Python attributes), read back
    from its layers and checked against the full layer table."""
    v = getattr(model, "variant", None)
    if isinstance(v, Variant):
        return v
    from ..formats.keras import keras_layers

    actual = [layer.name for layer in getattr(model, "layers", [])]
    names = set(actual)
    try:
        kernel = tuple(model.get_layer("conv1").kernel.shape)
        classes = int(model.get_layer("conv10").kernel.shape[-1])
        version = {(k, k, 3, f): ver for ver, (f, k, _) in S.STEM.items()}[kernel]
        v = Variant(version, classes, 1 if "conv10_pad" in names else 0,
                    "complex" if "fire2_bypass" in names else
                    "simple" if "fire3_add" in names else "none")
    except (ValueError, KeyError, AttributeError):
        v = None
    if v is None or actual != [k.name for k in keras_layers(v)]:
        raise TypeError("expected a SqueezeNet model built by ports.keras")
    model.variant = v
    return v


def load_weights(model: keras.Model, weights: Weights) -> keras.Model:
    """Copy canonical weights in (strict: every name and shape checked first)."""
    variant = variant_of(model)
    check(weights, variant)
    for canonical, name in conv_layer_names(variant).items():
        layer = model.get_layer(name)
        dtype = layer.kernel.dtype
        layer.set_weights([oihw_to_hwio(weights[f"{canonical}.weight"]).astype(dtype),
                           weights[f"{canonical}.bias"].astype(dtype)])
    return model


def to_weights(model: keras.Model, *, preprocessing: str = "none",
               source: str = "ports.keras") -> Weights:
    """The model's parameters as canonical float32 weights (OIHW)."""
    variant = variant_of(model)
    tensors = {}
    for canonical, name in conv_layer_names(variant).items():
        kernel, bias = model.get_layer(name).get_weights()
        tensors[f"{canonical}.weight"] = hwio_to_oihw(np.asarray(kernel, np.float32))
        tensors[f"{canonical}.bias"] = np.asarray(bias, np.float32)
    return make(tensors, variant, preprocessing=preprocessing, source=source)


def load(source, dtype: str = "float32") -> keras.Model:
    """Model from a weights file of any supported format (``.weights.h5`` included) or
    :class:`Weights`; the architecture comes from the weights' metadata."""
    from ..formats import read

    weights = source if isinstance(source, Weights) else read(source)
    return load_weights(build(weights.variant, dtype), weights)


def predict(model: keras.Model, x, batch_size: int = 8) -> np.ndarray:
    """Canonical NCHW input -> logits ``[N, classes]`` as NumPy, in the model's dtype."""
    x = as_input(x, variant_of(model))
    dtype = model.inputs[0].dtype
    outs = []
    for i in range(0, len(x), batch_size):
        batch = nchw_to_nhwc(x[i:i + batch_size]).astype(dtype)  # [N,3,H,W] -> [N,H,W,3]
        # predict_on_batch: inference mode (dropout off), compiled by the backend (jax.jit,
        # tf.function); it returns NumPy.
        outs.append(np.asarray(model.predict_on_batch(batch)))
    return np.concatenate(outs, axis=0)
