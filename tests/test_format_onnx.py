"""The ONNX codec without any runtime: export structure, import of foreign namings, variant
identification from the graph, and refusal of malformed or unsafe files."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper  # noqa: E402

from ports import formats  # noqa: E402
from ports.errors import WeightsError  # noqa: E402
from ports.formats import onnx as of  # noqa: E402
from ports.formats.torch import key_table  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant, all_variants  # noqa: E402


def _model(vid="1_1-p0-none"):
    w = seeded_weights(Variant.from_id(vid))
    return w, of.build(w)


def _rename(model, mapping):
    for init in model.graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = mapping.get(name, name)
    return model


def _foreign(model):
    """Looks like somebody else's file: no producer, no metadata."""
    model.producer_name = "other"
    del model.metadata_props[:]
    return model


def _same(a, b):
    return all(a[k].tobytes() == b[k].tobytes() for k in b.tensors)


@pytest.mark.parametrize("vid", [v.id for v in all_variants()])
def test_write_read_round_trip(vid, tmp_path):
    w = seeded_weights(Variant.from_id(vid))
    path = tmp_path / "m.onnx"
    formats.write(w, path)
    back = formats.read(path)
    assert back.variant == w.variant and back.meta == w.meta and _same(back, w)


@pytest.mark.parametrize("vid", [v.id for v in all_variants()])
def test_variant_comes_from_the_graph_not_the_metadata(vid):
    w, model = _model(vid)
    back = of.decode(_foreign(model).SerializeToString(), path="squeezenet1.0-9.onnx")
    assert back.variant == w.variant and _same(back, w)
    assert back.meta["preprocessing"] == "torchvision"


def test_torch_exporter_anonymous_names_and_shuffled_initializers():
    w, model = _model("1_0-p1-complex")
    names = [i.name for i in model.graph.initializer]
    _rename(model, {n: f"onnx::Conv_{100 + i}" for i, n in enumerate(names)})
    inits = list(model.graph.initializer)[::-1]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    back = of.decode(_foreign(model).SerializeToString())
    assert back.variant == w.variant and _same(back, w)


@pytest.mark.parametrize("sep", ["/", "_"])
def test_model_zoo_caffe2_naming(sep):
    # The model zoo's "squeezenet1.0" Caffe2 export: conv1_w_0, fire2/squeeze1x1_w_0, ...
    w, model = _model("1_1-p0-none")
    part = {"squeeze": "squeeze1x1", "expand1x1": "expand1x1", "expand3x3": "expand3x3"}
    mapping = {}
    for key in w.tensors:
        conv, kind = key.rsplit(".", 1)
        base = conv if "." not in conv else conv.split(".")[0] + sep + part[conv.split(".")[1]]
        mapping[key] = f"{base}_{kind[0]}_0"
    assert mapping["fire2.squeeze.weight"] == f"fire2{sep}squeeze1x1_w_0"
    back = of.decode(_foreign(_rename(model, mapping)).SerializeToString(),
                     path="squeezenet1.0-3.onnx")
    assert back.variant.id == "1_1-p0-none" and _same(back, w)


def test_torchvision_names_in_the_wrong_place_are_refused():
    w, model = _model("1_1-p0-none")
    table = key_table(w.variant)
    mapping = {k: table[k] for k in w.tensors}
    # swap fire2's and fire3's names (the data stays where the graph uses it)
    for kind in ("squeeze", "expand1x1", "expand3x3"):
        for p in ("weight", "bias"):
            a, b = f"fire2.{kind}.{p}", f"fire3.{kind}.{p}"
            mapping[a], mapping[b] = table[b], table[a]
    with pytest.raises(WeightsError, match="that name is fire3.squeeze's"):
        of.decode(_rename(model, mapping).SerializeToString())


def test_constants_identity_and_missing_bias():
    w, model = _model("1_1-p0-none")
    g = model.graph
    conv1 = next(n for n in g.node if n.op_type == "Conv")
    t = next(i for i in g.initializer if i.name == "conv1.weight")
    g.node.insert(0, helper.make_node("Constant", [], ["c1w"], value=t))
    g.node.insert(1, helper.make_node("Identity", ["c1w"], ["c1w_id"]))
    conv1.input[1] = "c1w_id"
    del conv1.input[2]
    keep = [i for i in g.initializer if i.name not in ("conv1.weight", "conv1.bias")]
    del g.initializer[:]
    g.initializer.extend(keep)
    back = of.decode(model.SerializeToString())
    assert back["conv1.weight"].tobytes() == w["conv1.weight"].tobytes()
    assert not back["conv1.bias"].any()


def test_swapped_concat_is_refused():
    _, model = _model("1_1-p0-none")
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    concat.input[0], concat.input[1] = concat.input[1], concat.input[0]
    with pytest.raises(WeightsError, match="fire2: the graph concatenates expand3x3"):
        of.decode(model.SerializeToString())


def test_external_data_is_refused_without_opening_it(tmp_path):
    _, model = _model("1_1-p0-none")
    init = model.graph.initializer[0]
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    with pytest.raises(WeightsError, match="external data"):
        of.decode(model.SerializeToString())


def test_size_bound_and_garbage(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    formats.write(seeded_weights(Variant("1_1")), path)
    monkeypatch.setattr(of, "MAX_BYTES", 1000)
    with pytest.raises(WeightsError, match="more than the 1000 allowed"):
        formats.read(path)
    monkeypatch.undo()
    with pytest.raises(WeightsError, match="onnx"):
        of.decode(b"\xff\xfe not protobuf at all")


def test_wrong_architecture_is_refused():
    w, model = _model("1_1-p0-none")
    g = model.graph
    convs = [n for n in g.node if n.op_type == "Conv"]
    g.node.remove(convs[5])
    with pytest.raises(WeightsError, match="has 25 Conv operations"):
        of.decode(model.SerializeToString())
    w, model = _model("1_1-p0-none")
    t = next(i for i in model.graph.initializer if i.name == "fire4.expand3x3.weight")
    t.CopyFrom(numpy_helper.from_array(np.zeros((128, 32, 1, 1), np.float32), t.name))
    with pytest.raises(WeightsError, match="fire4.expand3x3: expected one Conv with weight"):
        of.decode(model.SerializeToString())
    with pytest.raises(WeightsError, match="not the requested"):
        of.decode(_model("1_1-p1-none")[1].SerializeToString(), variant=Variant("1_1"))
