"""Orbax checkpoint codec, framework-free (no Orbax, JAX or Flax needed for the layout it
writes: JSON and raw zarr chunks).

Real Orbax restoring our checkpoints into ``nnx.state(ports.flax.SqueezeNet(...))``, and our
reader on checkpoints Orbax saved itself (OCDBT, compressed), are tested in
``conformance/test_flax.py`` in the ``flax`` environment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ports import formats
from ports.cli import run
from ports.cli.convert import main as convert_main
from ports.errors import WeightsError
from ports.formats import _io
from ports.formats import orbax as codec
from ports.layouts import oihw_to_hwio
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

SMALL = Variant("1_1", 10)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A checkpoint of seeded 1_0-p1-complex-c10 weights (copied by tests that change it)."""
    path = tmp_path_factory.mktemp("orbax") / "w.orbax"
    codec.write(seeded_weights(Variant("1_0", 10, 1, "complex")), path)
    return path


def copy_of(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


def refuse(path, match: str | None = None, **kw) -> WeightsError:
    with pytest.raises(WeightsError, match=match) as info:
        formats.read(path, "orbax", **kw)
    return info.value


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


# --- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", all_variants() + [SMALL], ids=lambda v: v.id)
def test_round_trip_bit_exact(tmp_path, variant):
    w = seeded_weights(variant)
    path = tmp_path / "w.orbax"
    assert formats.write(w, path) == [path]
    back = formats.read(path)
    assert back.meta == w.meta
    assert set(back.tensors) == set(w.tensors)
    assert all(bits_equal(back[k], w[k]) for k in w.tensors)


def test_registry_detects_endings_and_existing_directories(tmp_path, ckpt):
    assert formats.detect(tmp_path / "w.orbax") == "orbax"
    assert formats.detect(f"{tmp_path}/W.ORBAX/") == "orbax"
    assert formats.outputs(tmp_path / "w.orbax") == [tmp_path / "w.orbax"]
    assert formats.FORMATS["orbax"].directory
    plain = copy_of(ckpt, tmp_path / "checkpoints" / "100")  # as Orbax names its steps
    assert formats.detect(plain) == "orbax"
    assert formats.read(plain).variant == Variant("1_0", 10, 1, "complex")
    with pytest.raises(WeightsError, match="cannot tell the format"):
        formats.detect(tmp_path / "missing")


def test_layout_is_orbax_pytree_without_ocdbt(ckpt):
    """The files ``ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_compression=False)``
    writes (the conformance test compares them byte for byte with Orbax's)."""
    w = formats.read(ckpt)
    files = sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file())
    table = codec.key_table(w.variant)
    expected = ["_CHECKPOINT_METADATA", "_METADATA"]
    for name, keys in table.items():
        base = ".".join(keys)
        expected += [f"{base}/.zarray", f"{base}/{'0.0.0.0' if name.endswith('weight') else '0'}"]
    assert files == sorted(expected)
    meta = json.loads((ckpt / "_METADATA").read_text())
    assert meta["use_ocdbt"] is False and meta["use_zarr3"] is False
    tree = meta["tree_metadata"]
    assert list(tree) == sorted(tree, key=lambda k: eval(k))  # NNX's sorted key order
    entry = tree["('fire2', 'squeeze', 'kernel', 'value')"]
    assert entry["key_metadata"] == [{"key": k, "key_type": 2}
                                     for k in ("fire2", "squeeze", "kernel", "value")]
    assert entry["value_metadata"] == {"value_type": "jax.Array", "skip_deserialize": False,
                                       "write_shape": [1, 1, 96, 16]}
    zarray = json.loads((ckpt / "conv1.kernel.value" / ".zarray").read_text())
    assert zarray == {"chunks": [7, 7, 3, 96], "compressor": None, "dimension_separator": ".",
                      "dtype": "<f4", "fill_value": None, "filters": None, "order": "C",
                      "shape": [7, 7, 3, 96], "zarr_format": 2}
    raw = (ckpt / "conv1.kernel.value" / "0.0.0.0").read_bytes()
    assert raw == oihw_to_hwio(w["conv1.weight"]).astype("<f4").tobytes()
    top = json.loads((ckpt / "_CHECKPOINT_METADATA").read_text())
    assert top["custom_metadata"] == {"squeezenet": w.meta}
    assert top["item_handlers"].endswith("StandardCheckpointHandler")
    assert abs(top["commit_timestamp_nsecs"] / 1e9 - time.time()) < 3600


def test_without_our_metadata_the_shapes_tell_the_variant(tmp_path, ckpt):
    """As a checkpoint Orbax saved: no custom_metadata.  conv10's padding is not in the
    shapes (0), complex bypass is; ``variant=`` supplies the rest."""
    plain = copy_of(ckpt, tmp_path / "c.orbax")
    top = json.loads((plain / "_CHECKPOINT_METADATA").read_text())
    top["custom_metadata"] = {}
    (plain / "_CHECKPOINT_METADATA").write_text(json.dumps(top))
    w = formats.read(plain)
    assert w.variant == Variant("1_0", 10, 0, "complex")
    assert w.meta["preprocessing"] == "none" and "inferred from shapes" in w.meta["source"]
    given = formats.read(plain, variant=Variant("1_0", 10, 1, "complex"))
    assert given.variant == Variant("1_0", 10, 1, "complex")
    os.remove(plain / "_CHECKPOINT_METADATA")  # optional for Orbax, and for us
    assert formats.read(plain).variant == Variant("1_0", 10, 0, "complex")


def test_a_pure_dict_checkpoint_without_value_keys_is_read(tmp_path):
    """``nnx.to_pure_dict(state)`` saved: the key paths end at ``kernel``/``bias``."""
    w = seeded_weights(SMALL)
    files = {}
    for rel, data in codec.encode(w).items():
        if rel == "_METADATA":
            meta = json.loads(data)
            meta["tree_metadata"] = {
                str(tuple(e["key_metadata"][i]["key"] for i in range(len(e["key_metadata"]) - 1))):
                {**e, "key_metadata": e["key_metadata"][:-1]}
                for e in meta["tree_metadata"].values()}
            data = json.dumps(meta).encode()
        files[rel.replace(".value/", "/")] = data
    back = formats.read(write_files(tmp_path / "p.orbax", files))
    assert all(bits_equal(back[k], w[k]) for k in w.tensors)


def _array_files(base: str, arr: np.ndarray, *, dtype: str, chunks=None, order="C",
                 separator=".") -> dict[str, bytes]:
    """One leaf in zarr v2 with the given dtype, chunking and order (edge chunks padded, as
    zarr stores them)."""
    chunks = tuple(chunks or arr.shape)
    numpy_dtype = "<u2" if dtype == "bfloat16" else dtype
    z = {"chunks": list(chunks), "compressor": None, "dimension_separator": separator,
         "dtype": dtype, "fill_value": None, "filters": None, "order": order,
         "shape": list(arr.shape), "zarr_format": 2}
    files = {f"{base}/.zarray": json.dumps(z).encode()}
    grid = [-(-s // c) for s, c in zip(arr.shape, chunks)]
    for index in np.ndindex(*grid):
        block = np.zeros(chunks, np.float32)
        region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks,
                                                                              arr.shape))
        block[tuple(slice(0, r.stop - r.start) for r in region)] = arr[region]
        if dtype == "bfloat16":
            data = (block.view(np.uint32) >> 16).astype("<u2")
        else:
            data = block.astype(numpy_dtype)
        files[f"{base}/{separator.join(map(str, index)) or '0'}"] = data.tobytes(order=order)
    return files


@pytest.mark.parametrize("dtype,chunks,order,separator", [
    ("<f8", None, "C", "."), (">f4", None, "C", "."), ("<f2", None, "F", "."),
    ("bfloat16", None, "C", "."), ("<f4", (2, 2, 2, 5), "C", "."),
    ("<f4", (3, 1, 2, 7), "F", "/")])
def test_other_zarr_layouts_are_read(tmp_path, dtype, chunks, order, separator):
    """Other dtypes (rounded or widened to float32), chunk grids with partial edge chunks,
    Fortran order and '/' chunk keys, in conv1's kernel."""
    w = seeded_weights(SMALL)
    values = oihw_to_hwio(w["conv1.weight"])  # [3, 3, 3, 64]
    if dtype == "bfloat16":
        values = (values.view(np.uint32) & 0xFFFF0000).view(np.float32)
    elif dtype == "<f2":
        values = values.astype(np.float16).astype(np.float32)
    files = dict(codec.encode(w))
    files = {k: v for k, v in files.items() if not k.startswith("conv1.kernel.value/")}
    files.update(_array_files("conv1.kernel.value", values, dtype=dtype, chunks=chunks,
                              order=order, separator=separator))
    back = formats.read(write_files(tmp_path / "x.orbax", files))
    assert np.array_equal(oihw_to_hwio(back["conv1.weight"]), values.astype(np.float32))
    assert back["conv1.weight"].dtype == np.float32


# --- writing: atomic, never over something else ------------------------------------------------
def test_overwrite_replaces_and_refuses_when_asked(tmp_path):
    a, b = seeded_weights(SMALL, seed=0), seeded_weights(SMALL, seed=1)
    path = tmp_path / "w.orbax"
    formats.write(a, path)
    with pytest.raises(FileExistsError):
        formats.write(b, path, overwrite=False)
    assert bits_equal(formats.read(path)["conv1.weight"], a["conv1.weight"])
    formats.write(b, path)
    assert bits_equal(formats.read(path)["conv1.weight"], b["conv1.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.orbax"]  # no temporaries


def test_never_replaces_what_is_not_a_checkpoint(tmp_path):
    w = seeded_weights(SMALL)
    other = tmp_path / "home.orbax"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    afile = tmp_path / "file.orbax"
    afile.write_bytes(b"previous")
    for dest in (other, afile):
        with pytest.raises(FileExistsError, match="not an Orbax checkpoint"):
            formats.write(w, dest)
    assert (other / "notes.txt").read_text() == "mine" and afile.read_bytes() == b"previous"
    empty = tmp_path / "empty.orbax"
    empty.mkdir()
    formats.write(w, empty)  # an empty directory holds nothing to lose
    assert formats.read(empty).variant == SMALL


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary(tmp_path,
                                                                        monkeypatch):
    path = tmp_path / "w.orbax"
    formats.write(seeded_weights(SMALL, seed=0), path)
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}

    def boom(root, files):
        (root / "_METADATA").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io, "_write_tree", boom)
    with pytest.raises(OSError, match="No space"):
        formats.write(seeded_weights(SMALL, seed=1), path)
    with pytest.raises(OSError, match="No space"):
        formats.write(seeded_weights(SMALL, seed=1), tmp_path / "new.orbax")
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.orbax"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = 2 ** 22 + 12345  # above pid_max's default: no such process
    stale = tmp_path / f".w.orbax.{dead}.abc.part"
    stale.mkdir()
    (stale / "_METADATA").write_text("{}")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    live = tmp_path / f".w.orbax.{os.getpid()}.def.part"
    live.mkdir()
    os.utime(live, (old, old))
    formats.write(seeded_weights(SMALL), tmp_path / "w.orbax")
    assert not stale.exists() and live.exists()


def test_convert_cli_writes_and_reads_checkpoints(tmp_path, capsys):
    src = tmp_path / "w.safetensors"
    formats.write(seeded_weights(Variant("1_0", 10, 1, "simple")), src)
    assert run(convert_main, [str(src), str(tmp_path / "c.orbax")], prog="convert") == 0
    assert run(convert_main, [str(tmp_path / "c.orbax"), str(tmp_path / "back.safetensors")],
               prog="convert") == 0
    out = capsys.readouterr().out
    assert "(orbax)" in out
    back = formats.read(tmp_path / "back.safetensors")
    assert back.variant == Variant("1_0", 10, 1, "simple")  # the metadata travelled
    assert run(convert_main, [str(src), str(tmp_path / "c.orbax")], prog="convert") == 2
    assert "exists; use --force" in capsys.readouterr().err


# --- bad and hostile checkpoints ------------------------------------------------------------------
def test_not_a_checkpoint(tmp_path):
    (tmp_path / "f.orbax").write_bytes(b"{}")
    refuse(tmp_path / "f.orbax", "not a directory")
    (tmp_path / "e.orbax").mkdir()
    refuse(tmp_path / "e.orbax", "no _METADATA file: not an Orbax PyTree checkpoint")
    refuse(tmp_path / "missing.orbax", "no such directory")


@pytest.mark.parametrize("data,match", [
    (b"", "_METADATA is not JSON"),
    (b"\xff\xfe", "_METADATA is not JSON"),
    (b"[" * 100000 + b"]" * 100000, "_METADATA is not JSON: RecursionError"),
    (b'{"tree": {}}', "no 'tree_metadata' map"),
    (b'{"tree_metadata": {}}', "lists no arrays"),
    (b'{"tree_metadata": {"a": {"key_metadata": "conv1"}}}', "key_metadata must be a list"),
    (b'{"tree_metadata": {"a": {"key_metadata": [{"key": 7}]}}}', "is not a plain name"),
])
def test_bad_tree_metadata(tmp_path, ckpt, data, match):
    bad = copy_of(ckpt, tmp_path / "b.orbax")
    (bad / "_METADATA").write_bytes(data)
    refuse(bad, match)


@pytest.mark.parametrize("key", ["..", "../../etc", "a/b", "conv1.kernel", "", "x" * 200,
                                 "\x00"])
def test_keys_that_are_not_plain_names_never_become_paths(tmp_path, ckpt, key):
    bad = copy_of(ckpt, tmp_path / "b.orbax")
    meta = json.loads((bad / "_METADATA").read_text())
    first = next(iter(meta["tree_metadata"].values()))
    first["key_metadata"][0]["key"] = key
    (bad / "_METADATA").write_text(json.dumps(meta))
    refuse(bad, "is not a plain name")


def test_an_oversized_metadata_file_is_refused_unread(tmp_path, ckpt):
    bad = copy_of(ckpt, tmp_path / "b.orbax")
    with open(bad / "_METADATA", "r+b") as f:
        f.truncate(codec.MAX_JSON + 1)  # sparse: nothing is really written
    refuse(bad, "more than the .* allowed")


def test_wrong_keys_and_shapes_are_named(tmp_path, ckpt):
    bad = copy_of(ckpt, tmp_path / "b.orbax")
    meta = json.loads((bad / "_METADATA").read_text())
    entries = meta["tree_metadata"]
    entries.pop("('fire3', 'squeeze', 'bias', 'value')")
    extra = dict(entries["('conv1', 'bias', 'value')"])
    extra["key_metadata"] = [{"key": k, "key_type": 2} for k in ("head", "bias", "value")]
    entries["('head', 'bias', 'value')"] = extra
    (bad / "_METADATA").write_text(json.dumps(meta))
    e = refuse(bad, "does not match SqueezeNet 1_0-p1-complex-c10")
    assert "missing key path: fire3/squeeze/bias; unexpected key path: head/bias" in e.reason
    bad = copy_of(ckpt, tmp_path / "s.orbax")
    z = json.loads((bad / "fire2.squeeze.kernel.value" / ".zarray").read_text())
    z["shape"] = z["chunks"] = [1, 1, 16, 96]
    (bad / "fire2.squeeze.kernel.value" / ".zarray").write_text(json.dumps(z))
    refuse(bad, r"fire2/squeeze/kernel: expected shape \[1, 1, 96, 16\] \(HWIO\), got "
                r"\[1, 1, 16, 96\]")


def test_metadata_naming_another_variant_is_refused(tmp_path, ckpt):
    bad = copy_of(ckpt, tmp_path / "b.orbax")
    top = json.loads((bad / "_CHECKPOINT_METADATA").read_text())
    top["custom_metadata"]["squeezenet"]["variant"] = "1_1"
    (bad / "_CHECKPOINT_METADATA").write_text(json.dumps(top))
    refuse(bad, "does not match SqueezeNet 1_1")
    top["custom_metadata"]["squeezenet"] = {"variant": 1}
    (bad / "_CHECKPOINT_METADATA").write_text(json.dumps(top))
    refuse(bad, "must map strings to strings")


@pytest.mark.parametrize("change,match", [
    ({"zarr_format": 3}, "not zarr v2"),
    ({"dtype": "<i4"}, "dtype '<i4'"),
    ({"dtype": "|O"}, "dtype '|O'"),
    ({"shape": [7, 7, 3, 2 ** 41]}, "shape must be a list"),
    ({"shape": [-1, 7, 3, 96]}, "shape must be a list"),
    ({"chunks": [0, 7, 3, 96]}, "chunks must be a list"),
    ({"chunks": [1, 1, 1, 1]}, "chunks, more than"),
    ({"chunks": [7, 7, 3]}, "differ in rank"),
    ({"filters": [{"id": "delta"}]}, "filters are not supported"),
    ({"order": "K"}, "order"),
])
def test_bad_zarr_metadata(tmp_path, ckpt, change, match):
    bad = copy_of(ckpt, tmp_path / "b.orbax")
    path = bad / "conv1.kernel.value" / ".zarray"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    refuse(bad, match)


def test_chunks_must_be_regular_files_of_the_exact_size(tmp_path, ckpt):
    chunk = Path("fire4.expand3x3.kernel.value") / "0.0.0.0"
    bad = copy_of(ckpt, tmp_path / "t.orbax")
    data = (bad / chunk).read_bytes()
    (bad / chunk).write_bytes(data[:-1])
    refuse(bad, "has .* bytes, its metadata needs")
    (bad / chunk).write_bytes(data + b"\0")
    refuse(bad, "has .* bytes, its metadata needs")
    os.remove(bad / chunk)
    refuse(bad, "fire4.expand3x3.kernel.value/0.0.0.0 is missing")
    os.mkfifo(bad / chunk)  # opening it would block forever
    refuse(bad, "is not a regular file")
    os.remove(bad / chunk)
    os.symlink("/dev/zero", bad / chunk)
    refuse(bad, "is not a regular file")


def test_a_nan_in_a_chunk_is_refused_by_the_spec_check(tmp_path, ckpt):
    bad = copy_of(ckpt, tmp_path / "n.orbax")
    chunk = bad / "conv10.bias.value" / "0"
    values = np.frombuffer(chunk.read_bytes(), "<f4").copy()
    values[3] = np.nan
    chunk.write_bytes(values.tobytes())
    refuse(bad, "conv10.bias: 1 non-finite values")


@pytest.mark.parametrize("how", ["ocdbt", "zstd"])
def test_orbax_default_layout_without_orbax_names_the_extra(tmp_path, ckpt, monkeypatch, how):
    """An OCDBT database or compressed chunks (what Orbax writes by default) are read through
    Orbax; where it cannot be imported, the message says what to install."""
    monkeypatch.setitem(sys.modules, "orbax", None)  # importing it fails, as without it
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    bad = copy_of(ckpt, tmp_path / "d.orbax")
    if how == "ocdbt":
        (bad / "manifest.ocdbt").write_bytes(b"\x0c\xdb:*")
    else:
        path = bad / "conv10.kernel.value" / ".zarray"
        path.write_text(json.dumps({**json.loads(path.read_text()),
                                    "compressor": {"id": "zstd", "level": 1}}))
    e = refuse(bad, "read through Orbax, which cannot be imported")
    assert 'pip install "squeezenet-ports[flax]"' in e.reason


def test_the_fuzzer_mutates_files_inside_the_checkpoint(tmp_path):
    from ports import fuzz

    seeds = fuzz.build_seeds("orbax", tmp_path, log=lambda _: None)
    assert {s.path.relative_to(s.root).as_posix() for s in seeds} == set(
        fuzz.seeds.MEMBERS["orbax"])
    assert all(s.target == s.root and s.root.is_dir() for s in seeds)
    s = fuzz.fuzz("orbax", 40, out=tmp_path / "out", log=lambda _: None, progress_every=0)
    assert s.cases == 40 and not s.crashes and s.rejected > 0
