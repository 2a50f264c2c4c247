"""The Deep Compression ``.net`` codec: the real release, an independent decoder, round trips
of quantized weights, and every kind of inconsistent file refused with one clear error."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from conftest import shared_or_skip

from ports import formats
from ports.errors import WeightsError
from ports.formats import deepcompression as dc
from ports.formats.canonical import Weights
from ports.seeded import seeded_weights
from ports.spec import Variant

DC_NET = "weights/deep-compression/compressed_SqueezeNet.net"
V10 = Variant("1_0", 1000, 1, "none")


def independent_decode(blob: bytes, variant: Variant) -> dict[str, np.ndarray]:
    """Straight from SQUEEZENET-FACTS.md, entry by entry in pure Python (8-bit codes)."""
    convs = list(variant.convs())
    counts = struct.unpack_from(f"<{len(convs)}I", blob, 0)
    off = 4 * len(convs)
    out = {}
    for conv, n in zip(convs, counts):
        codebook = struct.unpack_from("<256f", blob, off)
        off += 1024
        bias = struct.unpack_from(f"<{conv.out_channels}f", blob, off)
        off += 4 * conv.out_channels
        codes = blob[off:off + n]
        off += n
        gap_bytes = blob[off:off + (n + 1) // 2]
        off += (n + 1) // 2
        flat = [0.0] * math.prod(conv.weight_shape)
        pos = -1
        for k in range(n):
            byte = gap_bytes[k // 2]
            gap = byte & 0xF if k % 2 == 0 else byte >> 4
            pos += gap + 1
            flat[pos] = codebook[codes[k]]
        out[f"{conv.name}.weight"] = np.array(flat, np.float32).reshape(conv.weight_shape)
        out[f"{conv.name}.bias"] = np.array(bias, np.float32)
    assert off == len(blob)
    return out


def assemble(layers: list[tuple], bits: int = 8) -> bytes:
    """A .net file from per-layer (codebook, bias, codes, gaps) lists, packed by hand."""
    def nibbles(values):
        values = list(values) + [0] * (len(values) % 2)
        return bytes(values[i] | (values[i + 1] << 4) for i in range(0, len(values), 2))

    head = struct.pack(f"<{len(layers)}I", *(len(codes) for _, _, codes, _ in layers))
    body = b""
    for codebook, bias, codes, gaps in layers:
        body += struct.pack(f"<{len(codebook)}f", *codebook)
        body += struct.pack(f"<{len(bias)}f", *bias)
        body += bytes(codes) if bits == 8 else nibbles(codes)
        body += nibbles(gaps)
    return head + body


def dense_layers(variant: Variant, bits: int = 8, first: tuple | None = None) -> list[tuple]:
    """Every layer: one entry per 16 positions (code 1 = 0.5), so it decodes to a known
    pattern; ``first`` replaces conv1's (codes, gaps)."""
    layers = []
    for conv in variant.convs():
        size = math.prod(conv.weight_shape)
        n = size // 16
        codebook = [0.0, 0.5] + [0.25] * (2 ** bits - 2)
        bias = [float(i % 7) for i in range(conv.out_channels)]
        codes, gaps = [1] * n, [15] * n
        if first is not None and conv.name == "conv1":
            codes, gaps = first
        layers.append((codebook, bias, codes, gaps))
    return layers


@pytest.fixture(scope="module")
def release():
    path = shared_or_skip(DC_NET)
    return path, path.read_bytes()


def quantized(variant: Variant, step: float = 1 / 32) -> formats.Weights:
    """Seeded weights rounded to multiples of ``step`` (well under 255 values per layer),
    with some exact zeros, long zero runs and a -0.0."""
    w = seeded_weights(variant)
    tensors = dict(w.tensors)
    for k, t in w.tensors.items():
        if k.endswith(".weight"):
            q = np.round(t / step) * step
            q[np.abs(q) < 2 * step] = 0.0        # sparsity like a pruned net
            q.reshape(-1)[100:190] = 0.0         # a run of 90 zeros (fillers)
            q.reshape(-1)[5] = -0.0              # a negative zero keeps its sign bit
            tensors[k] = q.astype(np.float32)
    return Weights(tensors, w.meta)


# --- the real release --------------------------------------------------------------------
def test_release_decodes_to_the_published_counts(release):
    path, _ = release
    w = formats.read(path)
    assert w.variant == V10
    assert w.num_params() == 1_248_424
    weights = [t for k, t in w.tensors.items() if k.endswith(".weight")]
    assert sum(t.size for t in weights) == 1_244_448
    assert sum(int((t != 0).sum()) for t in weights) == 415_921
    assert w.meta["preprocessing"] == "caffe"
    assert "compressed_SqueezeNet.net" in w.meta["source"]


def test_release_matches_an_independent_decoder(release):
    path, blob = release
    ours = dc.read(path)
    theirs = independent_decode(blob, V10)
    assert set(ours.tensors) == set(theirs)
    for k, t in theirs.items():
        np.testing.assert_array_equal(ours[k].view(np.uint32), t.view(np.uint32), err_msg=k)


def test_release_size_is_the_documented_formula(release):
    _, blob = release
    counts = struct.unpack_from("<26I", blob)
    outs = [c.out_channels for c in V10.convs()]
    assert len(blob) == 104 + sum(1024 + 4 * o + n + (n + 1) // 2 for o, n in zip(outs, counts))


def test_release_names_table():
    assert dc.DC_NAMES["fire2/conv1x1_1"] == "fire2.squeeze"
    assert dc.DC_NAMES["fire9/conv1x1_2"] == "fire9.expand1x1"
    assert dc.DC_NAMES["fire5/conv3x3_2"] == "fire5.expand3x3"
    assert dc.DC_NAMES["conv_final"] == "conv10"
    assert list(dc.DC_NAMES)[0] == "conv1" and len(dc.DC_NAMES) == 26


def test_release_reencodes_to_the_same_weights_and_size(release, tmp_path):
    path, blob = release
    w = dc.read(path)
    out = tmp_path / "again.net"
    dc.write(w, out)
    assert out.stat().st_size == len(blob)  # same entries, fillers and codebook sizes
    again = dc.read(out)
    for k in w.tensors:
        np.testing.assert_array_equal(again[k].view(np.uint32), w[k].view(np.uint32))


# --- round trips of synthetic weights ----------------------------------------------------
@pytest.mark.parametrize("vid", ["1_0-p1-none", "1_1-p0-none", "1_0-p0-complex"])
def test_quantized_weights_round_trip_bit_exact(tmp_path, vid):
    v = Variant.from_id(vid)
    w = quantized(v)
    path = tmp_path / "q.net"
    dc.write(w, path)
    default = vid in ("1_0-p1-none", "1_1-p0-none")  # what a bare .net is read as
    back = dc.read(path, variant=None if default else v)
    assert back.variant == v
    for k, t in w.tensors.items():
        np.testing.assert_array_equal(back[k].view(np.uint32), t.view(np.uint32), err_msg=k)
    assert np.signbit(back["conv1.weight"].reshape(-1)[5])
    expected = independent_decode(path.read_bytes(), v)
    for k, t in expected.items():
        np.testing.assert_array_equal(back[k], t, err_msg=k)


def test_bare_file_is_read_as_the_release_variant_of_its_version(tmp_path):
    w = quantized(Variant("1_0", 1000, 0, "none"))
    path = tmp_path / "p0.net"
    dc.write(w, path)
    assert dc.read(path).variant == V10  # the format does not record conv10's padding
    assert dc.read(path, variant=Variant("1_0", 1000, 0)).variant.final_conv_padding == 0
    with pytest.raises(WeightsError, match=r"imply \d+ \(1_1-p0-none\)"):
        formats.read(path, variant=Variant("1_1"))  # the sizes do not fit v1.1


def test_weights_beyond_an_8bit_codebook_are_refused(tmp_path):
    path = tmp_path / "w.net"
    with pytest.raises(WeightsError, match=r"conv1\.weight has \d+ distinct non-zero values"):
        dc.write(seeded_weights(V10), path)
    assert list(tmp_path.iterdir()) == []


def test_four_bit_codes_decode(tmp_path):
    """b = 4: two codes per byte, low nibble first (as the format's description says)."""
    v = V10
    layers = dense_layers(v, bits=4, first=([1, 2, 3, 0, 1], [0, 3, 15, 2, 1]))
    w = dc.decode(assemble(layers, bits=4), bits=4)
    flat = w["conv1.weight"].reshape(-1)
    want = np.zeros(flat.size, np.float32)
    for pos, value in zip([0, 4, 20, 23, 25], [0.5, 0.25, 0.25, 0.0, 0.5]):
        want[pos] = value
    np.testing.assert_array_equal(flat, want)
    assert w["fire2.squeeze.weight"].reshape(-1)[15::16].tolist() == [0.5] * (1536 // 16)
    np.testing.assert_array_equal(w["conv10.bias"], np.arange(1000) % 7)


# --- inconsistent files --------------------------------------------------------------------
def refuse(blob: bytes, tmp_path, match: str, **kw) -> WeightsError:
    path = tmp_path / "bad.net"
    path.write_bytes(blob)
    with pytest.raises(WeightsError, match=match) as info:
        formats.read(path, "deepcompression", **kw)
    assert str(path) in str(info.value) and "deepcompression" in str(info.value)
    return info.value


def test_truncated_and_extended_files_are_refused(release, tmp_path):
    _, blob = release
    for cut in (0, 3, 103, 104, 2000, len(blob) - 1):
        refuse(blob[:cut], tmp_path, "too short|truncated")
    refuse(blob + b"\0", tmp_path, "extra bytes")


def test_header_count_beyond_the_tensor_is_refused(tmp_path):
    size = 96 * 3 * 7 * 7
    layers = dense_layers(V10, first=([1] * (size + 1), [0] * (size + 1)))
    refuse(assemble(layers), tmp_path, r"conv1.*14113 stored entries, more than the 14112")


def test_gap_running_past_the_tensor_end_is_refused(tmp_path):
    size = 96 * 3 * 7 * 7
    n = size // 16 + 1  # one entry too many for gaps of 15
    layers = dense_layers(V10, first=([1] * n, [15] * n))
    refuse(assemble(layers), tmp_path, r"conv1 \(conv1\): entry 882 of 883 lands at flat "
                                       r"position 14127, past the end of its 14112 weights")


def test_huge_header_count_is_refused_before_allocating(tmp_path):
    blob = struct.pack("<26I", *([0xFFFFFFFF] * 26)) + bytes(1000)
    refuse(blob, tmp_path, "header's entry counts imply")


def test_non_finite_codebook_is_refused(tmp_path):
    layers = dense_layers(V10)
    codebook, bias, codes, gaps = layers[3]
    layers[3] = ([0.0, float("nan")] + codebook[2:], bias, codes, gaps)
    refuse(assemble(layers), tmp_path, r"fire2/conv3x3_2 \(fire2.expand3x3\): 1 non-finite "
                                       "codebook")


def test_dense_synthetic_file_decodes_to_the_expected_pattern(tmp_path):
    w = dc.decode(assemble(dense_layers(V10)))
    flat = w["fire9.expand3x3.weight"].reshape(-1)
    assert flat[15::16].tolist() == [0.5] * (flat.size // 16)
    assert int((flat != 0).sum()) == flat.size // 16


def test_file_larger_than_any_squeezenet_net_is_refused_unread(tmp_path):
    # Dense 8-bit v1.0 (every weight stored): 104 + sum(1024 + 4*C_out + 1.5*size) bytes.
    largest = 104 + sum(1024 + 4 * c.out_channels + math.prod(c.weight_shape)
                        + (math.prod(c.weight_shape) + 1) // 2 for c in V10.convs())
    e = refuse(bytes(largest + 129), tmp_path, r"a \.net of 1_0-p1-none or 1_1-p0-none has at "
                                               rf"most {largest}")
    assert f"file is {largest + 129} bytes" in str(e)
