"""The NumPy reference against its own stored goldens (float64): proves the goldens are
reproducible on this machine and NumPy version."""

import numpy as np

from conformance import golden
from conformance.inputs import SIZES, digest
from conformance.suite import PortSuite, TraceSuite
from ports.spec import Variant


class TestNumpy(PortSuite):
    port = "numpy"


def test_golden_inputs_and_weights_are_the_recorded_ones():
    for vid in golden.VARIANTS:
        with np.load(golden.path(vid)) as data:
            for size in SIZES:
                assert str(data[f"inputs{size}"]) == digest(size), (vid, size)
            assert str(data["weights"]) == golden.weights_digest(Variant.from_id(vid)), vid


class TestNumpyTrace(TraceSuite):
    port = "numpy"
    paths = ("reference",)  # the oracle has one path
