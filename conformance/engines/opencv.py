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

from ports._predict import as_input
from ports.canonical import Weights
from ports.formats import caffe, read
from ports.spec import Variant

LOGITS_BLOB = "pool10"


@dataclass
class OpenCVModel:
    """An OpenCV ``cv2.dnn.Net`` read from our Caffe files, and the variant it computes."""

    net: object
    variant: Variant


def load(source, dtype: str = "float32") -> OpenCVModel:
    """Model from canonical :class:`Weights` or a weights file of any supported format."""
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"OpenCV DNN runs Caffe nets in float32 only, not {dtype}")
    weights = source if isinstance(source, Weights) else read(source)
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise RuntimeError(f"OpenCV {cv2.__version__} has no Caffe importer (removed in 5.x)")
    with tempfile.TemporaryDirectory(prefix="squeezenet-opencv-") as tmp:
        model_path = Path(tmp) / "squeezenet.caffemodel"
        caffe.write(weights, model_path)
        net = cv2.dnn.readNetFromCaffe(str(caffe.prototxt_path(model_path)), str(model_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return OpenCVModel(net, weights.variant)


def predict(model: OpenCVModel, x, batch_size: int = 8) -> np.ndarray:
    """Canonical NCHW input ``[N, 3, H, W]`` -> logits ``[N, classes]`` (blob ``pool10``)."""
    x = as_input(x, model.variant).astype(np.float32)
    outs = []
    for i in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[i:i + batch_size])
        model.net.setInput(batch)
        out = model.net.forward(LOGITS_BLOB)          # [n, classes, 1, 1]
        outs.append(np.asarray(out, np.float32).reshape(len(batch), -1))
    return np.concatenate(outs, axis=0)
