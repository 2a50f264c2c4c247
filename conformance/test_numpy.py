"""The NumPy reference against its own stored goldens (float64): proves the goldens are
reproducible on this machine and NumPy version."""

import numpy as np
import pytest

from conformance import golden, suite
from conformance.inputs import SIZES, digest
from conformance.suite import PortSuite, TraceSuite
from ports import numpy as ref
from ports.spec import Variant, all_variants


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


class _Reads(dict):
    """Parameters that remember which names were read."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.read: list[str] = []

    def __getitem__(self, name: str):
        self.read.append(name)
        return super().__getitem__(name)


@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: v.id)
def test_the_literal_network_is_the_spec(variant):
    """The reference's network (``ports.numpy.network``, written out as SqueezeNet) against
    the spec, for all 12 variants: it reads every parameter of ``Variant.params()`` and
    nothing else (each used at its spec shape: any other would not multiply), records the
    spec's activation names in the spec's order, and every map has the spec's size (ceil-mode
    pools, conv10's padding) at 41x41, where a floor-mode pool1 would differ in both
    versions."""
    model = ref.SqueezeNet(variant)
    model.params = _Reads(model.params)
    seen: dict[str, tuple] = {}

    def record(name, h):
        seen[name] = h.shape
        return h

    ref.forward(model, np.zeros((1, 3, suite.SPEC_SIZE, suite.SPEC_SIZE)), record)
    assert sorted(set(model.params.read)) == sorted(variant.params())
    assert sorted(n for n in seen if ":" in n) == sorted(
        f"{c.name}:z" for c in variant.convs() if not c.name.endswith(".bypass"))
    suite.assert_network_is_spec(variant, {k: v.shape for k, v in model.params.items()},
                                 {n: s for n, s in seen.items() if ":" not in n})
    assert seen["logits"] == (1, variant.num_classes)
