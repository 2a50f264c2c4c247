"""The spec against figures computed independently (paper, Caffe prototxts, torchvision)."""

import pytest

from ports import spec as S
from ports.spec import Conv, Fire, MaxPool, Variant, all_variants


def conv_params(o, i, k):
    return o * i * k * k + o


def fire_params(i, s, e1, e3):
    return conv_params(s, i, 1) + conv_params(e1, s, 1) + conv_params(e3, s, 3)


# (input channels, squeeze, expand1x1, expand3x3) written out from the Caffe prototxts.
FIRES_1_0 = [(96, 16, 64, 64), (128, 16, 64, 64), (128, 32, 128, 128), (256, 32, 128, 128),
             (256, 48, 192, 192), (384, 48, 192, 192), (384, 64, 256, 256), (512, 64, 256, 256)]
FIRES_1_1 = [(64,) + f[1:] for f in FIRES_1_0[:1]] + FIRES_1_0[1:]


def test_parameter_counts_match_the_published_figures():
    assert Variant("1_0").num_params() == 1_248_424
    assert Variant("1_1").num_params() == 1_235_496
    by_hand_1_0 = conv_params(96, 3, 7) + sum(fire_params(*f) for f in FIRES_1_0) + \
        conv_params(1000, 512, 1)
    by_hand_1_1 = conv_params(64, 3, 3) + sum(fire_params(*f) for f in FIRES_1_1) + \
        conv_params(1000, 512, 1)
    assert (by_hand_1_0, by_hand_1_1) == (1_248_424, 1_235_496)


def test_padding_and_simple_bypass_add_no_parameters_complex_adds_bypass_convs():
    for version in ("1_0", "1_1"):
        base = Variant(version).num_params()
        assert Variant(version, final_conv_padding=1).num_params() == base
        assert Variant(version, bypass="simple").num_params() == base
        # complex: 1x1 convs around fire2, 4, 6, 8 with as many filters as the module output
        ins = {"1_0": (96, 128, 256, 384), "1_1": (64, 128, 256, 384)}[version]
        outs = (128, 256, 384, 512)
        extra = sum(conv_params(o, i, 1) for i, o in zip(ins, outs))
        assert Variant(version, bypass="complex").num_params() == base + extra


def test_num_classes_changes_only_conv10():
    assert Variant("1_1", num_classes=10).params()["conv10.weight"] == (10, 512, 1, 1)
    assert Variant("1_1").num_params() - Variant("1_1", 10).num_params() == 990 * 513


def macs_by_hand(version, size, pad10=0):
    """Layer by layer, with the ceil-mode grid written out."""
    if version == "1_0":
        c1 = (size - 7) // 2 + 1
        total = 96 * 3 * 49 * c1 * c1
        g1 = -(-(c1 - 3) // 2) + 1
        g2 = -(-(g1 - 3) // 2) + 1
        g3 = -(-(g2 - 3) // 2) + 1
        grids = [g1, g1, g1, g2, g2, g2, g2, g3]
        fires = FIRES_1_0
    else:
        c1 = (size - 3) // 2 + 1
        total = 64 * 3 * 9 * c1 * c1
        g1 = -(-(c1 - 3) // 2) + 1
        g2 = -(-(g1 - 3) // 2) + 1
        g3 = -(-(g2 - 3) // 2) + 1
        grids = [g1, g1, g2, g2, g3, g3, g3, g3]
        fires = FIRES_1_1
    for (i, s, e1, e3), g in zip(fires, grids):
        total += (i * s + s * e1 + s * e3 * 9) * g * g
    g10 = grids[-1] + 2 * pad10
    return total + 512 * 1000 * g10 * g10


@pytest.mark.parametrize("version", ["1_0", "1_1"])
@pytest.mark.parametrize("size", [224, 227])
@pytest.mark.parametrize("pad10", [0, 1])
def test_macs_match_a_hand_count(version, size, pad10):
    expected = macs_by_hand(version, size, pad10)
    assert Variant(version, final_conv_padding=pad10).macs(size) == expected


def test_macs_of_1_1_at_224_is_the_quoted_0_35_giga():
    assert round(Variant("1_1").macs(224) / 1e9, 2) == 0.35
    # "about 2.4x less computation than v1.0"
    assert 2.3 < Variant("1_0").macs(224) / Variant("1_1").macs(224) < 2.5


def test_ceil_mode_grids_from_the_facts():
    # v1.1 at 227: 56/28/14 (floor would give 56/27/13); v1.0 at 224: 54/27/13.
    s = Variant("1_1").feature_sizes(227)
    assert (s["pool1"], s["pool3"], s["pool5"]) == (56, 28, 14)
    s = Variant("1_0").feature_sizes(224)
    assert (s["pool1"], s["pool4"], s["pool8"]) == (54, 27, 13)
    s = Variant("1_0", final_conv_padding=1).feature_sizes(227)
    assert s["conv10"] == 15


def test_max_pool_window_must_start_inside_the_input():
    pool = MaxPool("p")
    assert [pool.out_size(n) for n in (3, 4, 5, 6, 7)] == [1, 2, 2, 3, 3]
    assert pool.ceil_extra(4) == 1 and pool.ceil_extra(5) == 0


def test_layer_order_and_canonical_names():
    v = Variant("1_0", bypass="complex")
    names = list(v.params())
    assert names[:2] == ["conv1.weight", "conv1.bias"]
    assert names[2:10] == ["fire2.squeeze.weight", "fire2.squeeze.bias",
                           "fire2.expand1x1.weight", "fire2.expand1x1.bias",
                           "fire2.expand3x3.weight", "fire2.expand3x3.bias",
                           "fire2.bypass.weight", "fire2.bypass.bias"]
    assert names[-2:] == ["conv10.weight", "conv10.bias"]
    fires = {f.name: f.bypass for f in v.fires()}
    assert fires == {"fire2": "conv", "fire3": "identity", "fire4": "conv", "fire5": "identity",
                     "fire6": "conv", "fire7": "identity", "fire8": "conv", "fire9": "identity"}
    simple = {f.name: f.bypass for f in Variant("1_1", bypass="simple").fires()}
    assert [k for k, b in simple.items() if b] == ["fire3", "fire5", "fire7", "fire9"]
    for f in Variant("1_0", bypass="simple").fires():
        if f.bypass == "identity":
            assert f.in_channels == f.out_channels


def test_every_layer_kind_and_expand3x3_padding():
    v = Variant("1_1")
    fire = v.fires()[0]
    assert isinstance(fire, Fire) and fire.expand3x3.padding == 1 and fire.expand1x1.padding == 0
    conv1 = v.layers()[0]
    assert isinstance(conv1, Conv) and (conv1.kernel, conv1.stride, conv1.padding) == (3, 2, 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"version": "2_0"}, "version"),
    ({"bypass": "residual"}, "bypass"),
    ({"final_conv_padding": 2}, "final_conv_padding"),
    ({"num_classes": 0}, "num_classes"),
])
def test_bad_variant_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Variant(**kwargs)


def test_variant_ids_round_trip():
    for v in all_variants() + [Variant("1_0", 10)]:
        assert Variant.from_id(v.id) == v
        assert Variant.from_meta(v.to_meta()) == v
    assert Variant("1.0").version == "1_0"


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="too small"):
        Variant("1_0").feature_sizes(16)


def test_through_pool_counts_layers_up_to_the_nth_pool():
    names = {v: [getattr(layer, "name", "") for layer in Variant(v).layers()]
             for v in ("1_0", "1_1")}
    assert names["1_1"][S.through_pool(Variant("1_1").layers(), 2) - 1] == "pool3"
    assert names["1_0"][S.through_pool(Variant("1_0").layers(), 2) - 1] == "pool4"
    assert names["1_1"][S.through_pool(Variant("1_1").layers(), 1) - 1] == "pool1"
    assert S.through_pool(Variant("1_1").layers(), 4) == 0
