"""What the bench measures: SqueezeNet 1.1 (the fast one), 224x224, batch 1 and 32, against
ONNX Runtime's float32; each port in float32, and as ``PORT@bfloat16`` in each reduced
precision it computes (``conformance.registry``: ``reduced``)."""

from __future__ import annotations

import os
from pathlib import Path

from conformance.harness import ROOT
from conformance.registry import PORTS

OUT = Path(os.environ.get("SQUEEZENET_BENCH", ROOT / "build" / "bench"))
REFERENCE = "onnxruntime"
VARIANT_ID = "1_1-p0-none"
SIZE = 224
BATCHES = (1, 32)
QUICK_BATCHES = (1, 4)  # --quick (CI): proves every port runs, batched and not; no timing
DEFAULT_PORTS = [p for p in PORTS if p != "numpy"]  # the float64 oracle is not meant to be fast
DEFAULT_PORTS += [f"{p}@{d}" for p in DEFAULT_PORTS for d in PORTS[p].reduced]
# --quick (CI) proves each candidate module in each precision: the Keras backends share one
# module, so one of them in bfloat16 (keras-torch, the quickest to start) stands for all three
QUICK_PORTS = [p for p in DEFAULT_PORTS
               if p not in ("keras-tf@bfloat16", "keras-jax@bfloat16")]


def split(entry: str) -> tuple[str, str]:
    """``"torch@bfloat16"`` -> ``("torch", "bfloat16")``; ``"torch"`` -> ``("torch",
    "float32")``."""
    port, _, dtype = entry.partition("@")
    return port, dtype or "float32"


def unknown(entry: str) -> bool:
    """Not a port, or a precision the port does not compute."""
    port, dtype = split(entry)
    return port not in PORTS or dtype not in ("float32",) + PORTS[port].reduced
