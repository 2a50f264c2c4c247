"""MXNet Gluon port (mxnet 1.9.1): goldens, fixtures, ``.params`` files, Gluon model zoo.

* ``TestMXNet``: every golden case (hybridized, float32 and float64) and every real-weights
  fixture, recorded in ``build/conformance/mxnet.json``;
* the net *not* hybridized (imperative Gluon) against the goldens of ``PATH_CASES``, both
  dtypes;
* files written by :mod:`ports.formats.mxnet` load with MXNet's own ``load_parameters``
  (our net and the zoo's) and give the golden logits;
* a real Gluon model zoo ``squeezenet1_0`` / ``squeezenet1_1``, initialised and saved by
  MXNet itself (``save_parameters`` and ``export``), converts bit-exact to canonical and its
  own logits are reproduced by this port and by the float64 NumPy reference.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon.model_zoo import vision

import ports.mxnet as port
from conformance import frozen, golden, suite, training
from conformance.harness import assert_agrees, tolerance
from conformance.inputs import SIZES, inputs
from conformance.suite import PATH_CASES, DropoutSuite, PortSuite, TraceSuite
from ports import numpy as ref
from ports.formats import mxnet as codec
from ports.formats import read, write
from ports.formats.canonical import Weights, WeightsError, make
from ports.mxnet import train
from ports.seeded import key, seeded_weights, uniform
from ports.spec import MaxPool, Variant, all_variants

PORT = "mxnet"


class TestMXNet(PortSuite):
    port = PORT


class TestMxnetTrace(TraceSuite):
    port = PORT
    paths = ("fast",)  # one network: load(fast=...) changes nothing


class TestMxnetDropout(DropoutSuite):
    port = PORT


def _check(test: str, name: str, actual, expected, dtype: str) -> None:
    atol, rtol = tolerance(PORT, dtype)
    assert_agrees(actual, expected, atol, rtol, f"{test}: {name} {dtype}")


# --- geometry --------------------------------------------------------------------------------
def test_full_pooling_convention_is_the_spec_ceil_mode():
    """MXNet's 'full' lacks the "last window starts inside" clip; with kernel 3 > stride 2
    and no padding it never matters: output sizes equal the spec's for every input size."""
    pool = MaxPool("p")
    data = mx.sym.var("data")
    sym = mx.sym.Pooling(data, kernel=(pool.kernel, pool.kernel),
                         stride=(pool.stride, pool.stride), pool_type="max",
                         pooling_convention="full")
    for size in range(pool.kernel, 401):
        _, (out,), _ = sym.infer_shape(data=(1, 1, size, size))
        assert out[2:] == (pool.out_size(size),) * 2, size


def test_net_parameter_names_are_the_zoo_names():
    for version in ("1.0", "1.1"):
        zoo = vision.get_model("squeezenet" + version)
        ours = port.SqueezeNet(version.replace(".", "_"))
        assert list(ours.structural_params()) == list(zoo._collect_params_with_prefix())
        # global names (used by export) too, up to the block's own prefix
        strip = lambda net: [n[len(net.prefix):] for n in net.collect_params()]  # noqa: E731
        assert strip(ours) == strip(zoo)
        assert list(codec.key_table(ours.variant).values()) == list(ours.structural_params())


@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: v.id)
def test_the_literal_network_is_the_spec(variant):
    """``ports.mxnet.network`` writes SqueezeNet out as the zoo does; for all 12 variants its
    parameters are the spec's, name for name (through the codec's key table) and shape for
    shape, and its maps have the spec's sizes (ceil-mode pools, conv10's padding) at 41x41,
    where a floor-mode pool1 would differ in both versions."""
    net = port.SqueezeNet(variant, dtype="float64")
    params = {k: p.shape for k, p in net.structural_params().items()}
    table = codec.key_table(variant)
    assert set(table.values()) == set(params)
    port.fill(net, make({k: np.zeros(s) for k, s in variant.params().items()}, variant,
                        preprocessing="none", source="zeros"))
    acts = port.activations(net, np.zeros((1, 3, suite.SPEC_SIZE, suite.SPEC_SIZE)))
    suite.assert_network_is_spec(variant, {k: params[v] for k, v in table.items()},
                                 {n: a.shape for n, a in acts.items()})


def test_fill_is_strict_and_refills_a_hybridized_net():
    """``fill`` checks the weights against the net's variant before copying anything, and
    refills a net already initialised and run: its compiled graph sees the new values."""
    net, x = port.load(seeded_weights(Variant("1_1"))), inputs(224)[:1]
    before = port.predict(net, x)
    with pytest.raises(WeightsError, match="1_0"):
        port.fill(net, seeded_weights(Variant("1_0")))
    assert np.array_equal(port.predict(net, x), before)
    other = seeded_weights(Variant("1_1"), seed=1)
    assert np.array_equal(port.predict(port.fill(net, other), x),
                          port.predict(port.load(other), x))


def test_complex_bypass_names():
    net = port.SqueezeNet("1_0", bypass="complex")
    table = codec.key_table(net.variant)
    assert table["fire2.bypass.weight"] == "features.3.bypass.weight"
    assert set(table.values()) == set(net.structural_params())


# --- goldens, not hybridized -------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("vid,size", PATH_CASES)
def test_golden_not_hybridized(vid, size, dtype):
    """The imperative path against the golden (the hybridized one, what ``load`` gives, is
    the suite's golden case above, every variant at every size)."""
    weights = seeded_weights(Variant.from_id(vid))
    imperative = port.fill(port.SqueezeNet(weights.variant, dtype=dtype), weights)
    assert port.load(weights, dtype)._active and not imperative._active
    out = port.predict(imperative, inputs(size).astype(dtype))
    assert out.dtype == np.dtype(dtype)
    _check("golden-not-hybridized", f"{vid}-{size}", out, golden.load(vid, size), dtype)


# --- .params written by the codec, read by MXNet ------------------------------------------
@pytest.mark.parametrize("vid", golden.VARIANTS)
def test_codec_file_loads_with_load_parameters(vid, tmp_path):
    variant = Variant.from_id(vid)
    weights = seeded_weights(variant)
    path = tmp_path / "w.params"
    write(weights, path)
    # MXNet's own reader sees the structural names and float32 arrays
    loaded = mx.nd.load(str(path))
    table = codec.key_table(variant)
    assert list(loaded) == list(table.values())
    for canonical, name in table.items():
        assert loaded[name].dtype == np.float32
        assert np.array_equal(loaded[name].asnumpy(), weights.tensors[canonical]), name
    net = port.SqueezeNet(variant)
    net.load_parameters(str(path), ctx=mx.cpu())
    net.hybridize()
    _check("codec-file-load_parameters", f"{vid}-227", port.predict(net, inputs(227)),
           golden.load(vid, 227), "float32")
    # the file's variant is inferred, except what .params cannot tell (see the codec)
    back = read(path, variant=variant)
    assert all(np.array_equal(back.tensors[k], weights.tensors[k]) for k in weights.tensors)
    assert codec.encode(back) == path.read_bytes()


def test_codec_file_loads_into_float64_net_with_cast_dtype(tmp_path):
    vid = "1_0-p1-simple"
    variant = Variant.from_id(vid)
    path = tmp_path / "w.params"
    write(seeded_weights(variant), path)
    net = port.SqueezeNet("1_0", final_conv_padding=1, bypass="simple")
    net.cast("float64")
    net.load_parameters(str(path), ctx=mx.cpu(), cast_dtype=True)
    out = port.predict(net, inputs(224))
    assert out.dtype == np.float64
    _check("codec-file-load_parameters", f"{vid}-224", out, golden.load(vid, 224), "float64")


@pytest.mark.parametrize("version", ["1_0", "1_1"])
def test_codec_file_loads_into_zoo_net(version, tmp_path):
    variant = Variant(version)
    weights = seeded_weights(variant)
    path = tmp_path / "w.params"
    write(weights, path)
    zoo = vision.get_model("squeezenet" + version.replace("_", "."))
    zoo.load_parameters(str(path), ctx=mx.cpu())
    # at 224 the zoo's fixed 13x13 average pool is the global one
    x = mx.nd.array(inputs(224))
    _check("codec-file-into-zoo", f"{variant.id}-224", zoo(x).asnumpy(),
           golden.load(variant.id, 224), "float32")


def test_port_to_weights_and_export_round_trip(tmp_path):
    variant = Variant("1_0", bypass="complex")
    weights = seeded_weights(variant)
    net = port.load(weights)
    again = port.to_weights(net)
    assert all(np.array_equal(again.tensors[k], weights.tensors[k]) for k in weights.tensors)
    net(mx.nd.array(inputs(224)[:1]))
    net.export(str(tmp_path / "ours"))
    exported = read(tmp_path / "ours-0000.params", variant=variant)
    assert all(np.array_equal(exported.tensors[k], weights.tensors[k]) for k in weights.tensors)
    assert codec.infer_variant(codec.decode_ndarrays(
        (tmp_path / "ours-0000.params").read_bytes())) == variant


# --- the Gluon model zoo's own networks -----------------------------------------------------
def _zoo_net(version: str) -> mx.gluon.HybridBlock:
    """A zoo SqueezeNet initialised by MXNet itself (He-normal weights), with small positive
    biases so that the ReLU'd logits are informative."""
    mx.random.seed(int(version.replace(".", "")))
    zoo = vision.get_model("squeezenet" + version)
    zoo.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
                   ctx=mx.cpu())
    zoo(mx.nd.zeros((1, 3, 224, 224)))  # the zoo's shapes are inferred on the first call
    for i, (name, param) in enumerate(zoo._collect_params_with_prefix().items()):
        if name.endswith(".bias"):
            bias = 0.01 + 0.04 * uniform(key("mxnet-zoo-bias", version, i), param.shape[0])
            param.set_data(mx.nd.array(bias.astype(np.float32)))
    return zoo


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_zoo_checkpoint_converts_bit_exact_and_reproduces_zoo_logits(version, tmp_path):
    zoo = _zoo_net(version)
    x = inputs(224)
    zoo_logits = zoo(mx.nd.array(x)).asnumpy()
    assert (zoo_logits > 0).mean() > 0.5, "uninformative logits"
    path = tmp_path / f"squeezenet{version}.params"
    zoo.save_parameters(str(path))

    weights = read(path)  # through the generic reader: detection, check against the spec
    variant = Variant(version.replace(".", "_"))
    assert weights.variant == variant
    zoo_params = zoo._collect_params_with_prefix()
    for canonical, name in codec.key_table(variant).items():
        assert np.array_equal(weights.tensors[canonical], zoo_params[name].data().asnumpy()), \
            name
    assert codec.encode(weights) == path.read_bytes()  # byte-identical when written back

    net = port.load(weights)
    _check("zoo-logits", f"squeezenet{version}-224 mxnet port", port.predict(net, x),
           zoo_logits, "float32")
    reference = ref.predict(ref.load(weights), x.astype(np.float64))
    _check("zoo-logits", f"squeezenet{version}-224 numpy reference", reference, zoo_logits,
           "float32")
    # canonical safetensors in between changes nothing (what every other port loads)
    write(weights, tmp_path / "c.safetensors")
    again = read(tmp_path / "c.safetensors")
    assert all(np.array_equal(again.tensors[k], weights.tensors[k]) for k in weights.tensors)

    # At 227 the zoo's fixed 13x13 head is global for v1.0 (13x13 map) but truncates
    # v1.1's 14x14 map: the trap this port avoids.
    x227 = inputs(227)
    ours227 = port.predict(net, x227)
    _check("zoo-vs-reference", f"squeezenet{version}-227 mxnet port vs reference", ours227,
           ref.predict(ref.load(weights), x227.astype(np.float64)), "float32")
    zoo227 = zoo(mx.nd.array(x227)).asnumpy()
    if variant.feature_sizes(227)["fire9"] == 13:
        _check("zoo-logits", f"squeezenet{version}-227 mxnet port", ours227, zoo227, "float32")
    else:
        assert np.abs(zoo227 - ours227).max() > 1e-3


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_zoo_export_checkpoint_converts_bit_exact(version, tmp_path):
    zoo = _zoo_net(version)
    zoo.hybridize()
    zoo(mx.nd.array(inputs(224)[:1]))
    zoo.export(str(tmp_path / "zoo"))
    zoo.save_parameters(str(tmp_path / "zoo.params"))
    exported, saved = read(tmp_path / "zoo-0000.params"), read(tmp_path / "zoo.params")
    assert exported.variant == saved.variant == Variant(version.replace(".", "_"))
    assert set(exported.tensors) == set(saved.tensors)
    assert all(np.array_equal(exported.tensors[k], saved.tensors[k]) for k in saved.tensors)


def test_float64_zoo_checkpoint_reads_as_float32(tmp_path):
    zoo = _zoo_net("1.1")
    zoo.cast("float64")
    zoo.save_parameters(str(tmp_path / "z64.params"))
    weights = read(tmp_path / "z64.params")
    params = zoo._collect_params_with_prefix()
    for canonical, name in codec.key_table(weights.variant).items():
        assert weights.tensors[canonical].dtype == np.float32
        assert np.array_equal(weights.tensors[canonical],
                              params[name].data().asnumpy().astype(np.float32))


def test_predict_refuses_bad_input():
    net = port.load(seeded_weights(Variant("1_1")))
    with pytest.raises(ValueError, match="NHWC"):
        port.predict(net, np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ValueError, match="too small"):
        port.predict(net, np.zeros((1, 3, 8, 8), np.float32))


def test_load_reads_params_file(tmp_path):
    weights = seeded_weights(Variant("1_1"))
    write(weights, tmp_path / "w.params")
    net = port.load(tmp_path / "w.params", "float64")
    assert net.dtype == np.float64 and net.variant == Variant("1_1")
    assert isinstance(port.to_weights(net), Weights)


def test_uniform_interface(tmp_path):
    """The port protocol (ports/_api.py): keyword dtype, a Variant in place of version,
    ``variant=`` for what a .params file cannot tell, ``fast`` accepted (no tuned layers)."""
    variant = Variant("1_0", 10, 1, "simple")
    net = port.SqueezeNet("1_0", 10, 1, "simple", dtype="float64")
    assert net.variant == port.SqueezeNet(variant).variant == variant
    assert net.dtype == np.float64 and net.output[0]._kwargs["pad"] == (1, 1)
    with pytest.raises(ValueError, match="dtype"):
        port.SqueezeNet(dtype="int32")
    weights = seeded_weights(variant)
    write(weights, tmp_path / "w.params")
    assert read(tmp_path / "w.params").variant != variant  # padding and simple bypass
    a = port.load(tmp_path / "w.params", variant=variant)
    b = port.load(weights, fast=False)
    assert a.variant == b.variant == variant
    x = inputs(227)[:2]
    assert np.array_equal(port.predict(a, x), port.predict(b, x))
    np.testing.assert_allclose(port.predict(b, x, batch_size=1), port.predict(b, x), rtol=1e-5,
                               atol=1e-6)  # the batch changes the kernels' rounding only
    back = port.to_weights(a)
    assert back.meta["preprocessing"] == "none" and back.meta["source"] == "ports.mxnet"
    assert port.to_weights(a, preprocessing="torchvision").meta["preprocessing"] == \
        "torchvision"


# --- training: autograd and Gluon's Trainer with MXNet's own sgd -----------------------------
TRAIN_VID = "1_0-p1-complex"  # bypass convs and conv10 padding: every parameter kind
MOMENTUM, WD = training.MOMENTUM, training.WEIGHT_DECAY


def test_trainer_is_mxnet_sgd_with_decay_and_rate_on_every_parameter():
    """Gluon's default multipliers are 1 for weights and biases (unlike MXNet's symbolic
    Module, whose optimizer gives every name not ending in ``_weight`` a ``wd_mult`` of 0),
    and the optimizer applies them: the full decay and rate on every tensor."""
    net = port.load(seeded_weights(Variant.from_id(TRAIN_VID)))
    tr = train.trainer(net, MOMENTUM, WD)
    params = list(net.collect_params().values())
    assert len(params) == len(net.variant.params())
    assert all(p.wd_mult == 1.0 and p.lr_mult == 1.0 for p in params)
    opt = tr.optimizer
    assert type(opt) is mx.optimizer.SGD and opt.momentum == MOMENTUM
    tr.set_learning_rate(0.01)
    indices = list(range(len(params)))
    assert opt._get_wds(indices) == [WD] * len(params)
    assert opt._get_lrs(indices) == [0.01] * len(params)


def test_sgd_is_caffes_rule_with_float32_hyperparameters():
    """MXNet's sgd kernels (sgd_mom_update, multi_sgd_mom_update) take momentum, lr and wd
    as C++ floats: in float64 each step is Caffe's rule with those three rounded to float32
    (momentum 0.9 -> 0.899999976) to float64 rounding (measured 4.4e-16 of what went into
    each entry, the float64 bound 1e-15); with the exact numbers it is off by their rounding
    (measured 5.9e-8), within ``[train.port.mxnet.float64]``'s optimizer bound (2e-7)."""
    ran: list = []

    def run(*args):
        ran.extend(train.train_steps(*args))
        return ran

    exact = training.steps_case(port, TRAIN_VID, "float64", PORT, run=run)
    f32 = [float(np.float32(v)) for v in training.poly_lrs()]
    w = {k: t.astype(np.float64) for k, t in seeded_weights(
        Variant.from_id(TRAIN_VID)).tensors.items()}
    v = {k: np.zeros_like(t) for k, t in w.items()}
    rounded = 0.0
    for step, lr in zip(ran, f32):
        errors = training.optimizer_errors(w, v, step, lr, float(np.float32(MOMENTUM)),
                                           float(np.float32(WD)))
        rounded = max(rounded, *errors.values())
        w, v = step.weights, step.velocity
    print(f"float64 updates: {exact['optimizer_rel']:.3g} from the exact rule, {rounded:.3g} "
          "from the rule with float32 scalars")
    assert exact["ok"], exact
    assert rounded <= training.tolerance("float64")["optimizer"], rounded
    assert training.tolerance("float64")["optimizer"] < exact["optimizer_rel"] \
        <= training.tolerance("float64", port=PORT)["optimizer"], exact


def test_max_pool_gradient_needs_training_mode():
    """Why ``train._loss`` records in training mode: there MXNet's oneDNN float32 max pool
    gradient is right.  Recorded in predict mode (``train_mode=False``) the forward pass
    keeps no workspace and the backward is wrong, by the gradient's whole size when this
    runs alone, but not always after other work (it depends on what ran before): that
    error is printed, not asserted.  float64 (no oneDNN) is right in
    both modes."""
    pool = gluon.nn.MaxPool2D(3, 2, ceil_mode=True)
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((2, 4, 13, 13)), rng.standard_normal((2, 4, 6, 6))

    def grad(dtype: str, train_mode: bool) -> np.ndarray:
        xa = mx.nd.array(x, dtype=dtype)
        xa.attach_grad()
        with autograd.record(train_mode=train_mode):
            y = pool(xa)
        y.backward(mx.nd.array(dy, dtype=dtype))
        return xa.grad.asnumpy()

    exact = grad("float64", True)
    np.testing.assert_array_equal(grad("float64", False), exact)
    np.testing.assert_allclose(grad("float32", True), exact, atol=1e-6)
    print(f"predict mode, float32: max abs {np.abs(grad('float32', False) - exact).max():.3g} "
          f"of a gradient up to {np.abs(exact).max():.3g}")


def test_training_leaves_predict_unchanged():
    net = port.load(seeded_weights(Variant.from_id(TRAIN_VID)))
    x, labels = training.batch()
    before = port.predict(net, x)
    train.loss_and_grads(net, x, labels)
    train.dropout(net, x)
    assert net._active and np.array_equal(port.predict(net, x), before)


def _pytorch_rule(net):
    """PyTorch's ``b <- m b + (g + wd w)``, ``w <- w - lr_t b`` in MXNet's sgd, whose state
    is then ``lr_t b``: a momentum of ``m lr_t / lr_(t-1)``."""
    trainer, lrs = train.trainer(net, MOMENTUM, WD), training.poly_lrs()

    def before_step(i: int) -> None:
        trainer.optimizer.momentum = MOMENTUM * (lrs[i] / lrs[i - 1] if i else 1.0)
    return trainer, before_step


def _nag(net):
    """MXNet's own rate-outside-the-momentum optimizer (Nesterov's, too)."""
    return gluon.Trainer(net.collect_params(), "nag", {"learning_rate": 0.0,
                         "momentum": MOMENTUM, "wd": WD}, kvstore=None), None


def _decoupled_decay(net):
    """SGDW: ``w <- w (1 - lr_t wd)`` beside the step, the decay kept out of the momentum."""
    lrs = training.poly_lrs()

    def before_step(i: int) -> None:
        for param in net.collect_params().values():
            param.set_data(param.data() * (1 - lrs[i] * WD))
    return train.trainer(net, MOMENTUM, 0.0), before_step


def _no_decay_on_biases(net):
    """``wd_mult`` 0 on the biases (what MXNet's symbolic Module does by name)."""
    for name, param in net.structural_params().items():
        if name.endswith(".bias"):
            param.wd_mult = 0.0
    return train.trainer(net, MOMENTUM, WD), None


MISTAKES = {"rate outside the momentum (PyTorch's rule)": _pytorch_rule,
            "rate outside the momentum (MXNet's nag)": _nag,
            "decoupled weight decay": _decoupled_decay,
            "no decay on biases": _no_decay_on_biases}


def _mistaken(setup):
    """``train_steps`` (its signature) by the (trainer, before_step) of ``setup(net)``; each
    step reports as its velocity the optimizer's momentum in Caffe's sign (``-state`` of
    MXNet's sgd: for ``_pytorch_rule`` that is ``lr_t b``, what it subtracted), for nag,
    whose state is PyTorch's buffer ``b``, ``lr_t b`` (the most favourable report)."""
    def run(net, x, labels, lrs, momentum, weight_decay):
        trainer, before_step = setup(net)
        steps = train.steps(net, x, labels, lrs, trainer, before_step)
        if not isinstance(trainer.optimizer, mx.optimizer.NAG):
            return steps
        return [s._replace(velocity={k: -lr * v for k, v in s.velocity.items()})
                for s, lr in zip(steps, lrs)]

    return run


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_optimizer_convention_mistakes_fail_in_float32(mistake):
    """Issue 27: five float32 poly-rate steps of each mistake are far outside the float32
    optimizer bound (1e-6) of Caffe's rule on their own numbers (measured optimizer_rel:
    PyTorch's rule 7.4e-2, nag 1.2e3, decoupled decay 1.0, no decay on biases 1.0; the
    port's own 1.9e-7), while the port's own ``train_steps`` passes."""
    suite.mistaken_steps_fail(port, TRAIN_VID, _mistaken(MISTAKES[mistake]), mistake, PORT)


# --- export pairs (ports.formats.mxnet_export) against real MXNet -----------------------------
import re  # noqa: E402

from ports import formats  # noqa: E402
from ports.formats import mxnet_export as export_codec  # noqa: E402


def _global_prefix(text: str) -> str:
    """Gluon numbers each block's global prefix per process (``squeezenet3_``)."""
    return re.sub(r"squeezenet\d+_", "squeezenet0_", text)


@pytest.mark.parametrize("vid", golden.VARIANTS)
def test_codec_export_pair_runs_in_symbolblock_imports(vid, tmp_path):
    """Our framework-free pair, imported the way MXNet deploys an export
    (``SymbolBlock.imports``), gives the golden logits; so does the Module API's
    ``load_checkpoint``."""
    v = Variant.from_id(vid)
    symbol, params = write(seeded_weights(v), tmp_path / "m", "mxnet-export")
    net = mx.gluon.SymbolBlock.imports(str(symbol), ["data"], str(params), ctx=mx.cpu())
    for size in SIZES:
        x = inputs(size)
        _check("export-pair-symbolblock", f"{vid}-{size}", net(mx.nd.array(x)).asnumpy(),
               golden.load(vid, size), "float32")
    sym, args, aux = mx.model.load_checkpoint(str(tmp_path / "m"), 0)
    assert not aux and set(args) == set(sym.list_arguments()) - {"data"}
    exe = sym.bind(mx.cpu(), {"data": mx.nd.array(inputs(227)), **args})
    _check("export-pair-load_checkpoint", f"{vid}-227", exe.forward()[0].asnumpy(),
           golden.load(vid, 227), "float32")


@pytest.mark.parametrize("vid", ["1_1-p0-none", "1_0-p1-complex", "1_1-p1-simple"])
def test_codec_export_pair_is_what_export_writes(vid, tmp_path):
    """``HybridBlock.export`` of ports.mxnet's net holding the same weights writes our pair
    byte for byte (less our metadata attribute, up to Gluon's per-process prefix)."""
    v = Variant.from_id(vid)
    w = seeded_weights(v)
    net = port.load(w)
    net(mx.nd.array(inputs(224)[:1]))
    net.export(str(tmp_path / "real"))
    real_symbol = (tmp_path / "real-symbol.json").read_text()
    assert _global_prefix(real_symbol) == export_codec.symbol(v).decode()
    real = codec.decode_ndarrays((tmp_path / "real-0000.params").read_bytes())
    renamed = codec.encode_ndarrays({_global_prefix(k): a for k, a in real.items()})
    assert renamed == export_codec.encode(w)[1]
    back = read(tmp_path / "real-symbol.json")  # the graph proves padding and bypass
    assert back.variant == v and back.meta["preprocessing"] == "torchvision"
    assert all(back[k].tobytes() == w[k].tobytes() for k in w.tensors)


def _converts_to_every_format(w: Weights, tmp_path) -> None:
    for fmt in formats.FORMATS:
        if formats.FORMATS[fmt].codebook:  # a codebook per layer: lossy by design
            continue
        out = tmp_path / f"out-{fmt}{formats.FORMATS[fmt].extensions[0]}"
        write(w, out, fmt)
        back = read(out, fmt, variant=w.variant)
        assert all(back[k].tobytes() == w[k].tobytes() for k in w.tensors), fmt


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_zoo_export_pair_reads_bit_exact_and_converts_to_every_format(version, tmp_path):
    """A Gluon model zoo SqueezeNet initialised and exported by MXNet itself: the pair
    (its 13x13 average pool is not judged) reads bit-exact, converts to every format and
    back bit-exact, and our pair of it reproduces the zoo's logits in SymbolBlock."""
    zoo = _zoo_net(version)
    zoo.hybridize()
    x = inputs(224)
    zoo_logits = zoo(mx.nd.array(x)).asnumpy()
    zoo.export(str(tmp_path / "zoo"))
    w = read(tmp_path / "zoo-symbol.json")
    assert w.variant == Variant(version.replace(".", "_"))
    params = zoo._collect_params_with_prefix()
    for canonical, name in codec.key_table(w.variant).items():
        assert w[canonical].tobytes() == params[name].data().asnumpy().tobytes(), name
    _converts_to_every_format(w, tmp_path)
    symbol, params_file = write(w, tmp_path / "ours", "mxnet-export")
    ours = mx.gluon.SymbolBlock.imports(str(symbol), ["data"], str(params_file))
    _check("zoo-export-pair", f"squeezenet{version}-224 our pair in SymbolBlock",
           ours(mx.nd.array(x)).asnumpy(), zoo_logits, "float32")


def test_port_export_pair_converts_to_every_format(tmp_path):
    v = Variant("1_0", 1000, 1, "complex")
    net = port.SqueezeNet(v)
    mx.random.seed(5)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())  # MXNet's own initialisation
    net.hybridize()
    net(mx.nd.array(inputs(224)[:1]))
    net.export(str(tmp_path / "real"), epoch=7)
    w = read(tmp_path / "real-symbol.json", epoch=7)
    assert w.variant == v
    mine = port.to_weights(net)
    assert all(w[k].tobytes() == mine[k].tobytes() for k in mine.tensors)
    _converts_to_every_format(w, tmp_path)


@pytest.mark.parametrize("vid", frozen.VARIANTS)
def test_parameters_saved_before_the_rewrite_load_bit_exact(vid):
    """``save_parameters`` of the port before issue 28's rewrite (conformance/frozen, the
    Gluon zoo's names): Gluon's own strict ``load_parameters`` takes it into today's
    network, and our reader and ``load`` give back every tensor bit for bit."""
    v = Variant.from_id(vid)
    expected, path = frozen.pattern(v), frozen.path("mxnet", vid, "params")
    net = port.SqueezeNet(v)
    net.load_parameters(str(path))
    suite.assert_loads_bit_exact(expected, port.to_weights(net),
                                 port.to_weights(port.load(path, variant=v)))
