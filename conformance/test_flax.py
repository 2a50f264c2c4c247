"""Flax NNX port: goldens, fixtures, the msgpack codec against real Flax, jit tracing."""

import jax
import numpy as np
import pytest
from flax import (
    nnx,  # noqa: E402
    serialization,  # noqa: E402
)

from conformance import frozen, golden, suite  # noqa: E402
from conformance.harness import assert_agrees, tolerance  # noqa: E402
from conformance.inputs import inputs  # noqa: E402
from conformance.registry import PORTS  # noqa: E402
from conformance.suite import PATH_CASES, DropoutSuite, PortSuite, TraceSuite  # noqa: E402

PORTS["flax"].import_module()  # checks JAX_ENABLE_X64=1 before JAX computes anything

import ports.flax as pf  # noqa: E402
import ports.flax.fast as pff  # noqa: E402
from ports import spec as S  # noqa: E402
from ports.formats import flax as codec  # noqa: E402
from ports.formats import read  # noqa: E402
from ports.layouts import hwio_to_oihw, nchw_to_nhwc, oihw_to_hwio  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant  # noqa: E402


class TestFlax(PortSuite):
    port = "flax"


class TestFlaxTrace(TraceSuite):
    port = "flax"  # paths: the fast model (load's default) and the reference network


class TestFlaxDropout(DropoutSuite):
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
    which rebuilds the model with ``nnx.merge`` from traced values, runs only while JAX
    traces it; ``load`` merges a cached abstract module with no tracers.)"""
    traces, merge = [], nnx.merge

    def counting_merge(*args, **kwargs):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(args[1:])):
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
    head = pff.HEAD[v.version]  # conv1, pool1, these fires, the second pool
    assert head[0] == 2 and v.layers()[S.through_pool(v.layers(), 2) - 1].name == \
        f"pool{head[-1]}"
    if jax.default_backend() == "cpu":
        assert "scan" in str(jax.make_jaxpr(model)(x)), "the head is not mapped on CPU"
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(pf.SqueezeNet.__call__(model, x)),
                               rtol=0, atol=1e-11)


def test_training_runs_every_layer_batched():
    """The image-by-image head is for inference: the gradient ``ports.flax.train`` traces
    for the fast model has no loop (differentiated, the map was 2x slower: train.py), while
    the same model's forward on CPU maps its head."""
    from ports.flax import train as ptrain

    model = pf.load(seeded_weights(Variant.from_id("1_1-p0-simple")), "float32")
    assert isinstance(model, pff.SqueezeNet)
    x, y = ptrain._batch(model, np.random.default_rng(0).normal(size=(2, 3, 40, 40)),
                         np.array([1, 2]))
    graph, state = nnx.split(model)
    step = str(jax.make_jaxpr(
        lambda state: nnx.value_and_grad(ptrain._loss)(nnx.merge(graph, state), x, y))(state))
    assert "scan" not in step and "while" not in step, "training maps the head"
    if jax.default_backend() == "cpu":
        assert "scan" in str(jax.make_jaxpr(model)(x))


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


@pytest.mark.parametrize("vid,size", PATH_CASES)
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


@pytest.mark.parametrize("variant", S.all_variants(), ids=lambda v: v.id)
def test_the_literal_network_is_the_spec(variant):
    """``ports.flax.network`` writes SqueezeNet out; for all 12 variants its parameters are
    the spec's, name for name (through the codec's path table) and shape for shape, and its
    maps have the spec's sizes (ceil-mode pools, conv10's padding) at 41x41, where a
    floor-mode pool1 would differ in both versions, on the plain and the fast path (two
    images: on CPU the fast one maps its head over them)."""
    for build in (pf.SqueezeNet, pff.SqueezeNet):
        model = build(variant, dtype="float64")
        params = {"/".join(p): (hwio_to_oihw if p[-1] == "kernel" else np.asarray)(a).shape
                  for p, a in nnx.traversals.flatten_mapping(
                      nnx.to_pure_dict(nnx.state(model, nnx.Param))).items()}
        table = codec.key_table(variant)
        assert set(table.values()) == set(params)
        acts = pf.activations(model, np.zeros((2, 3, suite.SPEC_SIZE, suite.SPEC_SIZE)))
        suite.assert_network_is_spec(variant, {k: params[v] for k, v in table.items()},
                                     {n: a.shape for n, a in acts.items()})


# --- the trace and training beyond the shared suites ----------------------------------------
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_trace_logits_are_the_forwards_logits(fast):
    """The trace runs the model's own layers (on CPU the fast model's head image by image,
    as its forward does): its logits are predict's, float64, to 1e-12 relative."""
    v = Variant.from_id("1_1-p1-simple")
    model = pf.load(seeded_weights(v), "float64", fast=fast)
    x = inputs(227)[:3]
    want = pf.predict(model, x)
    acts = pf.activations(model, x, ["fire2", "logits"])
    assert acts["fire2"].dtype == acts["logits"].dtype == np.float64
    np.testing.assert_allclose(acts["logits"], want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_dropout_layer_is_the_networks_own_and_off_by_default():
    """drop9 is an ``nnx.Dropout`` at the spec's rate inside the network, deterministic
    (predict and the gradients see the identity), holding no state (the NNX state is the
    codec's parameters alone); ``dropout`` leaves it deterministic."""
    v = Variant("1_1")
    model = pf.load(seeded_weights(v))
    assert isinstance(model.drop9, nnx.Dropout) and model.drop9.rate == S.DROPOUT
    assert model.drop9.deterministic
    paths = {"/".join(p) for p in nnx.traversals.flatten_mapping(
        nnx.to_pure_dict(nnx.state(model)))}
    assert paths == set(codec.key_table(v).values())
    x = np.ones((2, 512, 4, 4), np.float32)
    a, b = pf.dropout(model, x), pf.dropout(model, x)
    np.testing.assert_array_equal(a, b)  # a fixed seed
    assert model.drop9.deterministic


def _caffe_sgd_mistakes(lrs, momentum, weight_decay):
    """optax chains that each get one convention of Caffe's solver wrong (the rate changes
    every step of the poly schedule, so each one gives other steps)."""
    import optax

    rates = jax.numpy.asarray(lrs)

    def schedule(t):
        return rates[t]

    def kernels_only(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: getattr(path[-1], "key", None) == "kernel", params)

    return {
        # PyTorch's convention: t <- m t + (g + wd w), w <- w - lr_t t
        "optax.sgd momentum (rate outside the trace)": optax.chain(
            optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=momentum)),
        # decoupled: the decay added after the rate, wd w instead of lr_t wd w
        "add_decayed_weights after the rate": optax.chain(
            optax.scale_by_schedule(schedule), optax.add_decayed_weights(weight_decay),
            optax.trace(decay=momentum), optax.scale(-1.0)),
        # decoupled, AdamW-style: w <- w - v - lr_t wd w, the decay outside the momentum
        "adamw-style decay outside the momentum": optax.chain(
            optax.scale_by_schedule(schedule), optax.trace(decay=momentum),
            optax.inject_hyperparams(optax.add_decayed_weights)(
                weight_decay=lambda t: weight_decay * rates[t]),
            optax.scale(-1.0)),
        # decay_mult 0 on the biases (Caffe's released prototxts leave it at 1)
        "no decay on the biases": optax.chain(
            optax.add_decayed_weights(weight_decay, mask=kernels_only),
            optax.scale_by_schedule(schedule), optax.trace(decay=momentum),
            optax.scale(-1.0)),
    }


MISTAKE_VARIANT = "1_1-p0-none"
RATE_OUTSIDE = "optax.sgd momentum (rate outside the trace)"


def _mistaken(mistake: str):
    """``train_steps`` (its signature), but with one mistaken optax chain; each step reports
    as its velocity the chain's ``optax.trace`` (``train.optimize``), for the rate outside
    the trace ``lr_t * trace`` (what it subtracted: the most favourable report)."""
    from ports.flax import train

    def run(model, x, labels, lrs, momentum, weight_decay):
        tx = _caffe_sgd_mistakes(lrs, momentum, weight_decay)[mistake]
        steps = train.optimize(model, x, labels, tx, len(lrs))
        if mistake != RATE_OUTSIDE:
            return steps
        return [s._replace(velocity={k: (lr * v).astype(v.dtype) for k, v in s.velocity.items()})
                for s, lr in zip(steps, lrs)]

    return run


@pytest.mark.parametrize("mistake", list(_caffe_sgd_mistakes([1.0], 0.9, 0.0)))
def test_optimizer_convention_mistakes_fail_in_float32(mistake):
    """Issue 27: five float32 poly-rate steps of each wrong optax chain are far outside the
    float32 optimizer bound (1e-6) of Caffe's rule on their own numbers (measured
    optimizer_rel: rate outside the trace 7.4e-2, decay after the rate 1.1e3, AdamW-style
    decay 1.0, no decay on the biases 1.0), while ``train_steps``'s own chain
    (``caffe_sgd``) on the same case passes."""
    suite.mistaken_steps_fail(pf, MISTAKE_VARIANT, _mistaken(mistake), mistake)


# --- Orbax checkpoints (ports.formats.orbax) against real Orbax -------------------------------
import json  # noqa: E402

import orbax.checkpoint as ocp  # noqa: E402  (flax's own checkpointing library)

from ports import formats  # noqa: E402
from ports.formats import orbax as orbax_codec  # noqa: E402


def _model(v: Variant, seed: int = 1):
    return pf.SqueezeNet(v.version, v.num_classes, v.final_conv_padding, v.bypass,
                         rngs=nnx.Rngs(seed))


def _abstract_state(v: Variant):
    """``nnx.state`` of an abstract model, as the Flax guides build a restore target."""
    return nnx.state(nnx.eval_shape(lambda: _model(v)))


def _orbax_save(checkpointer, path, state, **kw) -> None:
    """Save and wait: StandardCheckpointer is asynchronous (the directory appears, renamed
    from a temporary one, when the save is finished)."""
    checkpointer.save(path, state, **kw)
    getattr(checkpointer, "wait_until_finished", lambda: None)()
    checkpointer.close()


def _orbax_logits_agree(model, vid: str, what: str) -> float:
    x = inputs(227)[:2]
    logits = np.asarray(model(jax.numpy.asarray(nchw_to_nhwc(x))))
    want = golden.load(vid, 227)[:2]
    assert_agrees(logits, want, *tolerance("flax", "float32"), what)
    diff = float(np.abs(logits - want).max())
    print(f"{what}: max abs logit difference vs golden {diff:.3g}")
    return diff


@pytest.mark.parametrize("vid", CODEC_VARIANTS)
def test_orbax_restores_our_checkpoint_into_the_nnx_state(tmp_path, vid):
    """A checkpoint our framework-free writer made, restored the Flax guides' way
    (``StandardCheckpointer().restore(path, abstract_state)``), gives the golden logits;
    with a target that has shardings, onto those devices."""
    v = Variant.from_id(vid)
    path = tmp_path / "w.orbax"
    formats.write(seeded_weights(v), path)
    state = ocp.StandardCheckpointer().restore(path, _abstract_state(v))
    model = _model(v, seed=2)
    nnx.update(model, state)
    _orbax_logits_agree(model, vid, f"Orbax-restored {vid}")
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), _abstract_state(v))
    placed = ocp.StandardCheckpointer().restore(path, target)
    leaves = jax.tree_util.tree_leaves(placed)
    assert all(isinstance(a, jax.Array) and a.sharding == device for a in leaves)
    nnx.update(model, placed)
    _orbax_logits_agree(model, vid, f"Orbax-restored {vid} onto {jax.devices()[0]}")
    # Orbax's own metadata API sees the arrays; the custom metadata is ours
    meta = ocp.StandardCheckpointer().metadata(path)
    assert meta.custom_metadata == {"squeezenet": seeded_weights(v).meta}


def test_our_checkpoint_is_the_files_orbax_writes_without_ocdbt(tmp_path):
    """Orbax itself, saving the same NNX state (JAX arrays) with ``use_ocdbt=False,
    use_compression=False``, writes these very bytes (all but the timestamps)."""
    v = Variant("1_0", 10, 1, "complex")
    w = seeded_weights(v)
    state = jax.tree_util.tree_map(jax.numpy.asarray, nnx.state(pf.load(w, fast=False)))
    saver = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False,
                                                         use_compression=False))
    _orbax_save(saver, tmp_path / "theirs", state, custom_metadata={"squeezenet": w.meta})
    ours = orbax_codec.encode(w)
    for rel, data in ours.items():
        theirs = (tmp_path / "theirs" / rel).read_bytes()
        if rel == orbax_codec.CHECKPOINT_METADATA:
            a, b = json.loads(data), json.loads(theirs)
            assert a["custom_metadata"] == b["custom_metadata"]
            continue
        assert data == theirs, rel
    extra = {str(p.relative_to(tmp_path / "theirs")) for p in (tmp_path / "theirs").rglob("*")
             if p.is_file()} - set(ours)
    assert extra <= {"_sharding", "array_metadatas/process_0", "commit_success.txt"}, extra


ORBAX_SAVES = {  # how Orbax is asked to save: its default (OCDBT, zstd) and the others
    "default": lambda: ocp.StandardCheckpointer(),
    "no-ocdbt": lambda: ocp.StandardCheckpointer(use_ocdbt=False),
    "no-ocdbt-uncompressed": lambda: ocp.Checkpointer(
        ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_compression=False)),
    "zarr3": lambda: ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_zarr3=True)),
}


@pytest.mark.parametrize("how", sorted(ORBAX_SAVES))
@pytest.mark.parametrize("vid", CODEC_VARIANTS)
def test_checkpoint_orbax_saved_reads_bit_exact_and_converts_to_every_format(tmp_path, vid,
                                                                              how):
    """``ocp.StandardCheckpointer().save(path, nnx.state(model))`` of a model with Flax's
    own initialisation -> our reader -> every other format -> back, bit-exact."""
    v = Variant.from_id(vid)
    model = _model(v, seed=7)
    path = tmp_path / "ckpt"
    _orbax_save(ORBAX_SAVES[how](), path, nnx.state(model))
    w = formats.read(path, variant=v)  # a directory: detected; padding/simple from variant
    assert "inferred" not in w.meta["source"]
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for name, key in codec.key_table(v).items():
        node = state
        for part in key.split("/"):
            node = node[part]
        got = w.tensors[name]
        got = oihw_to_hwio(got) if key.endswith("/kernel") else got
        assert got.dtype == np.float32 and got.tobytes() == np.asarray(node).tobytes(), key
    if vid == "1_0-p1-complex":  # conv10's padding is not in the shapes; the bypass is
        assert formats.read(path).variant == Variant("1_0", 1000, 0, "complex")
    for fmt in formats.FORMATS:
        if formats.FORMATS[fmt].codebook:  # a codebook per layer: lossy by design
            continue
        out = tmp_path / f"out-{fmt}{formats.FORMATS[fmt].extensions[0]}"
        formats.write(w, out, fmt)
        back = formats.read(out, fmt, variant=v)
        assert all(back[k].tobytes() == w[k].tobytes() for k in w.tensors), fmt


def test_orbax_custom_metadata_carries_the_whole_variant(tmp_path):
    """Saved by Orbax with our metadata in its ``custom_metadata``, nothing needs guessing."""
    v = Variant("1_1", 1000, 1, "simple")
    w = seeded_weights(v)
    path = tmp_path / "ckpt"
    _orbax_save(ocp.StandardCheckpointer(), path, nnx.state(pf.load(w, fast=False)),
                custom_metadata={"squeezenet": w.meta})
    back = formats.read(path)
    assert back.meta == w.meta
    assert all(back[k].tobytes() == w[k].tobytes() for k in w.tensors)
    again = pf.load(path)  # any supported format, the port's uniform load
    _orbax_logits_agree(again, v.id, f"ports.flax.load of an Orbax-saved {v.id}")


@pytest.mark.parametrize("vid", frozen.VARIANTS)
def test_a_state_saved_before_the_rewrite_loads_bit_exact(vid):
    """``flax.serialization.msgpack_serialize`` of the port's parameter state before issue
    28's rewrite (conformance/frozen): Flax's own ``msgpack_restore`` and
    ``nnx.replace_by_pure_dict`` take it into today's module, and our reader and ``load``
    give back every tensor bit for bit."""
    v = Variant.from_id(vid)
    expected, path = frozen.pattern(v), frozen.path("flax", vid, "msgpack")
    model = pf.SqueezeNet(v)
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, serialization.msgpack_restore(path.read_bytes()))
    nnx.update(model, state)
    suite.assert_loads_bit_exact(expected, pf.to_weights(model),
                                 pf.to_weights(pf.load(path, variant=v)))
