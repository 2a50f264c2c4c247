"""``predict`` refuses bad inputs with a clear message (``ports._predict.as_input``, shared by
every port), checked through the NumPy reference's ``predict``."""

from __future__ import annotations

import numpy as np
import pytest

from ports import numpy as ref
from ports._predict import as_input, min_side
from ports.spec import Variant

V11 = Variant("1_1", 10)
V10 = Variant("1_0", 10, 1)


@pytest.fixture(scope="module")
def model():
    return ref.SqueezeNet("1_1", num_classes=10)


def _x(shape, dtype=np.float32, fill=0.5):
    return np.full(shape, fill, dtype=dtype)


# (label, input, regex the message must match): the table in docs/bad-inputs.md comes from
# the same cases (tests/bad_inputs_doc.py).
def bad_inputs() -> list[tuple[str, object, str]]:
    nan = _x((1, 3, 32, 32))
    nan[0, 1, 2, 3] = np.nan
    inf = _x((2, 3, 32, 32))
    inf[1, 0, 0, 0] = -np.inf
    return [
        ("rank 3: one image without a batch axis", _x((3, 32, 32)),
         r"^x: expected a 4-D NCHW array \[N, 3, H, W\], got 3-D shape \(3, 32, 32\) "
         r"\(one image\? add a batch axis: x\[None\]\)$"),
        ("rank 2", _x((32, 32)), r"^x: expected a 4-D NCHW array .*got 2-D shape \(32, 32\)$"),
        ("rank 5", _x((1, 1, 3, 32, 32)), r"got 5-D shape \(1, 1, 3, 32, 32\)$"),
        ("a scalar", 1.0, r"got 0-D shape \(\)$"),
        ("NHWC layout", _x((1, 32, 32, 3)),
         r"^x: expected 3 channels in axis 1 \(NCHW\), got shape \(1, 32, 32, 3\) \(this looks "
         r"like NHWC; transpose with x.transpose\(0, 3, 1, 2\)\)$"),
        ("1 channel (grayscale)", _x((1, 1, 32, 32)),
         r"^x: expected 3 channels in axis 1 \(NCHW\), got shape \(1, 1, 32, 32\)$"),
        ("4 channels (RGBA)", _x((1, 4, 32, 32)), r"got shape \(1, 4, 32, 32\)$"),
        ("uint8 pixels", _x((1, 3, 32, 32), np.uint8, 128),
         r"^x: expected a float array, got dtype uint8 \(raw pixels\? convert with "
         r"ports.preprocess or x.astype\(np.float32\)\)$"),
        ("int64", _x((1, 3, 32, 32), np.int64, 1), r"got dtype int64 \(raw pixels"),
        ("bool", _x((1, 3, 32, 32), np.bool_, True), r"got dtype bool \(raw pixels"),
        ("complex64", _x((1, 3, 32, 32), np.complex64, 1), r"got dtype complex64$"),
        ("strings", np.full((1, 3, 32, 32), "a"), r"got dtype <U1$"),
        ("ragged nested lists", [[[[0.0]]], [[[0.0, 1.0]]]], r"^x: cannot be read as an array"),
        ("empty batch", _x((0, 3, 32, 32)), r"^x: empty batch \(shape \(0, 3, 32, 32\)\)$"),
        ("zero-sized image", _x((1, 3, 0, 0)),
         r"^x: spatial size 0x0 is too small for SqueezeNet 1_1 \(input size must be "
         r"positive, got 0; the smallest side is 17\)$"),
        ("16x16 image (v1.1 needs 17)", _x((1, 3, 16, 16)),
         r"^x: spatial size 16x16 is too small for SqueezeNet 1_1 \(input too small: "
         r"\w+ would produce an empty map; the smallest side is 17\)$"),
        ("rectangular 224x8", _x((1, 3, 224, 8)), r"^x: spatial size 224x8 is too small"),
        ("one NaN", nan, r"^x: 1 non-finite values \(NaN or infinity\), the first at index "
                         r"\(0, 1, 2, 3\)$"),
        ("-inf in the second image", inf, r"^x: 1 non-finite values .* \(1, 0, 0, 0\)$"),
    ]


@pytest.mark.parametrize("label,x,message", bad_inputs(), ids=[c[0] for c in bad_inputs()])
def test_predict_refuses_bad_input_with_a_clear_message(model, label, x, message):
    with pytest.raises(ValueError, match=message):
        ref.predict(model, x)


def test_smallest_sides_are_exact():
    for variant in (V11, V10, Variant("1_0", 10, 0, "complex")):
        side = min_side(variant)
        as_input(_x((1, 3, side, side)), variant)
        with pytest.raises(ValueError, match="too small"):
            as_input(_x((1, 3, side - 1, side - 1)), variant)
    assert min_side(V10) == 21 and min_side(V11) == 17


def test_good_inputs_pass_unchanged(model):
    for dtype in (np.float16, np.float32, np.float64):
        x = _x((2, 3, 17, 19), dtype)
        assert as_input(x, V11) is x or np.shares_memory(as_input(x, V11), x)
    out = ref.predict(model, _x((2, 3, 17, 17)))
    assert out.shape == (2, 10) and np.isfinite(out).all()
    # Nested lists of floats are fine too.
    assert as_input(_x((1, 3, 17, 17)).tolist(), V11).shape == (1, 3, 17, 17)


def test_the_first_problem_is_reported(model):
    """Checks run in a fixed order: shape, then dtype, then batch, size, values."""
    with pytest.raises(ValueError, match="4-D"):
        ref.predict(model, _x((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        ref.predict(model, _x((0, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="empty batch"):
        ref.predict(model, _x((0, 3, 8, 8)))
