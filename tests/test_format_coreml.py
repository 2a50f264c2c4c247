"""Core ML codecs (``.mlmodel`` NeuralNetwork, ``.mlpackage`` ML program) and the NumPy
evaluator of their ops, framework-free (protobuf only, no coremltools).

coremltools reading our files, and our reader and evaluator on files coremltools writes, are
tested in ``conformance/test_coreml.py`` (``tox -e coreml``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import ports.numpy as reference
from conformance.harness import tolerance
from ports import formats
from ports.errors import WeightsError
from ports.formats import coreml, coreml_program, coreml_schema
from ports.numpy import trace as reference_trace
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

FORMATS = {"coreml": ".mlmodel", "coreml-package": ".mlpackage"}
MODEL = "Data/com.apple.CoreML/model.mlmodel"
WEIGHT_BIN = "Data/com.apple.CoreML/weights/weight.bin"
ATOL = tolerance("coreml", "float32")[0]  # the float32 bound of every engine (max abs)
SMALL = Variant("1_0", 10, 1, "complex")


def written(tmp_path: Path, variant: Variant, name: str) -> Path:
    path = tmp_path / f"{variant.id}{FORMATS[name]}"
    formats.write(seeded_weights(variant), path, name)
    return path


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def reference_logits(variant: Variant, x: np.ndarray) -> np.ndarray:
    return reference.predict(reference.load(seeded_weights(variant)), x.astype(np.float64))


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return written(tmp_path_factory.mktemp("coreml"), SMALL, "coreml-package")


def copy_of(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def model_of(path: Path):
    m = coreml_schema.Model()
    m.ParseFromString((path / MODEL).read_bytes())
    return m


def save_model(path: Path, model) -> None:
    (path / MODEL).write_bytes(model.SerializeToString())


def ops(model):
    return model.mlProgram.functions["main"].block_specializations[coreml.OPSET].operations


def const_op(model, name: str):
    return next(o for o in ops(model) if o.type == "const" and o.outputs[0].name == name)


# --- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: v.id)
def test_every_variant_round_trips_bit_for_bit(tmp_path, name, variant):
    w = seeded_weights(variant)
    path = tmp_path / f"w{FORMATS[name]}"
    assert formats.write(w, path, name) == [path]
    back = formats.read(path)  # detected from the ending
    assert back.variant == variant
    assert dict(back.meta) == dict(w.meta)
    for k, t in w.tensors.items():
        assert back.tensors[k].dtype == np.float32
        assert np.array_equal(back.tensors[k].view(np.uint32), t.view(np.uint32)), k


def test_registry_endings_and_layout(tmp_path, package):
    assert formats.detect("m.mlmodel") == "coreml"
    assert formats.detect(tmp_path / "M.MLPACKAGE") == "coreml-package"
    assert formats.FORMATS["coreml-package"].directory
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
    assert files == ["Data/com.apple.CoreML/model.mlmodel",
                     "Data/com.apple.CoreML/weights/weight.bin", "Manifest.json"]
    manifest = json.loads((package / "Manifest.json").read_text())
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    assert root["path"] == "com.apple.CoreML/model.mlmodel"
    assert {e["path"] for e in manifest["itemInfoEntries"].values()} == {
        "com.apple.CoreML/model.mlmodel", "com.apple.CoreML/weights"}
    m = model_of(package)
    assert m.specificationVersion == coreml.PROGRAM_SPEC_VERSION
    assert m.WhichOneof("Type") == "mlProgram"
    assert [i.name for i in m.description.input] == ["input"]
    assert [o.name for o in m.description.output] == ["logits"]
    kinds = {o.type for o in ops(m)}
    assert kinds == {"const", "conv", "relu", "max_pool", "concat", "add", "reduce_mean"}
    # every tensor float32; every weight and bias in weight.bin
    blobs = [o for o in ops(m) if o.type == "const"
             and o.attributes["val"].WhichOneof("value") == "blobFileValue"]
    assert len(blobs) == 2 * 30
    assert all(o.attributes["val"].type.tensorType.dataType
               == coreml_schema.DATA_TYPES["FLOAT32"] for o in blobs)
    pools = [o for o in ops(m) if o.type == "max_pool"]
    assert all(const_op(m, o.inputs["ceil_mode"].arguments[0].name)
               .attributes["val"].immediateValue.tensor.bools.values[0] for o in pools)
    # the same weights give the same bytes
    again = tmp_path / "again.mlpackage"
    formats.write(seeded_weights(SMALL), again)
    for rel in files:
        assert (again / rel).read_bytes() == (package / rel).read_bytes(), rel


def test_blob_storage_layout(package):
    """MIL blob storage: a 64-byte header (count, version 2); each blob a 64-aligned record
    (sentinel, Float32 = 2, size, offset) with its data right after."""
    data = (package / WEIGHT_BIN).read_bytes()
    count, version = np.frombuffer(data[:8], "<u4")
    assert (count, version) == (60, 2) and data[8:64] == bytes(56)
    m = model_of(package)
    offsets = [o.attributes["val"].blobFileValue.offset for o in ops(m) if o.type == "const"
               and o.attributes["val"].WhichOneof("value") == "blobFileValue"]
    assert offsets[0] == 64 and all(off % 64 == 0 for off in offsets)
    for off in offsets:
        sentinel, dtype = np.frombuffer(data[off:off + 8], "<u4")
        size, start = np.frombuffer(data[off + 8:off + 24], "<u8")
        assert (sentinel, dtype, start) == (0xDEADBEEF, 2, off + 64)
        assert start + size <= len(data)


def test_the_mlmodel_is_a_neural_network(tmp_path):
    path = written(tmp_path, SMALL, "coreml")
    m = coreml_schema.Model()
    m.ParseFromString(path.read_bytes())
    assert m.specificationVersion == coreml.NN_SPEC_VERSION
    layers = m.neuralNetwork.layers
    pools = [la.pooling for la in layers if la.WhichOneof("layer") == "pooling"]
    assert [p.WhichOneof("PoolingPaddingType") for p in pools] == \
        ["includeLastPixel"] * 3 + ["valid"]
    assert pools[-1].globalPooling
    conv10 = [la for la in layers if la.WhichOneof("layer") == "convolution"][-1].convolution
    assert [(b.startEdgeSize, b.endEdgeSize) for b in
            conv10.valid.paddingAmounts.borderAmounts] == [(1, 1), (1, 1)]
    assert layers[-1].output == ["logits"]


def test_unknown_fields_are_kept(tmp_path, package):
    """A field this schema does not declare (a newer Core ML's) survives parsing."""
    m = model_of(package)
    unknown = bytes([0xA0, 0x1F, 0x01])  # field 500 (a varint 1): not declared here
    again = coreml_schema.Model()
    again.ParseFromString(m.SerializeToString() + unknown)
    assert again.SerializeToString().endswith(unknown)
    assert again.mlProgram == m.mlProgram


# --- the evaluator --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: v.id)
def test_evaluator_matches_the_float64_reference(tmp_path, name, variant, record_property):
    path = written(tmp_path, variant, name)
    x = images(2, 67 if variant.version == "1_1" else 71, seed=3)
    got = coreml_program.run(path, x)
    ref = reference_logits(variant, x)
    assert got.dtype == np.float32 and got.shape == ref.shape == (2, variant.num_classes)
    diff = float(np.abs(got - ref).max())
    record_property("max_abs_diff", diff)
    print(f"{variant.id} {name}: max |logits - float64 reference| = {diff:.3g}")
    assert diff <= ATOL


def test_evaluator_batch_of_four_at_224_equals_the_reference(tmp_path):
    """(How fast it is is the bench's business, not a test's.)"""
    variant = Variant("1_0", 1000, 1, "complex")
    path = written(tmp_path, variant, "coreml-package")
    x = images(4, 224, seed=5)
    got = coreml_program.run(path, x)
    diff = float(np.abs(got - reference_logits(variant, x)).max())
    print(f"batch 4 at 224: max abs diff {diff:.3g}")
    assert diff <= ATOL


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_layer_trace_follows_the_reference(tmp_path, name):
    variant = Variant("1_1", 10, 0, "simple")
    path = written(tmp_path, variant, name)
    x = images(1, 96)
    got = coreml_program.spec_activations(path, x)
    ref = reference_trace.activations(reference.load(seeded_weights(variant)),
                                      x.astype(np.float64))
    assert list(got) == list(ref)
    for k, r in ref.items():
        assert got[k].shape == r.shape, k
        rel = np.abs(got[k] - r).max() / max(np.abs(r).max(), 1e-30)
        assert rel < 256 * 2.0**-24, (k, rel)


def test_the_evaluator_refuses_an_op_it_does_not_know(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    m = model_of(path)
    next(o for o in ops(m) if o.type == "relu").type = "gelu"
    save_model(path, m)
    with pytest.raises(WeightsError, match=r"op 'gelu' \('conv1'\) is not one this reader runs"):
        coreml_program.run(path, images(1, 64))


# --- planted defects ---------------------------------------------------------------------------
def test_one_weight_changed_by_one_percent_changes_the_output(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    w = seeded_weights(SMALL)
    x = images(2, 71)
    before = coreml_program.run(path, x)
    kernel = np.ascontiguousarray(w.tensors["conv10.weight"])
    data = bytearray((path / WEIGHT_BIN).read_bytes())
    start = bytes(data).find(kernel.tobytes())
    assert start > 0
    k = int(np.argmax(np.abs(kernel)))
    changed = kernel.ravel().copy()
    changed[k] *= np.float32(1.01)
    data[start:start + kernel.nbytes] = changed.tobytes()
    (path / WEIGHT_BIN).write_bytes(bytes(data))
    after = coreml_program.run(path, x)
    diff = float(np.abs(after - before).max())
    print(f"one conv10 weight +1%: logits move by {diff:.3g}")
    assert diff > 10 * ATOL
    assert np.abs(after - reference_logits(SMALL, x)).max() > ATOL
    back = formats.read(path)
    assert not np.array_equal(back.tensors["conv10.weight"], w.tensors["conv10.weight"])


def test_a_symbolic_link_inside_the_package_is_refused(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    outside = tmp_path / "outside.bin"
    shutil.copy(path / WEIGHT_BIN, outside)
    os.remove(path / WEIGHT_BIN)
    os.symlink(outside, path / WEIGHT_BIN)
    with pytest.raises(WeightsError, match="is a symbolic link"):
        formats.read(path)
    with pytest.raises(WeightsError, match="is a symbolic link"):
        coreml_program.run(path, images(1, 64))


def test_a_blob_offset_beyond_weight_bin_is_refused(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    m = model_of(path)
    size = (path / WEIGHT_BIN).stat().st_size
    const_op(m, "conv10_conv_weight_0").attributes["val"].blobFileValue.offset = size + 64
    save_model(path, m)
    with pytest.raises(WeightsError, match=r"blob offset \d+ is not a 64-aligned record inside"):
        formats.read(path)


def test_a_truncated_weight_bin_is_refused(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    data = (path / WEIGHT_BIN).read_bytes()
    (path / WEIGHT_BIN).write_bytes(data[:-4])
    with pytest.raises(WeightsError, match="is not inside"):
        formats.read(path)


def test_a_blob_record_without_its_sentinel_is_refused(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    data = bytearray((path / WEIGHT_BIN).read_bytes())
    data[64:68] = b"\0\0\0\0"
    (path / WEIGHT_BIN).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sentinel 0x00000000, expected 0xDEADBEEF"):
        formats.read(path)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_truncated_protobuf_is_refused(tmp_path, package, name):
    if name == "coreml":
        path = written(tmp_path, SMALL, "coreml")
        target = path
    else:
        path = copy_of(package, tmp_path / "p.mlpackage")
        target = path / MODEL
    data = target.read_bytes()
    for keep in (len(data) // 2, len(data) - 1, 7):
        target.write_bytes(data[:keep])
        with pytest.raises(WeightsError):
            formats.read(path)


def test_ceil_mode_false_is_refused_and_changes_the_output(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    m = model_of(path)
    const_op(m, "pool1_ceil_mode_0").attributes["val"].immediateValue.tensor.bools.values[0] = \
        False
    save_model(path, m)
    with pytest.raises(WeightsError, match="rounds its output size down"):
        formats.read(path)
    x = images(2, 225)  # v1.0: conv1 110 -> pool1 53 rounding down, 54 rounding up
    diff = np.abs(coreml_program.run(path, x) - reference_logits(SMALL, x)).max()
    assert diff > ATOL


def test_include_last_pixel_dropped_from_an_mlmodel_is_refused(tmp_path):
    path = written(tmp_path, SMALL, "coreml")
    m = coreml_schema.Model()
    m.ParseFromString(path.read_bytes())
    pool = next(la for la in m.neuralNetwork.layers if la.WhichOneof("layer") == "pooling")
    pool.pooling.valid.SetInParent()
    path.write_bytes(m.SerializeToString())
    with pytest.raises(WeightsError, match="rounds its output size down"):
        formats.read(path)


def test_conv10_padding_that_contradicts_the_metadata_is_refused(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    m = model_of(path)
    pad = const_op(m, "conv10_conv_pad_0").attributes["val"].immediateValue.tensor.ints.values
    pad[:] = [0, 0, 0, 0]
    save_model(path, m)
    with pytest.raises(WeightsError, match="the graph is SqueezeNet 1_0-p0-complex-c10, but its "
                                           "metadata says 1_0-p1-complex-c10"):
        formats.read(path)


def test_expand3x3_concatenated_first_is_refused(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    m = model_of(path)
    cat = next(o for o in ops(m) if o.type == "concat")
    args = cat.inputs["values"].arguments
    first, second = args[0].name, args[1].name
    args[0].name, args[1].name = second, first
    save_model(path, m)
    with pytest.raises(WeightsError, match="concatenates expand3x3 before expand1x1"):
        formats.read(path)


@pytest.mark.parametrize("root", ["../outside/model.mlmodel", "/etc/passwd"])
def test_a_manifest_path_out_of_the_package_is_refused(tmp_path, package, root):
    path = copy_of(package, tmp_path / "p.mlpackage")
    manifest = json.loads((path / "Manifest.json").read_text())
    manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"] = root
    (path / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="is not a plain path inside the package"):
        formats.read(path)


def test_a_weight_file_out_of_the_package_is_refused(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    m = model_of(path)
    const_op(m, "conv1_conv_weight_0").attributes["val"].blobFileValue.fileName = \
        "@model_path/../../../outside.bin"
    save_model(path, m)
    with pytest.raises(WeightsError, match="is not a plain path inside the package"):
        formats.read(path)


def test_a_missing_manifest_or_model_is_refused(tmp_path, package):
    path = copy_of(package, tmp_path / "p.mlpackage")
    os.remove(path / MODEL)
    with pytest.raises(WeightsError, match="is missing"):
        formats.read(path)
    os.remove(path / "Manifest.json")
    with pytest.raises(WeightsError, match="no Manifest.json: not a Core ML package"):
        formats.read(path)


def test_a_lone_mlmodel_naming_a_weight_file_is_refused(tmp_path, package):
    lone = tmp_path / "lone.mlmodel"
    shutil.copy(package / MODEL, lone)
    with pytest.raises(WeightsError, match="which a lone .mlmodel cannot have"):
        formats.read(lone)


def test_writes_are_atomic_and_keep_what_is_not_a_package(tmp_path):
    w = seeded_weights(SMALL)
    path = tmp_path / "p.mlpackage"
    formats.write(w, path)
    formats.write(seeded_weights(SMALL, seed=1), path)  # replaces a package
    assert not np.array_equal(formats.read(path).tensors["conv1.weight"], w.tensors["conv1.weight"])
    other = tmp_path / "other.mlpackage"
    other.mkdir()
    (other / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        formats.write(w, other)
    assert (other / "keep").read_text() == "mine"
    with pytest.raises(FileExistsError):
        formats.write(w, path, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.mlpackage", "p.mlpackage"]


def test_a_plain_file_named_mlpackage_is_refused_as_not_a_package(tmp_path):
    """The boundary names what a directory format's folder is (every directory format has
    its words in ``formats.FOLDERS``)."""
    path = tmp_path / "w.mlpackage"
    path.write_bytes(b"not a folder")
    with pytest.raises(WeightsError, match=r"not a directory \(a Core ML \.mlpackage is one\)"):
        formats.read(path)
    assert {n for n, f in formats.FORMATS.items() if f.directory} == set(formats.FOLDERS)


def test_the_same_weights_give_the_same_bytes_in_any_process():
    """Protobuf writes map fields (an op's attributes) in hash order unless told otherwise:
    two processes with different hash seeds write the same files."""
    import subprocess
    import sys

    code = ("import hashlib; from ports.formats import coreml; "
            "from ports.seeded import seeded_weights; from ports.spec import Variant; "
            "w = seeded_weights(Variant('1_1', 10)); model, blob = coreml.program(w); "
            "print(hashlib.sha256(model + blob + coreml.encode(w)).hexdigest())")
    root = Path(__file__).resolve().parent.parent
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, text=True, check=True,
                           capture_output=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1, outs
