"""What the bench measures: SqueezeNet 1.1 (the fast one), 224x224, float32, batch 1 and 32,
against ONNX Runtime."""

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
