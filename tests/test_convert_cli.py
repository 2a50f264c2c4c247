"""``tools/convert``: real weights through safetensors and Caffe, refusals with exit status 2
and one line on stderr, no output left behind, ``--force`` and ``--variant``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_or_skip

from ports import formats
from ports.cli import run
from ports.cli.convert import main
from ports.seeded import seeded_weights
from ports.spec import Variant

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "convert"
DC_NET = "weights/deep-compression/compressed_SqueezeNet.net"


def convert(*args, capsys) -> tuple[int, str, str]:
    code = run(main, [str(a) for a in args], prog="convert")
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def nothing_but(directory: Path, *names: str) -> None:
    """No output, and no temporary file, was left behind."""
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


def bits_equal(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.fixture(scope="module")
def net():
    return shared_or_skip(DC_NET)


def test_tool_converts_the_release_and_reports_its_counts(tmp_path, net):
    """The executable itself, as a user runs it."""
    dst = tmp_path / "w.safetensors"
    proc = subprocess.run([sys.executable, str(TOOL), str(net), str(dst)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    read_line, wrote_line = proc.stdout.strip().splitlines()
    assert read_line.startswith(f"read  {net} (deepcompression): SqueezeNet 1_0-p1-none, "
                                "52 tensors, 1,248,424 parameters, 415,921 of 1,244,448 "
                                "weights non-zero")
    assert "source 'Deep Compression .net (compressed_SqueezeNet.net)'" in read_line
    assert wrote_line == f"wrote {dst} (safetensors, {dst.stat().st_size:,} bytes)"
    w = formats.read(dst)
    assert w.num_params() == 1_248_424
    assert sum(int((t != 0).sum()) for k, t in w.tensors.items() if k.endswith("weight")) \
        == 415_921
    assert w.meta["preprocessing"] == "caffe" and w.variant.final_conv_padding == 1


def test_safetensors_to_caffe_and_back_is_bit_exact(tmp_path, net, capsys):
    w_st, w_cm, w2 = tmp_path / "w.safetensors", tmp_path / "w.caffemodel", \
        tmp_path / "w2.safetensors"
    assert convert(net, w_st, capsys=capsys)[0] == 0
    code, out, _ = convert(w_st, w_cm, capsys=capsys)
    assert code == 0
    assert f"wrote {tmp_path / 'w.prototxt'} (caffe, " in out
    code, out, _ = convert(w_cm, w2, capsys=capsys)
    assert code == 0 and "(caffe): SqueezeNet 1_0-p1-none" in out
    a, b = formats.read(w_st), formats.read(w2)
    assert set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        assert bits_equal(a[k], b[k]), k
    nothing_but(tmp_path, "w.safetensors", "w.caffemodel", "w.prototxt", "w2.safetensors")


def test_existing_output_is_kept_without_force(tmp_path, capsys):
    src = tmp_path / "s.safetensors"
    formats.write(seeded_weights(Variant("1_1")), src)
    dst = tmp_path / "d.safetensors"
    dst.write_bytes(b"precious")
    code, out, err = convert(src, dst, capsys=capsys)
    refused(code, err, str(dst), "exists; use --force")
    assert dst.read_bytes() == b"precious" and out == ""
    code, _, _ = convert(src, dst, "--force", capsys=capsys)
    assert code == 0
    assert bits_equal(formats.read(dst)["conv1.weight"], formats.read(src)["conv1.weight"])
    nothing_but(tmp_path, "s.safetensors", "d.safetensors")


def test_existing_prototxt_beside_a_caffemodel_is_kept_without_force(tmp_path, capsys):
    src = tmp_path / "s.safetensors"
    formats.write(seeded_weights(Variant("1_1")), src)
    (tmp_path / "d.prototxt").write_text("mine")
    code, _, err = convert(src, tmp_path / "d.caffemodel", capsys=capsys)
    refused(code, err, "d.prototxt exists")
    nothing_but(tmp_path, "s.safetensors", "d.prototxt")
    assert convert(src, tmp_path / "d.caffemodel", "--force", capsys=capsys)[0] == 0
    assert (tmp_path / "d.prototxt").read_text().startswith("# SqueezeNet 1_1-p0-none")


@pytest.mark.parametrize("cut", [0, 50, 600_000, -1])
def test_truncated_net_is_refused_and_leaves_no_output(tmp_path, net, capsys, cut):
    bad = tmp_path / "bad.net"
    blob = net.read_bytes()
    bad.write_bytes(blob[:cut] if cut >= 0 else blob[:-1])
    code, out, err = convert(bad, tmp_path / "out.safetensors", capsys=capsys)
    refused(code, err, str(bad), "(deepcompression)")
    assert out == ""
    nothing_but(tmp_path, "bad.net")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_caffemodel_is_refused_and_leaves_no_output(tmp_path, capsys, damage):
    good = tmp_path / "good.caffemodel"
    formats.write(seeded_weights(Variant("1_0", 1000, 1)), good)
    bad = tmp_path / "bad.caffemodel"
    blob = good.read_bytes()
    bad.write_bytes(blob[: len(blob) // 3] if damage == "truncate"
                    else np.random.default_rng(3).integers(0, 256, 5000, np.uint8).tobytes())
    code, _, err = convert(bad, tmp_path / "out.safetensors", capsys=capsys)
    refused(code, err, str(bad), "(caffe)")
    nothing_but(tmp_path, "good.caffemodel", "good.prototxt", "bad.caffemodel")


def test_prototxt_with_unknown_layer_type_is_refused(tmp_path, capsys):
    model = tmp_path / "m.caffemodel"
    formats.write(seeded_weights(Variant("1_1")), model)
    deploy = tmp_path / "m.prototxt"
    bad = tmp_path / "bad.prototxt"
    bad.write_text(deploy.read_text().replace('type: "Concat"', 'type: "Crop"', 1))
    code, _, err = convert(model, tmp_path / "o.safetensors", "--prototxt", bad, capsys=capsys)
    refused(code, err, str(bad), "'fire2/concat' has type 'Crop'")
    nothing_but(tmp_path, "m.caffemodel", "m.prototxt", "bad.prototxt")


def test_variant_makes_the_read_strict(tmp_path, net, capsys):
    code, _, err = convert(net, tmp_path / "a.safetensors", "--variant", "1_1-p0-none",
                           capsys=capsys)
    refused(code, err, "1_1-p0-none")
    src = tmp_path / "s.safetensors"
    formats.write(seeded_weights(Variant("1_0", 1000, 1, "simple")), src)
    code, _, err = convert(src, tmp_path / "b.safetensors", "--variant", "1_0-p1-none",
                           capsys=capsys)
    refused(code, err, "variant 1_0-p1-simple (from metadata), expected 1_0-p1-none")
    code, _, err = convert(src, tmp_path / "b.safetensors", "--variant", "1_0-x", capsys=capsys)
    refused(code, err, "variant id")
    code, out, _ = convert(net, tmp_path / "c.safetensors", "--variant", "1_0-p1-none",
                           capsys=capsys)
    assert code == 0 and "SqueezeNet 1_0-p1-none" in out
    # A .net does not record conv10's padding: --variant supplies it.
    code, out, _ = convert(net, tmp_path / "d.safetensors", "--variant", "1_0-p0-none",
                           capsys=capsys)
    assert code == 0 and formats.read(tmp_path / "d.safetensors").variant.final_conv_padding == 0


def test_formats_can_be_named(tmp_path, net, capsys):
    src = tmp_path / "release.bin"
    src.write_bytes(net.read_bytes())
    code, _, err = convert(src, tmp_path / "out.weights", capsys=capsys)
    refused(code, err, "cannot tell the format")
    code, out, _ = convert(src, tmp_path / "out.weights", "--from", "deepcompression",
                           "--to", "caffe", capsys=capsys)
    assert code == 0
    assert formats.read(tmp_path / "out.weights", "caffe").num_params() == 1_248_424
    assert (tmp_path / "out.prototxt").exists()


def test_missing_input_and_output_directory(tmp_path, capsys):
    code, _, err = convert(tmp_path / "nope.net", tmp_path / "o.safetensors", capsys=capsys)
    refused(code, err, "nope.net", "no such file")
    src = tmp_path / "s.safetensors"
    formats.write(seeded_weights(Variant("1_1")), src)
    code, _, err = convert(src, tmp_path / "no" / "o.safetensors", capsys=capsys)
    refused(code, err, "does not exist")


def test_tool_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_bytes(b"\x01\x02\x03")
    proc = subprocess.run([sys.executable, str(TOOL), str(bad), str(tmp_path / "o.caffemodel")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "bad.net" in proc.stderr
    assert proc.stdout == ""
    nothing_but(tmp_path, "bad.net")


def test_read_options_come_from_the_registry(tmp_path, capsys):
    """``--prototxt``, ``--preprocessing``, ``--bits``: each applies to its format's SRC."""
    src = tmp_path / "s.safetensors"
    formats.write(seeded_weights(Variant("1_1")), src)
    code, _, err = convert(src, tmp_path / "o.pth", "--prototxt", tmp_path / "x.prototxt",
                           capsys=capsys)
    refused(code, err, "--prototxt applies to SRC of format caffe, not safetensors")
    params = tmp_path / "w.params"
    formats.write(seeded_weights(Variant("1_1")), params)
    code, _, _ = convert(params, tmp_path / "o.safetensors", "--preprocessing", "caffe",
                         capsys=capsys)
    assert code == 0
    assert formats.read(tmp_path / "o.safetensors").meta["preprocessing"] == "caffe"
    nothing_but(tmp_path, "s.safetensors", "w.params", "o.safetensors")
