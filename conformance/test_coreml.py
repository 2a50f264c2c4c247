"""Core ML against coremltools 9.0 (``tox -e coreml``): coremltools reads the files our codecs
write (the spec, and every weight bit for bit through its own readers: the MIL program
loader and MIL blob-storage reader for an ``.mlpackage``, the NeuralNetwork spec's
``WeightParams`` for an ``.mlmodel``); our reader reads the files coremltools writes (an ML
program built with its MIL builder and ``ct.convert``, a NeuralNetwork from its
``NeuralNetworkBuilder``) to the same weights, and our evaluator runs them to the goldens.

coremltools cannot run a prediction off macOS, so what runs the files here is
:mod:`ports.formats.coreml_program`, the NumPy evaluator of their own ops.
"""

from __future__ import annotations

import warnings

import coremltools as ct  # the coreml environment runs this module
import numpy as np
import pytest
from coremltools import libmilstoragepython  # its blob reader (in the Linux wheels too)
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.frontend.milproto import load as milproto
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder

from conformance import golden
from conformance.harness import assert_agrees, tolerance
from conformance.inputs import inputs
from ports import formats
from ports import spec as S
from ports.formats import coreml_program, coreml_schema
from ports.layouts import oihw_to_hwio
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

VARIANTS = [v.id for v in all_variants()]
ATOL, RTOL = tolerance("coreml", "float32")  # the float32 bound of every engine
SIZE, BATCH = 224, 2


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def mil(name: str) -> str:
    return name.replace(".", "_")


def const_name(conv: S.Conv, part: str) -> str:
    """Our writer's const of ``conv``'s weight/bias: the conv's output is ``NAME_conv``
    (its ReLU's is ``NAME``) except a bypass conv, which has no ReLU."""
    base = mil(conv.name) if conv.name.endswith(".bypass") else f"{mil(conv.name)}_conv"
    return f"{base}_{part}_0"


# --- the schema ---------------------------------------------------------------------------------
def test_the_schema_has_coremltools_field_numbers():
    from coremltools.proto import FeatureTypes_pb2, MIL_pb2, Model_pb2, NeuralNetwork_pb2

    def theirs(name: str):
        first, *rest = name.split(".")
        for module in (Model_pb2, FeatureTypes_pb2, NeuralNetwork_pb2, MIL_pb2):
            d = module.DESCRIPTOR.message_types_by_name.get(first)
            if d is not None:
                break
        for part in rest:
            d = d.nested_types_by_name[part]
        return d

    problems = []
    for name, cls in coreml_schema.CLASSES.items():
        ours, other = cls.DESCRIPTOR, theirs(name)
        for f in ours.fields:
            t = other.fields_by_name.get(f.name)
            if t is None:
                problems.append(f"{name}.{f.name}: not in coremltools")
                continue
            if (t.number, t.type, t.is_repeated) != (f.number, f.type, f.is_repeated):
                problems.append(f"{name}.{f.name}: {t.number}/{t.type} vs {f.number}/{f.type}")
            if (t.containing_oneof and t.containing_oneof.name) != \
                    (f.containing_oneof and f.containing_oneof.name):
                problems.append(f"{name}.{f.name}: oneof differs")
            if t.enum_type is not None and \
                    {v.name: v.number for v in t.enum_type.values} != \
                    {v.name: v.number for v in f.enum_type.values}:
                problems.append(f"{name}.{f.name}: enum values differ")
    assert not problems, problems


# --- coremltools reads our files -----------------------------------------------------------------
@pytest.mark.parametrize("vid", VARIANTS)
def test_coremltools_reads_our_package_weight_for_weight(tmp_path, vid):
    w = seeded_weights(Variant.from_id(vid))
    path = tmp_path / "ours.mlpackage"
    formats.write(w, path)
    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    assert spec.specificationVersion == 6 and spec.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in spec.description.input] == ["input"]
    assert [o.name for o in spec.description.output] == ["logits"]
    # coremltools' own loader of the saved program (it type-checks every op), weights read by
    # its MIL blob reader
    prog = milproto.load(spec, specification_version=spec.specificationVersion,
                         file_weights_dir=model.weights_dir)
    func = prog.functions["main"]
    consts = {op.outputs[0].name: op.outputs[0].val for op in func.operations
              if op.op_type == "const"}
    assert [o.name for o in func.outputs] == ["logits"]
    assert tuple(func.outputs[0].shape[1:]) == (w.variant.num_classes,)
    pools = [op for op in func.operations if op.op_type == "max_pool"]
    assert len(pools) == 3 and all(bool(op.ceil_mode.val) for op in pools)
    for conv in w.variant.convs():
        for part in ("weight", "bias"):
            assert bits_equal(consts[const_name(conv, part)], w.tensors[f"{conv.name}.{part}"]), \
                (conv.name, part)
    reader = libmilstoragepython._BlobStorageReader(f"{model.weights_dir}/weight.bin")
    ops = spec.mlProgram.functions["main"].block_specializations["CoreML5"].operations
    by_name = {op.outputs[0].name: op for op in ops if op.type == "const"}
    for conv in w.variant.convs():
        for part in ("weight", "bias"):
            value = by_name[const_name(conv, part)].attributes["val"]
            assert value.WhichOneof("value") == "blobFileValue"
            got = reader.read_float_data(value.blobFileValue.offset)
            want = w.tensors[f"{conv.name}.{part}"]
            assert bits_equal(np.asarray(got).reshape(want.shape), want), (conv.name, part)


@pytest.mark.parametrize("vid", VARIANTS)
def test_coremltools_reads_our_mlmodel_weight_for_weight(tmp_path, vid):
    w = seeded_weights(Variant.from_id(vid))
    path = tmp_path / "ours.mlmodel"
    formats.write(w, path)
    spec = ct.utils.load_spec(str(path))
    assert spec.specificationVersion == 4 and spec.WhichOneof("Type") == "neuralNetwork"
    layers = [la for la in spec.neuralNetwork.layers if la.WhichOneof("layer") == "convolution"]
    assert [la.name for la in layers] == [c.name for c in w.variant.convs()]
    for la, conv in zip(layers, w.variant.convs()):
        p = la.convolution
        shape = (p.outputChannels, p.kernelChannels, *p.kernelSize)
        assert bits_equal(np.array(p.weights.floatValue, np.float32).reshape(shape),
                          w.tensors[f"{conv.name}.weight"]), conv.name
        assert bits_equal(np.array(p.bias.floatValue, np.float32),
                          w.tensors[f"{conv.name}.bias"]), conv.name
    pools = [la.pooling for la in spec.neuralNetwork.layers if la.WhichOneof("layer") == "pooling"]
    assert [p.WhichOneof("PoolingPaddingType") for p in pools][:3] == ["includeLastPixel"] * 3


# --- our reader and evaluator on files coremltools writes --------------------------------------
def mil_program(weights):
    """SqueezeNet as a coremltools MIL program (its builder, its names)."""
    variant = weights.variant
    t = weights.tensors

    def conv(c: S.Conv, x):
        return mb.conv(x=x, weight=t[f"{c.name}.weight"], bias=t[f"{c.name}.bias"],
                       strides=[c.stride] * 2, pad_type="custom", pad=[c.padding] * 4,
                       name=mil(c.name))

    @mb.program(input_specs=[mb.TensorSpec(shape=(BATCH, 3, SIZE, SIZE))])
    def prog(x):
        h = x
        for layer in variant.layers():
            if isinstance(layer, S.Conv):
                h = mb.relu(x=conv(layer, h), name=f"{mil(layer.name)}_relu")
            elif isinstance(layer, S.MaxPool):
                h = mb.max_pool(x=h, kernel_sizes=[3, 3], strides=[2, 2], pad_type="valid",
                                ceil_mode=True, name=layer.name)
            elif isinstance(layer, S.Fire):
                s = mb.relu(x=conv(layer.squeeze, h))
                e1 = mb.relu(x=conv(layer.expand1x1, s))
                e3 = mb.relu(x=conv(layer.expand3x3, s))
                out = mb.concat(values=[e1, e3], axis=1)
                if layer.bypass == "identity":
                    out = mb.add(x=out, y=h)
                elif layer.bypass == "conv":
                    out = mb.add(x=out, y=conv(layer.bypass_conv, h))
                h = out
            elif isinstance(layer, S.GlobalAvgPool):
                h = mb.reduce_mean(x=h, axes=[2, 3], keep_dims=False, name="logits")
        return h

    return prog


def nn_builder(weights):
    """SqueezeNet built with coremltools' NeuralNetworkBuilder."""
    variant = weights.variant
    t = weights.tensors
    builder = NeuralNetworkBuilder(
        [("input", datatypes.Array(1, 3, SIZE, SIZE))], [("logits", None)],
        disable_rank5_shape_mapping=True)

    def conv(c: S.Conv, x: str, out: str) -> str:
        builder.add_convolution(
            name=c.name, kernel_channels=c.in_channels, output_channels=c.out_channels,
            height=c.kernel, width=c.kernel, stride_height=c.stride, stride_width=c.stride,
            border_mode="valid", groups=1, W=oihw_to_hwio(t[f"{c.name}.weight"]),
            b=t[f"{c.name}.bias"], has_bias=True, input_name=x, output_name=out,
            padding_top=c.padding, padding_bottom=c.padding, padding_left=c.padding,
            padding_right=c.padding)
        return out

    def relu(name: str, x: str) -> str:
        builder.add_activation(f"{name}_relu", "RELU", x, name)
        return name

    h = "input"
    for layer in variant.layers():
        if isinstance(layer, S.Conv):
            h = relu(layer.name, conv(layer, h, f"{layer.name}_out"))
        elif isinstance(layer, S.MaxPool):
            builder.add_pooling(layer.name, 3, 3, 2, 2, "MAX", "INCLUDE_LAST_PIXEL", h,
                                layer.name)
            h = layer.name
        elif isinstance(layer, S.Fire):
            s = relu(layer.squeeze.name, conv(layer.squeeze, h, f"{layer.squeeze.name}_out"))
            e1 = relu(layer.expand1x1.name, conv(layer.expand1x1, s,
                                                 f"{layer.expand1x1.name}_out"))
            e3 = relu(layer.expand3x3.name, conv(layer.expand3x3, s,
                                                 f"{layer.expand3x3.name}_out"))
            cat = f"{layer.name}_concat" if layer.bypass else layer.name
            builder.add_elementwise(cat, [e1, e3], cat, "CONCAT")
            if layer.bypass:
                other = h if layer.bypass == "identity" else \
                    conv(layer.bypass_conv, h, layer.bypass_conv.name)
                builder.add_elementwise(f"{layer.name}_add", [cat, other], layer.name, "ADD")
            h = layer.name
        elif isinstance(layer, S.GlobalAvgPool):
            builder.add_pooling("pool10", 1, 1, 1, 1, "AVERAGE", "VALID", h, "pool10",
                                is_global=True)
            builder.add_flatten_to_2d("flatten", "pool10", "logits", axis=1)
    return builder.spec


def same_weights(got, want) -> list[str]:
    return [k for k in want.tensors if not bits_equal(got.tensors[k], want.tensors[k])]


@pytest.mark.parametrize("vid", VARIANTS)
def test_we_read_and_run_the_ml_program_coremltools_writes(tmp_path, vid, record_property):
    variant = Variant.from_id(vid)
    w = seeded_weights(variant)
    path = tmp_path / "theirs.mlpackage"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(mil_program(w), convert_to="mlprogram",
                           compute_precision=ct.precision.FLOAT32)
    model.save(str(path))
    back = formats.read(path)
    assert back.variant == variant, (back.variant, variant)
    assert same_weights(back, w) == []
    x = inputs(SIZE)[:BATCH]
    got = coreml_program.run(path, x)
    want = golden.load(vid, SIZE)[:BATCH]
    diff = float(np.abs(got - want).max())
    record_property("max_abs_diff", diff)
    print(f"{vid}: coremltools ML program, evaluator vs golden: max abs diff {diff:.3g}")
    assert_agrees(got, want, ATOL, RTOL, f"evaluator on coremltools' ML program {vid}")


@pytest.mark.parametrize("vid", VARIANTS)
def test_we_read_and_run_the_neural_network_coremltools_builds(tmp_path, vid, record_property):
    variant = Variant.from_id(vid)
    w = seeded_weights(variant)
    path = tmp_path / "theirs.mlmodel"
    ct.utils.save_spec(nn_builder(w), str(path))
    back = formats.read(path)
    assert back.variant == variant, (back.variant, variant)
    assert same_weights(back, w) == []
    x = inputs(SIZE)[:BATCH]
    got = coreml_program.run(path, x)
    want = golden.load(vid, SIZE)[:BATCH]
    diff = float(np.abs(got - want).max())
    record_property("max_abs_diff", diff)
    print(f"{vid}: coremltools NeuralNetworkBuilder, evaluator vs golden: max abs diff "
          f"{diff:.3g}")
    assert_agrees(got, want, ATOL, RTOL, f"evaluator on coremltools' NeuralNetwork {vid}")


@pytest.mark.parametrize("name,ext", [("coreml-package", ".mlpackage"), ("coreml", ".mlmodel")])
def test_our_files_run_to_the_goldens(tmp_path, name, ext):
    for vid in ("1_0-p1-complex", "1_1-p0-simple"):
        path = tmp_path / f"{vid}{ext}"
        formats.write(seeded_weights(Variant.from_id(vid)), path, name)
        got = coreml_program.run(path, inputs(SIZE)[:BATCH])
        assert_agrees(got, golden.load(vid, SIZE)[:BATCH], ATOL, RTOL, f"our {ext} {vid}")
