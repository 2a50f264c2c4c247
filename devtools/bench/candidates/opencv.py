"""OpenCV DNN: ``cv2.dnn`` from our Caffe files, OpenCV backend, CPU target."""

from __future__ import annotations

import os

import cv2
import numpy as np


def candidates(port: str, mod, weights, quick: bool) -> list:
    if os.environ.get("OMP_NUM_THREADS"):
        cv2.setNumThreads(int(os.environ["OMP_NUM_THREADS"]))
    model = mod.load(weights)

    def cv_run(x):
        x = np.ascontiguousarray(x)

        def run():
            model.net.setInput(x)
            return np.asarray(model.net.forward("pool10")).reshape(len(x), -1)
        return run
    return [("cv2.dnn OpenCV backend", cv_run)]
