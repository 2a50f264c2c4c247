"""PyTorch port specifics: torchvision key names, strict loading, dtypes."""

import numpy as np
import pytest
import torch

from conformance import frozen, golden, suite
from conformance.inputs import inputs
from ports import torch as tport
from ports.errors import WeightsError
from ports.formats.canonical import Weights
from ports.formats.torch import key_table
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants


def torchvision_keys(version):
    """torchvision.models.squeezenet's state_dict keys, written out by hand."""
    fires = {"1_0": (3, 4, 5, 7, 8, 9, 10, 12), "1_1": (3, 4, 6, 7, 9, 10, 11, 12)}[version]
    keys = ["features.0.weight", "features.0.bias"]
    for i in fires:
        for conv in ("squeeze", "expand1x1", "expand3x3"):
            keys += [f"features.{i}.{conv}.weight", f"features.{i}.{conv}.bias"]
    return keys + ["classifier.1.weight", "classifier.1.bias"]


@pytest.mark.parametrize("version", ["1_0", "1_1"])
def test_state_dict_keys_equal_torchvisions(version):
    model = tport.SqueezeNet(version)
    assert list(model.state_dict()) == torchvision_keys(version)
    assert sorted(key_table(Variant(version)).values()) == sorted(torchvision_keys(version))


def test_complex_bypass_conv_lives_inside_its_fire_module():
    model = tport.SqueezeNet("1_0", bypass="complex")
    table = key_table(model.variant)
    assert table["fire2.bypass.weight"] == "features.3.bypass.weight"
    assert tuple(model.state_dict()["features.3.bypass.weight"].shape) == (128, 96, 1, 1)


def test_a_torchvision_state_dict_loads_as_is_and_matches_the_golden():
    variant = Variant("1_1")
    w = seeded_weights(variant)
    state = {key_table(variant)[k]: torch.from_numpy(v) for k, v in w.tensors.items()}
    model = tport.SqueezeNet("1_1")
    model.load_state_dict(state, strict=True)
    model.eval()
    got = tport.predict(model, inputs(224))
    expected = golden.load(variant.id, 224)
    assert np.abs(got - expected).max() <= 1e-4


def test_float64_model_computes_in_float64():
    model = tport.load(seeded_weights(Variant("1_0")), dtype="float64")
    assert next(model.parameters()).dtype == torch.float64
    out = tport.predict(model, inputs(227)[:2])
    assert out.dtype == np.float64
    assert np.abs(out - golden.load("1_0-p0-none", 227)[:2]).max() <= 1e-10


def test_final_conv_padding_changes_the_logits_by_the_known_border_formula():
    # On a 13x13 map, pad 1 averages 169 real cells and 56 border cells equal to relu(bias).
    w0 = seeded_weights(Variant("1_0"))
    w1 = Weights(dict(w0.tensors), {**w0.meta, "final_conv_padding": "1"})
    x = inputs(227)[:2]
    l0 = tport.predict(tport.load(w0, dtype="float64"), x)
    l1 = tport.predict(tport.load(w1, dtype="float64"), x)
    b = np.maximum(w0["conv10.bias"].astype(np.float64), 0)
    np.testing.assert_allclose(l1, (169 * l0 + 56 * b) / 225, rtol=0, atol=1e-12)


def test_to_weights_round_trips():
    w = seeded_weights(Variant("1_1", bypass="complex"))
    back = tport.to_weights(tport.load(w))
    assert all(np.array_equal(back[k], w[k]) for k in w.tensors)


def test_loading_the_wrong_variant_names_the_tensor_and_both_shapes():
    model = tport.SqueezeNet("1_1")
    with pytest.raises(WeightsError) as e:
        tport.fill(model, seeded_weights(Variant("1_0")))
    assert "conv1.weight: expected shape [64, 3, 3, 3], got [96, 3, 7, 7]" in str(e.value)


def test_predict_rejects_nhwc_input():
    model = tport.load(seeded_weights(Variant("1_1")))
    with pytest.raises(ValueError, match="NHWC"):
        tport.predict(model, np.zeros((1, 224, 224, 3), np.float32))


@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: v.id)
def test_the_literal_network_is_the_spec(variant):
    """``ports.torch.network`` writes SqueezeNet out as torchvision does; for all 12
    variants its parameters are the spec's, name for name (through the torchvision key
    table) and shape for shape, and its maps have the spec's sizes (ceil-mode pools,
    conv10's padding) at 41x41, where a floor-mode pool1 would differ in both versions."""
    model = tport.SqueezeNet(variant, dtype="float64")
    state, table = model.state_dict(), key_table(variant)
    assert set(table.values()) == set(state)
    acts = tport.activations(model, np.zeros((1, 3, suite.SPEC_SIZE, suite.SPEC_SIZE)))
    suite.assert_network_is_spec(variant, {k: tuple(state[v].shape) for k, v in table.items()},
                                 {n: a.shape for n, a in acts.items()})


@pytest.mark.parametrize("vid", frozen.VARIANTS)
def test_a_state_dict_saved_before_the_rewrite_loads_bit_exact(vid):
    """``torch.save`` of the pre-rewrite port's ``state_dict()`` (conformance/frozen):
    torch's own strict ``load_state_dict`` takes it into today's network, and our reader
    and ``load`` give back every tensor bit for bit."""
    v, expected = Variant.from_id(vid), frozen.pattern(Variant.from_id(vid))
    path = frozen.path("torch", vid, "pth")
    model = tport.SqueezeNet(v)
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    suite.assert_loads_bit_exact(expected, tport.to_weights(model),
                                 tport.to_weights(tport.load(path, variant=v)))


def test_distillation_gradients_equal_the_float64_references():
    """``train.distill_loss_and_grads`` (what ``tools/compress --fine-tune`` uses) in
    float64: the loss and every parameter's gradient equal the NumPy reference's to 1e-9
    relative of each tensor's largest; the same comparison fails a gradient 1 % off in
    one tensor."""
    from ports import numpy as ref
    from ports.numpy import train as ref_train
    from ports.torch import train

    w = seeded_weights(Variant.from_id("1_0-p1-complex-c10"))
    rng = np.random.default_rng(4)
    x, teacher = rng.standard_normal((2, 3, 35, 35)), rng.normal(0, 2, (2, 10))
    loss, grads = train.distill_loss_and_grads(tport.load(w, "float64"), x, teacher, 3.0)
    want_loss, want = ref_train.distill_loss_and_grads(ref.load(w), x, teacher, 3.0)

    def differs(got: dict) -> list[str]:
        return [k for k in want if not np.abs(got[k] - want[k]).max()
                <= 1e-9 * np.abs(want[k]).max()]

    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert differs(grads) == []
    assert differs({**grads, "fire5.squeeze.weight": grads["fire5.squeeze.weight"] * 1.01}) \
        == ["fire5.squeeze.weight"]
