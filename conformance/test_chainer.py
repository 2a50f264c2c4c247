"""Chainer port: goldens, fixtures, exchange with real Chainer's ``save_npz`` / ``load_npz``
through the framework-free ``.npz`` codec, and the inference shortcuts of
:mod:`ports.chainer.fast` against the plain network and plain Chainer."""

import io
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():  # chainer 7 imports numpy.distutils (deprecated)
    warnings.simplefilter("ignore", DeprecationWarning)
    import chainer  # noqa: F401  (the chainer environment runs this module)
    import chainer.functions as F
    import chainer.links as L
    from chainer.utils import conv as conv_utils

from conformance import frozen, golden, suite, training  # noqa: E402
from conformance.harness import assert_agrees, tolerance  # noqa: E402
from conformance.inputs import SIZES, inputs  # noqa: E402
from conformance.suite import DropoutSuite, PortSuite, TraceSuite  # noqa: E402
from ports import chainer as port  # noqa: E402
from ports import spec as S  # noqa: E402
from ports.chainer import fast, train  # noqa: E402
from ports.formats import chainer as codec  # noqa: E402
from ports.formats import read  # noqa: E402
from ports.formats.canonical import Weights  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant, all_variants  # noqa: E402


class TestChainer(PortSuite):
    port = "chainer"


class TestChainerTrace(TraceSuite):
    port = "chainer"
    paths = ("fast", "reference")  # fast.SqueezeNet's fused layers, and the plain chain


class TestChainerDropout(DropoutSuite):
    port = "chainer"


def _model(variant: Variant, dtype="float32") -> "port.SqueezeNet":
    return port.SqueezeNet(variant, dtype=dtype)


def _assert_same(a: Weights, b: Weights) -> None:
    assert set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        assert a.tensors[k].dtype == b.tensors[k].dtype == np.float32, k
        assert a.tensors[k].tobytes() == b.tensors[k].tobytes(), k


# --- ceil-mode pooling ----------------------------------------------------------------------
def test_cover_all_is_ceil_mode():
    """Chainer's cover_all output side equals the spec's ceil rule (incl. the rule that the
    last window starts inside the input) for every input side."""
    pool = S.MaxPool("p")
    bad = [n for n in range(3, 2048)
           if conv_utils.get_conv_outsize(n, pool.kernel, pool.stride, 0, cover_all=True)
           != pool.out_size(n)]
    assert not bad


@pytest.mark.parametrize("vid", ["1_0-p0-none", "1_1-p0-none"])
@pytest.mark.parametrize("size", SIZES)
def test_pool_geometry_on_golden_sizes(vid, size):
    """Every pool input side of both versions at 224 and 227: the inference pooling equals
    F.max_pooling_2d(cover_all=True) bit for bit, and both give the spec's side."""
    variant = Variant.from_id(vid)
    sides = variant.feature_sizes(size)
    layers = variant.layers()
    rng = np.random.default_rng(size)
    for i, layer in enumerate(layers):
        if not isinstance(layer, S.MaxPool):
            continue
        side_in = sides[layers[i - 1].name]
        x = rng.standard_normal((2, 3, side_in, side_in)).astype(np.float32)
        x[:, :, -1, :] = 9.0  # the bottom/right edge must win where it is in a window
        x[:, :, :, -1] = 9.0
        with chainer.using_config("train", False):
            reference = F.max_pooling_2d(x, 3, 2, pad=0, cover_all=True).array
            with chainer.no_backprop_mode():
                separable = fast.max_pool(x, layer).array
        assert reference.shape[2:] == (sides[layer.name],) * 2, (layer.name, side_in)
        assert separable.shape == reference.shape
        assert separable.tobytes() == reference.tobytes(), layer.name


@pytest.mark.parametrize("vid", ["1_0-p1-complex", "1_1-p0-simple"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_graph_equals_predict(vid, dtype):
    """model(x) with backprop enabled (plain Chainer: F.convolution_2d, F.max_pooling_2d)
    gives predict's logits (the inference shortcuts) within the port's tolerance."""
    variant = Variant.from_id(vid)
    model = port.load(seeded_weights(variant), dtype=dtype)
    assert isinstance(model, fast.SqueezeNet)
    x = inputs(227)[:2].astype(dtype)
    with chainer.using_config("train", False):
        graph = model(x)
    assert graph.creator is not None  # a backprop graph was built
    atol, rtol = tolerance("chainer", dtype)
    assert_agrees(port.predict(model, x), graph.array, atol, rtol,
                  f"predict vs the plain Chainer graph ({vid}, {dtype})")


@pytest.mark.parametrize("kernel,stride,pad", [(1, 1, 0), (3, 1, 1), (7, 2, 0), (3, 2, 0),
                                               (1, 1, 1)])
@pytest.mark.parametrize("relu", [False, True])
def test_inference_conv_equals_convolution_2d(monkeypatch, kernel, stride, pad, relu):
    calls = []
    original = fast.InferenceConv.forward_cpu
    monkeypatch.setattr(fast.InferenceConv, "forward_cpu",
                        lambda self, inputs: calls.append(1) or original(self, inputs))
    rng = np.random.default_rng(kernel * 10 + stride + pad)
    x = rng.standard_normal((3, 5, 17, 17))
    w = rng.standard_normal((4, 5, kernel, kernel))
    b = rng.standard_normal(4)
    zero = chainer.initializers.Zero(np.float64)
    link = L.Convolution2D(5, 4, kernel, stride=stride, pad=pad, initialW=zero,
                           initial_bias=zero)
    link.W.array[...], link.b.array[...] = w, b
    with chainer.using_config("train", False):
        reference = F.convolution_2d(x, w, b, stride=stride, pad=pad).array
        if relu:
            reference = np.maximum(reference, 0)
        with chainer.no_backprop_mode():
            fused = fast.conv(link, x, relu=relu)
    assert calls  # the inference shortcut ran
    assert fused.shape == reference.shape and fused.dtype == np.float64
    np.testing.assert_allclose(fused.array, reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("vid", ["1_0-p1-complex", "1_1-p0-complex", "1_1-p1-simple",
                                 "1_0-p0-none"])
def test_fast_model_equals_reference_model(monkeypatch, vid):
    """load() (fast.SqueezeNet: fused conv + ReLU, separable pool) and load(fast=False)
    (the plain chain of ports.chainer) give the same float64 logits, to ~1e-11 relative."""
    calls = []
    original = fast.InferenceConv.forward_cpu
    monkeypatch.setattr(fast.InferenceConv, "forward_cpu",
                        lambda self, inputs: calls.append(1) or original(self, inputs))
    weights = seeded_weights(Variant.from_id(vid))
    tuned, plain = port.load(weights, "float64"), port.load(weights, "float64", fast=False)
    assert type(tuned) is fast.SqueezeNet and type(plain) is port.SqueezeNet
    for size in SIZES:
        x = inputs(size)[:3].astype(np.float64)
        expected = port.predict(plain, x)
        assert not calls  # the reference ran plain Chainer
        got = port.predict(tuned, x)
        assert calls and got.dtype == expected.dtype == np.float64
        scale = float(np.abs(expected).max())
        assert scale > 0.1
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11 * scale,
                                   err_msg=f"{vid} at {size}")
        calls.clear()


# --- exchange with real Chainer ------------------------------------------------------------
@pytest.mark.parametrize("vid", ["1_0-p1-complex", "1_1-p0-simple", "1_0-p0-none"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_codec_file_loads_in_chainer(tmp_path, vid, dtype):
    """A file written by the codec loads with chainer.serializers.load_npz (strict, the
    extra metadata member ignored) and the chain gives the golden logits."""
    variant = Variant.from_id(vid)
    path = tmp_path / "w.npz"
    codec.write(seeded_weights(variant), path)
    model = _model(variant, dtype)
    chainer.serializers.load_npz(str(path), model, strict=True)
    for size in SIZES:
        atol, rtol = tolerance("chainer", dtype)
        assert_agrees(port.predict(model, inputs(size).astype(dtype)),
                      golden.load(vid, size), atol, rtol,
                      f"Logits of chainer {dtype} on {vid} at {size} (codec file)")


@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: v.id)
@pytest.mark.parametrize("compression", [True, False])
def test_chainer_saved_file_converts_back_bit_exact(tmp_path, variant, compression):
    """save_npz of a Chainer-initialised chain -> codec read -> the chain's own numbers,
    bit for bit; and codec write -> load_npz -> the same numbers again."""
    model = _model(variant)
    path = tmp_path / "chainer.npz"
    chainer.serializers.save_npz(str(path), model, compression=compression)
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == set(codec.key_table(variant).values())
    weights = read(path, variant=variant)
    _assert_same(weights, port.to_weights(model))
    back = tmp_path / "back.npz"
    codec.write(weights, back)
    fresh = _model(variant)
    chainer.serializers.load_npz(str(back), fresh, strict=True)
    _assert_same(port.to_weights(fresh), weights)


def test_chainer_saved_file_infers_the_variant(tmp_path):
    """Without metadata, version, classes and the complex bypass come from the shapes;
    padding and the identity bypass are not inferable (defaults 0 and none)."""
    model = _model(Variant("1_0", 10, 1, "complex"))
    path = tmp_path / "c.npz"
    chainer.serializers.save_npz(str(path), model)
    assert read(path).variant == Variant("1_0", 10, 0, "complex")
    assert read(path, variant=Variant("1_0", 10, 1, "complex")).variant.final_conv_padding == 1
    assert port.load(path, variant=Variant("1_0", 10, 1, "complex")).conv10.pad == (1, 1)


def test_float64_chain_saved_converts_to_float32(tmp_path):
    variant = Variant("1_1")
    seeded = seeded_weights(variant)
    model = port.load(seeded, dtype="float64")
    path = tmp_path / "f64.npz"
    chainer.serializers.save_npz(str(path), model)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["conv1/W"].dtype == np.float64
    _assert_same(read(path), seeded)


def test_classifier_wrapper_prefix(tmp_path):
    """L.Classifier(model) saves under predictor/...; the codec finds the chain."""
    variant = Variant("1_1")
    model = _model(variant)
    path = tmp_path / "clf.npz"
    chainer.serializers.save_npz(str(path), L.Classifier(model))
    _assert_same(read(path), port.to_weights(model))


def test_codec_bytes_load_from_memory():
    """load_npz takes a file object too; the codec's bytes are a valid npz."""
    variant = Variant("1_1", 10, 0, "complex")
    weights = seeded_weights(variant)
    model = _model(variant)
    chainer.serializers.load_npz(io.BytesIO(codec.encode(weights)), model)
    _assert_same(port.to_weights(model), weights)


# --- the port's interface -----------------------------------------------------------------
def test_interface():
    model = port.SqueezeNet("1_0", num_classes=10, final_conv_padding=1, bypass="complex",
                            dtype="float64")
    assert model.conv1.W.dtype == np.float64
    assert model.conv10.pad == (1, 1)
    assert hasattr(model.fire2, "bypass") and not hasattr(model.fire3, "bypass")
    assert model.fire3.identity_bypass and not model.fire2.identity_bypass
    names = {p for p, _ in model.namedparams()}
    assert {"/" + k for k in codec.key_table(model.variant).values()} == names
    x = np.zeros((1, 3, 227, 227), np.float32)
    assert port.predict(model, x).shape == (1, 10)
    assert port.predict(model, x).dtype == np.float64
    with pytest.raises(ValueError, match="NHWC"):
        port.predict(model, np.zeros((1, 227, 227, 3), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        port.SqueezeNet(dtype="int32")
    assert port.SqueezeNet(model.variant, dtype="float64").variant == model.variant


def test_to_weights_defaults():
    """The uniform defaults: preprocessing "none", source "ports.chainer", whatever the
    weights were loaded from (nothing is remembered on the model)."""
    weights = seeded_weights(Variant("1_1"))
    loaded = port.load(Weights(weights.tensors, {**weights.meta, "preprocessing": "caffe"}))
    back = port.to_weights(loaded)
    assert back.meta["preprocessing"] == "none" and back.meta["source"] == "ports.chainer"
    _assert_same(back, weights)
    again = port.to_weights(loaded, preprocessing="caffe", source="x")
    assert again.meta["preprocessing"] == "caffe" and again.meta["source"] == "x"


def test_load_from_file(tmp_path):
    variant = Variant("1_0", final_conv_padding=1)
    path = tmp_path / "w.npz"
    codec.write(seeded_weights(variant), path)
    model = port.load(path)
    assert model.variant == variant
    atol, rtol = tolerance("chainer", "float32")
    assert_agrees(port.predict(model, inputs(227)), golden.load(variant.id, 227), atol, rtol,
                  "Logits of chainer float32 on 1_0-p1-none at 227 (.npz path)")


# --- training: Chainer's backward, MomentumSGD and the WeightDecay hook ----------------------
TRAIN_VID = "1_0-p1-complex"  # bypass convs and conv10 padding: every parameter kind
MOMENTUM, WD = training.MOMENTUM, training.WEIGHT_DECAY


def test_training_runs_the_plain_chain(monkeypatch):
    """load() gives fast.SqueezeNet, whose fused convolutions are forward-only: with
    backprop enabled its forward pass is the plain chain's, so its gradients are the
    reference model's, bit for bit, and predict is unchanged afterwards."""
    calls = []
    original = fast.InferenceConv.forward_cpu
    monkeypatch.setattr(fast.InferenceConv, "forward_cpu",
                        lambda self, inputs: calls.append(1) or original(self, inputs))
    weights = seeded_weights(Variant.from_id(TRAIN_VID))
    tuned, plain = port.load(weights, "float64"), port.load(weights, "float64", fast=False)
    x, labels = training.batch()
    before = port.predict(tuned, x)
    calls.clear()
    loss, grads = train.loss_and_grads(tuned, x, labels)
    assert not calls
    assert (loss, grads.keys()) == (train.loss_and_grads(plain, x, labels)[0], grads.keys())
    expected = train.loss_and_grads(plain, x, labels)[1]
    assert all(grads[k].tobytes() == expected[k].tobytes() for k in expected)
    assert np.array_equal(port.predict(tuned, x), before) and calls


def test_optimizer_is_momentum_sgd_with_weight_decay_on_every_parameter():
    model = port.load(seeded_weights(Variant.from_id(TRAIN_VID)))
    opt = train.optimizer(model, MOMENTUM, WD)
    assert type(opt) is chainer.optimizers.MomentumSGD and opt.momentum == MOMENTUM
    (hook,) = opt._hookable._pre_update_hooks.values()  # the optimizer's only hook
    assert type(hook) is chainer.optimizer_hooks.WeightDecay and hook.rate == WD
    assert hook.call_for_each_param and hook.timing == "pre"  # on each parameter's gradient
    params = list(model.params())
    assert len(params) == len(model.variant.params())
    assert all(p.update_rule.hyperparam.momentum == MOMENTUM and p.update_rule.enabled
               for p in params)
    opt.lr = 0.01
    assert all(p.update_rule.hyperparam.lr == 0.01 for p in params)  # one rate for all


class _DecoupledDecay:
    """SGDW: ``w <- w (1 - lr_t wd)`` beside the update, the decay kept out of the
    momentum (Chainer's own decoupled decay is Adam's ``weight_decay_rate``)."""

    name, call_for_each_param, timing = "DecoupledDecay", True, "pre"

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, rule, param) -> None:
        param.array *= 1 - rule.hyperparam.lr * self.rate


def _pytorch_rule(model):
    """Chainer's ``CorrectedMomentumSGD``: ``v <- m v - g``, ``w <- w + lr_t v``, PyTorch's
    rule (the rate outside the momentum)."""
    opt = chainer.optimizers.CorrectedMomentumSGD(lr=0.0, momentum=MOMENTUM)
    opt.setup(model)
    opt.add_hook(chainer.optimizer_hooks.WeightDecay(WD))
    return opt


def _decoupled_decay(model):
    opt = chainer.optimizers.MomentumSGD(lr=0.0, momentum=MOMENTUM)
    opt.setup(model)
    opt.add_hook(_DecoupledDecay(WD))
    return opt


def _no_decay_on_biases(model):
    """The WeightDecay hook on the update rules of the weights ``W`` only."""
    opt = chainer.optimizers.MomentumSGD(lr=0.0, momentum=MOMENTUM)
    opt.setup(model)
    for path, param in model.namedparams():
        if path.endswith("/W"):
            param.update_rule.add_hook(chainer.optimizer_hooks.WeightDecay(WD))
    return opt


OPTIMIZERS = {"rate outside the momentum (CorrectedMomentumSGD)": _pytorch_rule,
              "decoupled weight decay": _decoupled_decay,
              "no decay on biases": _no_decay_on_biases}


def _mistaken(make):
    """``train_steps`` (its signature) with the optimizer ``make(model)``; each step reports
    as its velocity the optimizer's momentum in Caffe's sign (``-v``, ``train.steps``), for
    ``CorrectedMomentumSGD`` (the rate outside) ``-lr_t v``, what it subtracted (the most
    favourable report)."""
    def run(model, x, labels, lrs, momentum, weight_decay):
        opt = make(model)
        steps = train.steps(model, x, labels, lrs, opt)
        if not isinstance(opt, chainer.optimizers.CorrectedMomentumSGD):
            return steps
        return [s._replace(velocity={k: lr * v for k, v in s.velocity.items()})
                for s, lr in zip(steps, lrs)]

    return run


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_convention_mistakes_fail_in_float32(name):
    """Issue 27: five float32 poly-rate steps of each mistaken convention are far outside
    the float32 optimizer bound (1e-6) of Caffe's rule on their own numbers (measured
    optimizer_rel: rate outside the momentum 7.4e-2, decoupled decay 1.0, no decay on
    biases 1.0; the port's own 1.9e-7), while the port's own ``train_steps`` passes."""
    suite.mistaken_steps_fail(port, TRAIN_VID, _mistaken(OPTIMIZERS[name]), name)


@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: v.id)
def test_the_literal_network_is_the_spec(variant):
    """``ports.chainer.network`` writes SqueezeNet out; for all 12 variants its parameters
    are the spec's, name for name (through the codec's path table) and shape for shape, and
    its maps have the spec's sizes (ceil-mode pools, conv10's padding) at 41x41, where a
    floor-mode pool1 would differ in both versions, on the plain and the fast path."""
    for build in (port.SqueezeNet, fast.SqueezeNet):
        model = build(variant, dtype="float64")
        params = {path.lstrip("/"): tuple(p.shape) for path, p in model.namedparams()}
        table = codec.key_table(variant)
        assert set(table.values()) == set(params)
        acts = port.activations(model, np.zeros((1, 3, suite.SPEC_SIZE, suite.SPEC_SIZE)))
        suite.assert_network_is_spec(variant, {k: params[v] for k, v in table.items()},
                                     {n: a.shape for n, a in acts.items()})


@pytest.mark.parametrize("vid", frozen.VARIANTS)
def test_an_npz_saved_before_the_rewrite_loads_bit_exact(vid):
    """``chainer.serializers.save_npz`` of the pre-rewrite port (conformance/frozen):
    Chainer's own strict ``load_npz`` takes it into today's chain, and our reader and
    ``load`` give back every tensor bit for bit."""
    v = Variant.from_id(vid)
    path, expected = frozen.path("chainer", vid, "npz"), frozen.pattern(v)
    model = port.SqueezeNet(v)
    chainer.serializers.load_npz(str(path), model, strict=True)
    suite.assert_loads_bit_exact(expected, port.to_weights(model),
                                 port.to_weights(port.load(path, variant=v)))
