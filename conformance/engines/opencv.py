"""OpenCV DNN (``opencv-python-headless`` 4.x) as an external Caffe engine.

The weights are written with the project's own Caffe writer (:mod:`ports.formats.caffe`:
a V2 ``.caffemodel`` and its deploy ``.prototxt``) and loaded with
``cv2.dnn.readNetFromCaffe``; OpenCV then computes the network with its own kernels, so
agreement tests both the writer and the architecture the files express (ceil pooling,
conv10 padding, concat order, global average pooling).  OpenCV 5 removed the Caffe
importer, hence the 4.x pin.  Float32 only.

    >>> model = load("w.safetensors")          # or canonical Weights
    >>> logits = predict(model, x)             # x: [N, 3, H, W] float32 -> [N, classes]
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ports import _api
from ports import spec as S
from ports._predict import as_input
from ports.formats import caffe
from ports.spec import Variant

LOGITS_BLOB = "pool10"


@dataclass
class OpenCVModel:
    """An OpenCV ``cv2.dnn.Net`` read from our Caffe files, and the variant it computes."""

    net: object
    variant: Variant


def load(source, dtype: str = "float32", *, variant=None, fast: bool = True) -> OpenCVModel:
    """Model from canonical :class:`Weights` or a weights file of any supported format
    (``fast``: OpenCV fuses layers itself, always)."""
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"OpenCV DNN runs Caffe nets in float32 only, not {dtype}")
    weights = _api.weights(source, variant)
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise RuntimeError(f"OpenCV {cv2.__version__} has no Caffe importer (removed in 5.x)")
    with tempfile.TemporaryDirectory(prefix="squeezenet-opencv-") as tmp:
        model_path = Path(tmp) / "squeezenet.caffemodel"
        caffe.write(weights, model_path)
        net = cv2.dnn.readNetFromCaffe(str(caffe.prototxt_path(model_path)), str(model_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return OpenCVModel(net, weights.variant)


def predict(model: OpenCVModel, x, batch_size: int = _api.BATCH_SIZE) -> np.ndarray:
    """Canonical NCHW input ``[N, 3, H, W]`` -> logits ``[N, classes]`` (blob ``pool10``)."""
    x = as_input(x, model.variant).astype(np.float32)
    outs = []
    for batch in _api.batches(x, batch_size):
        model.net.setInput(np.ascontiguousarray(batch))
        out = model.net.forward(LOGITS_BLOB)          # [n, classes, 1, 1]
        outs.append(np.asarray(out, np.float32).reshape(len(batch), -1))
    return np.concatenate(outs, axis=0)


# --- the layer trace ----------------------------------------------------------------------
def activation_layers(variant: Variant) -> dict[str, str]:
    """Activation name -> the layer of our Caffe deploy net whose output holds it (the
    writer's names: ReLUs run in place, so a conv's activation is its ReLU layer's output,
    ``relu_conv1``, ``fire2/relu_squeeze1x1``; ``fire2/concat`` or ``fire2/bypass_sum``)."""
    out = {}
    for layer in variant.layers():
        if isinstance(layer, S.ReLU):
            out[layer.of] = f"relu_{caffe.caffe_layer_name(layer.of)}"
        elif isinstance(layer, S.MaxPool):
            out[layer.name] = layer.name
        elif isinstance(layer, S.Fire):
            for c, what in ((layer.squeeze, "squeeze1x1"), (layer.expand1x1, "expand1x1"),
                            (layer.expand3x3, "expand3x3")):
                out[c.name] = f"{layer.name}/relu_{what}"
            if layer.bypass_conv is not None:
                out[layer.bypass_conv.name] = caffe.caffe_layer_name(layer.bypass_conv.name)
            out[layer.name] = f"{layer.name}/{'concat' if layer.bypass is None else 'bypass_sum'}"
        elif isinstance(layer, S.GlobalAvgPool):
            out[layer.name] = out["logits"] = LOGITS_BLOB
    return out


def _forward(model: OpenCVModel, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    layers = activation_layers(model.variant)
    known = set(model.net.getLayerNames())
    missing = [n for n in names if layers[n] not in known]
    if missing:  # the writer and this table disagree: a bug, said plainly
        raise RuntimeError(f"the Caffe net lacks the layers of {missing}")
    wanted = list(dict.fromkeys(layers[n] for n in names))
    model.net.setInput(np.ascontiguousarray(x, dtype=np.float32))
    values = dict(zip(wanted, model.net.forward(wanted)))
    return {n: np.asarray(values[layers[n]], np.float32).reshape(len(x), -1)
            if n in ("pool10", "logits") else np.asarray(values[layers[n]], np.float32)
            for n in names}


def activations(model: OpenCVModel, x, layers=None) -> dict[str, np.ndarray]:
    """``{name: array}`` as OpenCV computes them, every requested layer an output (OpenCV
    then keeps those layers unfused)."""
    names = _api.activation_names(model.variant, layers)
    return _forward(model, as_input(x, model.variant), names)


def marking_effect(model: OpenCVModel, x) -> dict:
    """How far the logits move when every traced layer is requested as an output."""
    x = as_input(x, model.variant)
    marked = _forward(model, x, model.variant.activation_names())["logits"]
    return {"note": "every traced layer requested as an output: OpenCV runs those unfused",
            "marked_logits_max_abs": float(np.abs(marked - predict(model, x)).max())}
