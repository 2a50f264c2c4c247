"""Flax NNX port: goldens, fixtures, the msgpack codec against real Flax, jit tracing."""

import jax
import numpy as np
import pytest
from flax import (
    nnx,  # noqa: E402
    serialization,  # noqa: E402
)

from conformance import golden  # noqa: E402
from conformance.harness import assert_agrees, tolerance  # noqa: E402
from conformance.inputs import inputs  # noqa: E402
from conformance.registry import PORTS  # noqa: E402
from conformance.suite import PortSuite  # noqa: E402

PORTS["flax"].import_module()  # checks JAX_ENABLE_X64=1 before JAX computes anything

import ports.flax as pf  # noqa: E402
import ports.flax.fast as pff  # noqa: E402
from ports import spec as S  # noqa: E402
from ports.formats import flax as codec  # noqa: E402
from ports.formats import read  # noqa: E402
from ports.layouts import nchw_to_nhwc, oihw_to_hwio  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant  # noqa: E402


class TestFlax(PortSuite):
    port = "flax"


# Both versions, both paddings, every bypass kind among them; complex has conv bypasses.
CODEC_VARIANTS = ["1_0-p1-complex", "1_1-p0-none", "1_1-p1-simple"]


@pytest.mark.parametrize("vid", CODEC_VARIANTS)
def test_codec_file_restores_in_real_flax(tmp_path, vid):
    """A file our framework-free writer made, restored with Flax's own API into a fresh
    NNX model, gives the golden logits."""
    v = Variant.from_id(vid)
    path = tmp_path / "w.msgpack"
    codec.write(seeded_weights(v), path)
    state = serialization.msgpack_restore(path.read_bytes())
    meta = state.pop("__metadata__")
    assert Variant.from_meta(meta) == v
    model = pf.SqueezeNet(v.version, v.num_classes, v.final_conv_padding, v.bypass,
                          dtype="float32", rngs=nnx.Rngs(1))
    nnx.update(model, state)
    x = inputs(227)[:2]
    logits = model(jax.numpy.asarray(nchw_to_nhwc(x)))
    atol, rtol = tolerance("flax", "float32")
    assert_agrees(np.asarray(logits), golden.load(vid, 227)[:2], atol, rtol,
                  f"Flax-restored {vid}")


@pytest.mark.parametrize("vid", CODEC_VARIANTS)
def test_real_flax_file_round_trips_bit_exact(tmp_path, vid):
    """A file Flax itself saved (``msgpack_serialize`` of the NNX state) converts to canonical
    weights bit-exactly, and our writer gives back Flax's very bytes (without metadata)."""
    v = Variant.from_id(vid)
    model = pf.SqueezeNet(v.version, v.num_classes, v.final_conv_padding, v.bypass,
                          rngs=nnx.Rngs(7))  # Flax's own initialisation, not ours
    blob = serialization.msgpack_serialize(nnx.to_pure_dict(nnx.state(model)))
    path = tmp_path / "flax_saved.msgpack"
    path.write_bytes(blob)
    w = read(path, variant=v)  # final_conv_padding / simple bypass are not in the shapes
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for name, key in codec.key_table(v).items():
        node = state
        for part in key.split("/"):
            node = node[part]
        want = np.asarray(node)
        got = w.tensors[name]
        got = oihw_to_hwio(got) if key.endswith("/kernel") else got
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), key
    assert codec.encode(w, metadata=False) == blob
    # and our writer's file (with metadata) reloads into an equal model
    out = tmp_path / "ours.msgpack"
    codec.write(w, out)
    again = pf.load(out)
    for a, b in zip(jax.tree_util.tree_leaves(nnx.state(again, nnx.Param)),
                    jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_real_flax_file_without_variant_infers_shapes(tmp_path):
    model = pf.SqueezeNet("1_0", 10, 0, "complex")
    path = tmp_path / "m.msgpack"
    path.write_bytes(serialization.msgpack_serialize(nnx.to_pure_dict(nnx.state(model))))
    w = read(path)
    assert w.variant == Variant("1_0", 10, 0, "complex")


def test_to_weights_round_trip():
    v = Variant("1_1", 1000, 0, "complex")
    w = seeded_weights(v)
    back = pf.to_weights(pf.load(w))
    assert all(np.array_equal(back.tensors[k], w.tensors[k]) for k in w.tensors)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jitted_forward_is_not_retraced(dtype, monkeypatch):
    """Repeated calls with one batch shape trace the jitted forward once; a second model
    of the same architecture reuses the compiled function.  (The forward's Python body,
    which rebuilds the model with ``nnx.merge``, runs only while JAX traces it.)"""
    traces, merge = [], nnx.merge

    def counting_merge(*args, **kwargs):
        traces.append(args[0])
        return merge(*args, **kwargs)
    monkeypatch.setattr(nnx, "merge", counting_merge)
    v = Variant("1_1", 1000, 0, "simple")
    x = inputs(224)[:2]
    model = pf.load(seeded_weights(v), dtype=dtype)
    first = pf.predict(model, x)
    before = len(traces)
    for _ in range(3):
        np.testing.assert_array_equal(pf.predict(model, x), first)
    other = pf.load(seeded_weights(v), dtype=dtype)
    pf.predict(other, x)
    np.testing.assert_array_equal(np.asarray(pf.jitted(other)(jax.numpy.asarray(
        nchw_to_nhwc(x).astype(dtype)))), first)  # the bench's entry point: same function
    assert len(traces) == before, "jitted forward re-traced for a fixed batch shape"
    pf.predict(model, x[:1])  # a new batch shape is one new trace
    assert len(traces) == before + 1


def test_float64_logits_are_float64():
    v = Variant("1_0", 1000, 1, "none")
    out = pf.predict(pf.load(seeded_weights(v), dtype="float64"), inputs(227)[:1])
    assert out.dtype == np.float64


@pytest.mark.parametrize("max_pool", [pf.max_pool, pff.max_pool], ids=["plain", "fast"])
def test_ceil_pool_pads_with_minus_inf(max_pool):
    """Negative pool inputs (possible after a complex bypass): the overhanging window's
    padded cells must never win."""
    x = -np.arange(1, 1 + 2 * 6 * 6, dtype=np.float32).reshape(1, 6, 6, 2) - 1.0
    out = np.asarray(max_pool(jax.numpy.asarray(x), S.MaxPool("p")))
    assert out.shape == (1, 3, 3, 2)  # ceil((6 - 3) / 2) + 1 = 3
    assert out[0, 2, 2, 0] == x[0, 4:6, 4:6, 0].max()


@pytest.mark.parametrize("side", [3, 4, 6, 7, 13, 54, 55, 56, 111, 113])
def test_fast_pool_equals_plain_pool(side):
    """The strided-maxima pool is the plain ``reduce_window`` pool, bit for bit, at every
    edge case of the ceil rounding (odd and even sides, one window, the grids of 224/227)."""
    rng = np.random.default_rng(side)
    x = jax.numpy.asarray(rng.normal(size=(2, side, side + 1, 5)))  # negative values too
    pool = S.MaxPool("p")
    want = np.asarray(pf.max_pool(x, pool))
    assert want.shape == (2, pool.out_size(side), pool.out_size(side + 1), 5)
    np.testing.assert_array_equal(np.asarray(pff.max_pool(x, pool)), want)


def test_flax_conv_padding_is_explicit():
    """conv1 has VALID geometry (Flax's default SAME would give 112/114, not 109/113)."""
    for version, side in (("1_0", 109), ("1_1", 111)):
        m = pf.SqueezeNet(version)
        assert m.conv1.padding == ((0, 0), (0, 0))
        assert Variant(version).feature_sizes(224)["conv1"] == side


def test_input_is_validated():
    model = pf.SqueezeNet("1_1")
    with pytest.raises(ValueError, match="NHWC"):
        pf.predict(model, np.zeros((1, 224, 224, 3), np.float32))


@pytest.mark.parametrize("vid", ["1_0-p1-complex", "1_1-p0-simple"])
def test_per_image_head_equals_batched_forward(vid):
    """On CPU the fast model runs the layers through the second pool image by image
    (``lax.map``); the logits equal those of running every layer batched."""
    v = Variant.from_id(vid)
    model = pf.load(seeded_weights(v), dtype="float64")
    assert isinstance(model, pff.SqueezeNet)
    x = jax.numpy.asarray(nchw_to_nhwc(inputs(227)[:3]).astype("float64"))
    head = pff.per_image_head(v.layers())
    assert head == [type(layer).__name__ for layer in v.layers()].index("MaxPool", 3) + 1
    if jax.default_backend() == "cpu":
        assert "scan" in str(jax.make_jaxpr(model)(x)), "the head is not mapped on CPU"
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model.run(v.layers(), x)),
                               rtol=0, atol=1e-11)


def test_pointwise_conv_is_a_matmul_of_the_same_parameters():
    rng = np.random.default_rng(3)
    x = jax.numpy.asarray(rng.normal(size=(2, 5, 6, 7)))
    conv = pff.Conv(7, 3, kernel_size=(1, 1), padding=((0, 0), (0, 0)), dtype="float64",
                    param_dtype="float64", rngs=nnx.Rngs(0))
    assert conv.pointwise
    assert not pff.Conv(7, 3, kernel_size=(3, 3), padding=((1, 1), (1, 1)),
                        rngs=nnx.Rngs(0)).pointwise
    np.testing.assert_allclose(np.asarray(conv(x)), np.asarray(nnx.Conv.__call__(conv, x)),
                               rtol=0, atol=1e-12)


# Both versions, both paddings, every bypass kind; complex at 227 (every pool pads there).
FAST_CASES = [("1_1-p0-complex", 227), ("1_0-p1-complex", 227), ("1_1-p1-simple", 224),
              ("1_0-p0-none", 224)]


@pytest.mark.parametrize("vid,size", FAST_CASES)
def test_fast_model_equals_reference_model(vid, size):
    """``load(..., fast=True)`` (the default: tuned layers, per-image head on CPU) computes
    the plain network of ``fast=False``: float64 logits agree to 1e-11 relative, and the
    two share every parameter path (the codec's key table)."""
    v = Variant.from_id(vid)
    w = seeded_weights(v)
    fast, plain = pf.load(w, "float64"), pf.load(w, "float64", fast=False)
    assert type(fast) is pff.SqueezeNet and type(plain) is pf.SqueezeNet
    paths = {"/".join(p) for p in nnx.traversals.flatten_mapping(
        nnx.to_pure_dict(nnx.state(plain, nnx.Param)))}
    assert paths == set(codec.key_table(v).values())
    assert jax.tree_util.tree_structure(nnx.state(fast, nnx.Param)) == \
        jax.tree_util.tree_structure(nnx.state(plain, nnx.Param))
    x = inputs(size)[:3]
    want = pf.predict(plain, x)
    got = pf.predict(fast, x)
    assert got.dtype == want.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11 * np.abs(want).max())
    np.testing.assert_allclose(want, golden.load(vid, size)[:3], rtol=1e-10,
                               atol=1e-10 * np.abs(want).max())
