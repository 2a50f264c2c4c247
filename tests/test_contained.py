"""A reader reads only what it was given: an Orbax checkpoint only from its own folder, an
MXNet export pair only from its own two files.  Symbolic links inside (to a copy of the very
same bytes, so following them would succeed), FIFOs and devices are refused; a folder changed
between the check and the read is refused, not read through; Orbax itself gets a private
copy of the checked files."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from opens import audited
from test_hostile import deadline

from ports import formats
from ports.errors import WeightsError
from ports.formats import orbax as codec
from ports.formats._folder import Folder, read_file
from ports.fuzz import hostile_folders as hf
from ports.seeded import seeded_weights

BUILDERS = [b for builders in hf.BUILDERS.values() for b in builders]


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def ckpt(tmp_path) -> Path:
    path = tmp_path / "c.orbax"
    formats.write(seeded_weights(hf.SEED_VARIANT), path, "orbax")
    return path


# --- the hostile inputs -----------------------------------------------------------------------
@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_a_link_to_the_same_bytes_outside_is_refused_and_the_honest_twin_reads(tmp_path, build):
    h = build(tmp_path)
    assert h.link.is_symlink() and not h.outside.is_symlink()
    assert h.folder not in h.outside.parents
    want = seeded_weights(hf.SEED_VARIANT).tensors
    assert same(formats.read(h.honest, h.format).tensors, want)
    # Following the link is the only way the hostile input reads: with it followed, it does.
    followed = tmp_path / "followed"
    if formats.FORMATS[h.format].directory:
        shutil.copytree(h.path, followed / h.path.name, symlinks=False)
    else:
        shutil.copytree(h.folder, followed, symlinks=False)
    assert same(formats.read(followed / h.path.name, h.format).tensors, want)
    with deadline(30), pytest.raises(WeightsError) as info:
        formats.read(h.path, h.format)
    e = info.value
    assert e.format == h.format
    assert h.entry in str(e) and "is a symbolic link" in e.reason
    assert f"(to {h.outside})" in e.reason, e.reason


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_convert_refuses_the_link_and_opens_nothing_outside(tmp_path, build):
    h = build(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    audit = audited(["tools/convert", str(h.path), str(out / "w.safetensors")])
    assert audit.returncode == 2, audit.stderr
    assert "symbolic link" in audit.stderr and h.entry in audit.stderr, audit.stderr
    assert audit.processes, "the audit hook was not installed"
    assert not audit.opened(h.outside)
    assert audit.outside(h.folder, out) == []
    assert list(out.iterdir()) == []


def test_the_honest_twin_converts_under_the_audit(tmp_path):
    h = hf.orbax_chunk_link(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    audit = audited(["tools/convert", str(h.honest), str(out / "w.safetensors")])
    assert audit.returncode == 0, audit.stderr
    assert audit.opened(h.honest / hf.CHUNK)
    assert audit.outside(h.honest, out) == []


def test_a_root_the_user_named_through_a_link_is_read(tmp_path, ckpt):
    named = tmp_path / "named.orbax"
    os.symlink(ckpt, named)
    assert same(formats.read(named, "orbax").tensors, seeded_weights(hf.SEED_VARIANT).tensors)


def test_a_link_deep_inside_or_dangling_is_refused(tmp_path, ckpt):
    os.symlink("/nonexistent/target", ckpt / "conv10.bias.value" / "stray")
    with pytest.raises(WeightsError, match=r"conv10.bias.value/stray is a symbolic link "
                       r"\(to /nonexistent/target\)"):
        formats.read(ckpt, "orbax")


# --- FIFOs, devices, bounds -------------------------------------------------------------------
def test_a_fifo_inside_the_folder_is_refused_without_blocking(ckpt):
    os.mkfifo(ckpt / "conv1.kernel.value" / "extra")  # named by nothing: only the walk sees it
    with deadline(10), pytest.raises(WeightsError, match=r"conv1.kernel.value/extra is not "
                                     r"a regular file or folder \(a FIFO\)"):
        formats.read(ckpt, "orbax")


def test_a_device_inside_the_folder_is_refused_without_opening_it(ckpt):
    chunk = ckpt / hf.CHUNK
    chunk.unlink()
    try:
        os.mknod(chunk, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    except (PermissionError, AttributeError, OSError) as e:
        pytest.skip(f"cannot make a device node here: {e}")
    with deadline(10), pytest.raises(WeightsError, match=f"{hf.CHUNK} is not a regular file "
                                     r"or folder \(a character device\)"):
        formats.read(ckpt, "orbax")


def test_the_walk_is_bounded(tmp_path):
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(6):
        (wide / f"f{i}").write_bytes(b"")
    with pytest.raises(WeightsError, match="holds more than 5 files and folders"):
        Folder.check(wide, max_entries=5)
    assert len(Folder.check(wide, max_entries=6).files()) == 6
    deep = tmp_path / "deep"
    (deep / "a" / "b" / "c" / "d").mkdir(parents=True)
    with pytest.raises(WeightsError, match="a/b/c/d is nested 4 folders deep, more than the 3"):
        Folder.check(deep, max_depth=3)
    folder = Folder.check(deep, max_depth=4)
    assert folder.is_dir("a/b/c/d") and folder.listdir("a") == ["b"] and not folder.files()


def test_the_record_answers_questions_and_reads_bounded(ckpt):
    folder = Folder.check(ckpt)
    assert folder.exists(hf.CHUNK) and not folder.is_dir(hf.CHUNK)
    assert folder.is_dir(hf.LEAF) and folder.listdir(hf.LEAF) == [".zarray", "0.0.0.0"]
    assert "_METADATA" in folder.listdir() and not folder.exists("nothing")
    size = (ckpt / hf.CHUNK).stat().st_size
    assert folder.read(hf.CHUNK, "c", exact=size) == (ckpt / hf.CHUNK).read_bytes()
    with pytest.raises(WeightsError, match=f"c has {size} bytes, its metadata needs 4"):
        folder.read(hf.CHUNK, "c", exact=4)
    with pytest.raises(WeightsError, match="more than the 4 allowed"):
        folder.read(hf.CHUNK, "c", limit=4)
    with pytest.raises(WeightsError, match="x is missing"):
        folder.read("nothing", "x")
    with pytest.raises(WeightsError, match=r"is not a regular file \(a directory\)"):
        folder.read(hf.LEAF, "leaf")


# --- races: the folder changes after the check ------------------------------------------------
def _swap_leaf(ckpt: Path, outside: Path) -> None:
    """Move the leaf folder aside and put a link to an identical copy in its place."""
    os.rename(ckpt / hf.LEAF, ckpt.parent / "aside")
    os.symlink(outside, ckpt / hf.LEAF)


def test_a_folder_swapped_for_a_link_between_check_and_open_is_refused(tmp_path, ckpt,
                                                                      monkeypatch):
    outside = tmp_path / "outside" / hf.LEAF
    shutil.copytree(ckpt / hf.LEAF, outside)
    real_open, swapped = os.open, []

    def racing_open(path, flags, *args, **kw):
        if not swapped and os.fspath(path).endswith("/" + hf.CHUNK):
            _swap_leaf(ckpt, outside)  # after the walk, just before the chunk is opened
            swapped.append(os.fspath(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", racing_open)
    with pytest.raises(WeightsError, match=f"{hf.CHUNK} is not the file that was checked: a "
                       "path to it leads elsewhere after the folder was checked"):
        formats.read(ckpt, "orbax")
    assert swapped == [str(ckpt / hf.CHUNK)]


def test_a_file_swapped_for_a_link_after_the_check_is_refused(tmp_path, ckpt):
    folder = Folder.check(ckpt)
    outside = tmp_path / "0.0.0.0"
    os.rename(ckpt / hf.CHUNK, outside)
    os.symlink(outside, ckpt / hf.CHUNK)
    with pytest.raises(WeightsError, match=f"{hf.CHUNK} was replaced after the folder was "
                       "checked"):
        folder.read(hf.CHUNK, hf.CHUNK)
    os.unlink(ckpt / hf.CHUNK)
    with pytest.raises(WeightsError, match=f"{hf.CHUNK} disappeared after"):
        folder.read(hf.CHUNK, hf.CHUNK)


def test_a_file_rewritten_after_the_check_is_not_copied(tmp_path, ckpt):
    folder = Folder.check(ckpt)
    (ckpt / "new").write_bytes((ckpt / hf.CHUNK).read_bytes())
    os.replace(ckpt / "new", ckpt / hf.CHUNK)  # same bytes, another file
    with pytest.raises(WeightsError, match="is not the file that was checked"):
        folder.private_copy(tmp_path / "copy", 1 << 30)


# --- what Orbax is given ----------------------------------------------------------------------
def test_orbax_is_given_a_private_copy_of_the_checked_files(tmp_path, ckpt, monkeypatch):
    """The OCDBT layout goes to Orbax: it gets a copy in a temporary directory holding exactly
    the checked files, byte for byte, never the user's folder (Orbax itself is faked here,
    and its import made to fail: it is not installed in the core environment)."""
    monkeypatch.setitem(sys.modules, "orbax", None)
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    monkeypatch.setattr(codec, "_orbax", lambda: None)
    (ckpt / codec.OCDBT_MANIFEST).write_bytes(b"\x0c\xdb:*")  # Orbax's layout: not plain
    checked = Folder.check(ckpt)
    handed: list[Path] = []

    def leaves(directory):
        directory = Path(directory)
        handed.append(directory)
        assert ckpt.resolve() not in directory.resolve().parents
        copy = Folder.check(directory)
        assert copy.files() == checked.files()
        for rel in checked.files():
            assert (directory / rel).read_bytes() == (ckpt / rel).read_bytes()
        tree, _ = codec._tree(copy)
        return copy, {keys: codec._zarr_header(copy, keys) for keys in tree}

    def fake_shapes(directory):
        _, headers = leaves(directory)
        return {keys: z["shape"] for keys, z in headers.items()}

    def fake_arrays(directory):
        copy, headers = leaves(directory)
        return {keys: codec._zarr_array(copy, keys, z) for keys, z in headers.items()}

    monkeypatch.setattr(codec, "_orbax_shapes", fake_shapes)
    monkeypatch.setattr(codec, "_orbax_arrays", fake_arrays)
    back = formats.read(ckpt, "orbax")
    assert same(back.tensors, seeded_weights(hf.SEED_VARIANT).tensors)
    assert len(handed) == 2 and len(set(handed)) == 1  # one copy per read
    assert not handed[0].exists()                      # removed after the read


def test_orbax_is_given_nothing_from_a_folder_with_a_link(tmp_path, monkeypatch):
    h = hf.orbax_chunk_link(tmp_path)
    (h.path / codec.OCDBT_MANIFEST).write_bytes(b"\x0c\xdb:*")
    handed = []
    monkeypatch.setattr(codec, "_orbax", lambda: None)
    monkeypatch.setattr(codec, "_orbax_shapes", lambda d: handed.append(d))
    monkeypatch.setattr(codec, "_orbax_arrays", lambda d: handed.append(d))
    with pytest.raises(WeightsError, match="is a symbolic link"):
        formats.read(h.path, "orbax")
    assert handed == []


def test_a_private_copy_is_bounded(tmp_path, ckpt):
    folder = Folder.check(ckpt)
    with pytest.raises(WeightsError, match="bytes of files, more than the 1000 allowed"):
        folder.private_copy(tmp_path / "copy", 1000)
    assert not (tmp_path / "copy").exists()


# --- one file ---------------------------------------------------------------------------------
def test_read_file_refuses_links_and_special_files(tmp_path):
    real = tmp_path / "real"
    real.write_bytes(b"abc")
    assert read_file(real, "f") == b"abc"
    os.symlink(real, tmp_path / "link")
    with pytest.raises(WeightsError, match=f"f is a symbolic link \\(to {real}\\)"):
        read_file(tmp_path / "link", "f", noun="an MXNet export pair")
    os.mkfifo(tmp_path / "fifo")
    with deadline(10), pytest.raises(WeightsError, match=r"is not a regular file \(a FIFO\)"):
        read_file(tmp_path / "fifo", "f")
    with pytest.raises(WeightsError, match="f is missing"):
        read_file(tmp_path / "none", "f")
    with pytest.raises(WeightsError, match="more than the 2 allowed"):
        read_file(real, "f", limit=2)
