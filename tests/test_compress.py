"""Deep Compression (``tools/compress``): the encoder is the decoder's inverse on the real
release, round trips are exact at every width, sizes follow the formats' formulas, the
pipeline's steps do what the paper says, and the compact ``.dcz`` reader refuses every
inconsistent file with one clear error."""

from __future__ import annotations

import heapq
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_or_skip

from ports import formats
from ports import numpy as ref
from ports.errors import WeightsError
from ports.formats import _huffman as H
from ports.formats import compress as C
from ports.formats import dcz
from ports.formats import deepcompression as D
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

ROOT = Path(__file__).resolve().parent.parent
DC_NET = "weights/deep-compression/compressed_SqueezeNet.net"
CAFFE_LOGITS = "weights/caffe-real/squeezenet_v1.0_deep_compression.caffe_logits.npz"


@pytest.fixture(scope="module")
def release():
    path = shared_or_skip(DC_NET)
    return path.read_bytes(), formats.read(path)


# --- the encoder is the decoder's inverse ------------------------------------------------------
def test_reencoding_the_release_with_its_own_codebooks_gives_its_bytes(release):
    """Decode the real file to dense weights, then encode them again with the file's own
    codebooks (in its order, not re-sorted): same positions, same fillers, same bytes."""
    blob, weights = release
    variant, layers = D.parse(blob)
    assert D.pack(layers) == blob  # the stored structure, packed again
    books = {layer.name: layer.codebook for layer in layers}
    again = C.with_codebooks(weights, books)
    assert all(np.array_equal(a.codes, b.codes) and np.array_equal(a.gaps, b.gaps)
               for a, b in zip(again, layers))
    assert D.pack(again) == blob


def test_a_value_outside_the_codebook_is_named(release):
    _, weights = release
    books = {layer.name: layer.codebook for layer in D.parse(release[0])[1]}
    books["fire3.squeeze"] = books["fire3.squeeze"].copy()
    books["fire3.squeeze"][7] += 1e-3
    with pytest.raises(WeightsError, match=r"fire3\.squeeze\.weight\[\d+\] = .* not in its "):
        C.with_codebooks(weights, books)


def test_release_densities_are_the_files(release):
    """RELEASE_DENSITY reproduces every layer's count of non-zero weights in the release."""
    variant, layers = D.parse(release[0])
    for conv, layer in zip(variant.convs(), layers):
        size = math.prod(conv.weight_shape)
        assert round(C.RELEASE_DENSITY[conv.name] * size) == int((layer.codes != 0).sum())


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_round_trips_are_exact_at_every_width(release, bits, tmp_path):
    """decode(encode(w)) equals the quantized weights exactly, in .dcz and (where the width
    fits) in .net; the file sizes follow the formats' formulas."""
    _, weights = release
    c = C.compress(weights, bits)
    q = c.weights()
    blob = dcz.pack(c.meta, c.bits, c.layers)
    assert len(blob) == dcz_size(blob)
    back = dcz.decode(blob)
    assert back.meta == q.meta
    assert all(back[k].tobytes() == q[k].tobytes() for k in q.tensors)
    for width in (8, 4):
        if bits > width:
            continue
        layers = [layer._replace(codebook=np.concatenate(
            [layer.codebook, np.zeros((1 << width) - len(layer.codebook), np.float32)]))
            for layer in c.layers]
        net = D.pack(layers, width)
        counts = np.array([len(layer.codes) for layer in layers])
        assert len(net) == D._expected_size(c.variant, counts, width)
        got = D.decode(net, bits=width)
        assert all(got[k].tobytes() == q[k].tobytes() for k in q.tensors)


def dcz_size(blob: bytes) -> int:
    """The size a .dcz must have, from its tables alone: the header, and per layer the fixed
    fields plus ceil(sum of code lengths / 8) for each stream (read independently)."""
    bits = blob[5]
    (metalen,) = struct.unpack_from("<I", blob, 8)
    off = 12 + metalen
    meta = formats.canonical.string_meta(blob[12:off], "meta")
    off += 2
    total = off
    for conv in Variant.from_meta(meta).convs():
        (n,) = struct.unpack_from("<I", blob, off)
        fixed = 4 + 4 * (1 << bits) + 4 * conv.out_channels + (1 << bits) + 16
        codelens = np.frombuffer(blob, np.uint8, 1 << bits, off + 4 + 4 * (1 << bits)
                                 + 4 * conv.out_channels)
        gaplens = np.frombuffer(blob, np.uint8, 16, off + fixed - 16)
        off += fixed
        streams = 0
        for lens, alphabet in ((codelens, 1 << bits), (gaplens, 16)):
            (length,) = struct.unpack_from("<I", blob, off)
            symbols = H.decode(blob[off + 4:off + 4 + length], n, lens, "test")
            assert len(symbols) == n and int(symbols.max(initial=0)) < alphabet
            assert length == (int(lens[symbols].sum()) + 7) // 8
            streams += 4 + length
            off += 4 + length
        total += fixed + streams
    return total


# --- the headline: 6 bits, under 400,000 bytes -------------------------------------------------
def test_six_bit_release_is_under_400000_bytes_and_classifies_like_it(release, tmp_path):
    """tools/compress on the real release: a 6-bit .dcz of at most 400,000 bytes whose
    top-1 class on chelsea and coffee (real Caffe's fixture inputs) is the release's."""
    out = tmp_path / "six.dcz"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "compress"),
                          str(shared_or_skip(DC_NET)), str(out)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "conv10" in run.stderr and f"{out}: {out.stat().st_size} bytes" in run.stderr
    assert out.stat().st_size <= 400_000
    x = np.load(shared_or_skip(CAFFE_LOGITS))["x"]
    six = ref.predict(ref.load(formats.read(out)), x)
    eight = ref.predict(ref.load(release[1]), x)
    assert (six.argmax(1) == eight.argmax(1)).all()
    assert np.isfinite(six).all()


def test_compress_writes_files_every_variant_loads(tmp_path):
    """Dense seeded weights of every variant: compressed, written, read back as exactly the
    quantized weights, and run by the reference."""
    for v in all_variants():
        w = seeded_weights(v)
        c = C.compress(w, 5)
        path = tmp_path / f"{v.id}.dcz"
        path.write_bytes(dcz.pack(c.meta, c.bits, c.layers))
        back = formats.read(path)
        q = c.weights()
        assert back.variant == v
        assert all(back[k].tobytes() == q[k].tobytes() for k in q.tensors), v.id
        assert np.isfinite(ref.predict(ref.load(back), np.ones((1, 3, 64, 64)))).all()


# --- the pipeline's steps ----------------------------------------------------------------------
def test_pruning_keeps_the_largest_magnitudes_earliest_first():
    flat = np.array([0.5, -2.0, 0.5, 1.0, -0.5, 0.0], np.float32)
    assert C.prune(flat, 0.5).tolist() == [0, 1, 3]  # |-2|, |1|, then the first |0.5|
    assert C.prune(flat, 0.0).tolist() == [] and len(C.prune(flat, 1.0)) == 6
    with pytest.raises(ValueError):
        C.prune(flat, 1.5)


def lloyd(values: list[float], k: int) -> list[float]:
    """Plain Lloyd iterations in Python floats, linear initialisation (the reference)."""
    lo, hi = min(values), max(values)
    cents = [lo + (hi - lo) * i / (k - 1) for i in range(k)]
    for _ in range(100):
        groups = [[] for _ in cents]
        for v in values:
            best = min(range(k), key=lambda i: (abs(v - cents[i]), i))
            groups[best].append(v)
        new = [sum(g) / len(g) if g else c for g, c in zip(groups, cents)]
        if new == cents:
            break
        cents = new
    return cents


def test_kmeans_is_lloyd_with_linear_initialisation():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(-1, 0.2, 300), rng.normal(0.5, 0.1, 200),
                             rng.laplace(0, 0.05, 100)]).astype(np.float32)
    centroids, assign = C.kmeans(values, 7)
    assert np.allclose(centroids, lloyd(values.astype(float).tolist(), 7), rtol=0, atol=1e-12)
    assert np.array_equal(np.abs(values[:, None] - centroids).argmin(1), assign)
    again, _ = C.kmeans(values.copy(), 7)
    assert np.array_equal(centroids, again)  # deterministic
    tiny, _ = C.kmeans(np.array([0.0, 0.1, 0.9, 1.0], np.float32), 2)
    assert np.allclose(tiny, [0.05, 0.95])


def test_codebook_entry_zero_is_zero_and_pruned_weights_use_it():
    w = seeded_weights(Variant("1_1"))
    c = C.compress(w, 4)
    q = c.weights()
    for conv, layer in zip(c.variant.convs(), c.layers):
        assert layer.codebook[0] == 0 and len(layer.codebook) == 16
        kept = (q[f"{conv.name}.weight"] != 0).mean()
        assert abs(kept - C.default_density(conv.name)) < 1e-3


# --- fine-tuning the centroids ------------------------------------------------------------------
def small_compressed(bits: int = 3):
    """A 10-class v1.1 with seeded weights at ``bits``, its dense teacher's logits on two
    27x27 images, and a float64 reference whose loss and gradients the tests take."""
    from ports.numpy import train

    w = seeded_weights(Variant("1_1", num_classes=10))
    x = np.random.default_rng(5).standard_normal((2, 3, 27, 27)) * 20
    teacher = ref.predict(ref.load(w), x)

    def loss_and_grads(weights):
        return train.distill_loss_and_grads(ref.load(weights), x, teacher, 2.0)

    return C.compress(w, bits), loss_and_grads


def with_entry(c, name, k, value):
    layers = [layer._replace(codebook=layer.codebook.copy()) for layer in c.layers]
    layer = next(layer for layer in layers if layer.name == name)
    layer.codebook[k] = value
    return c._replace(layers=layers)


def test_a_centroids_gradient_is_the_derivative_of_the_loss_in_that_centroid():
    """For the three busiest entries of four layers, the summed gradient equals central
    finite differences of the float64 loss when that one codebook entry moves (every
    weight sharing it moving with it); entry 0 (pruned weights) has none.  Summing is what
    is right: the mean of the weights' gradients (a plausible slip) fails."""
    c, loss_and_grads = small_compressed()
    _, grads = loss_and_grads(c.weights())
    books = C.centroid_grads(c, grads)
    for layer in [c.layers[i] for i in (0, 3, 12, 25)]:
        assert books[layer.name][0] == 0
        counts = np.bincount(layer.codes, minlength=len(layer.codebook))
        for k in np.argsort(-counts[1:])[:3] + 1:
            eps = 1e-5 * abs(float(layer.codebook[k]))  # float32 weights: the step is exact
            hi, lo = np.float32(layer.codebook[k] + eps), np.float32(layer.codebook[k] - eps)
            up, _ = loss_and_grads(with_entry(c, layer.name, k, hi).weights())
            down, _ = loss_and_grads(with_entry(c, layer.name, k, lo).weights())
            numeric, analytic = (up - down) / float(hi - lo), books[layer.name][k]
            assert abs(numeric - analytic) <= 1e-6 + 1e-4 * abs(analytic), \
                (layer.name, k, numeric, analytic)
            mean = analytic / counts[k]
            if counts[k] > 1 and abs(analytic) > 1e-5:
                assert abs(numeric - mean) > 1e-6 + 1e-4 * abs(analytic)


def test_fine_tuning_lowers_the_loss_and_changes_only_codebooks_and_biases(tmp_path):
    """Twenty steps halve the distillation loss against the dense network; the codes,
    gaps and entry 0 are untouched; the result is written to ``.dcz`` and reads back as
    exactly its own weights."""
    c, loss_and_grads = small_compressed()
    before, _ = loss_and_grads(c.weights())
    tuned, losses = C.fine_tune(c, lambda w, step: loss_and_grads(w), 20, lr=0.1)
    after, _ = loss_and_grads(tuned.weights())
    assert losses[0] == pytest.approx(before) and after < before / 2
    for old, new in zip(c.layers, tuned.layers):
        assert np.array_equal(old.codes, new.codes) and np.array_equal(old.gaps, new.gaps)
        assert new.codebook[0] == 0 and new.codebook.dtype == np.float32
    assert any(not np.array_equal(o.codebook, n.codebook) for o, n in zip(c.layers, tuned.layers))
    path = tmp_path / "tuned.dcz"
    path.write_bytes(dcz.pack(tuned.meta, tuned.bits, tuned.layers))
    back, mine = formats.read(path), tuned.weights()
    assert all(np.array_equal(back[k], mine[k]) for k in mine.tensors)


def test_fine_tuning_stops_at_a_loss_or_gradient_that_is_not_a_number():
    c, _ = small_compressed()

    def zeros(w):
        return {k: np.zeros_like(v) for k, v in w.tensors.items()}

    with pytest.raises(ValueError, match="step 2: the loss is nan"):
        C.fine_tune(c, lambda w, step: (float("nan") if step else 1.0, zeros(w)), 3)

    def one_nan(w, step):
        g = zeros(w)
        g["fire4.expand3x3.weight"] = g["fire4.expand3x3.weight"].copy()
        g["fire4.expand3x3.weight"][0, 1, 2, 0] = np.nan
        return 1.0, g

    with pytest.raises(ValueError, match="step 1: the gradient of fire4.expand3x3.weight"):
        C.fine_tune(c, one_nan, 3)


def test_tools_compress_fine_tunes_on_the_pictures_it_is_given(tmp_path):
    """``tools/compress --fine-tune``: the same codes as without it, other codebooks and
    biases, and a lower distillation loss against the source on the inputs it distilled
    on; a port without a distillation gradient is refused by name, and nothing written."""
    from ports import finetune
    from ports.numpy import train

    w = seeded_weights(Variant("1_1", num_classes=10))
    src = tmp_path / "seeded.safetensors"
    formats.write(w, src)
    common = ["--bits", "4", "--distil-on", "skimage:chelsea", "--views", "2", "--seeded",
              "1", "--mixed", "1", "--batch", "2"]

    def compress(dst, *extra):
        return subprocess.run([sys.executable, str(ROOT / "tools" / "compress"), str(src),
                               str(dst), *common, *extra], capture_output=True, text=True,
                              timeout=600)

    plain, tuned = tmp_path / "plain.dcz", tmp_path / "tuned.dcz"
    assert compress(plain).returncode == 0
    run = compress(tuned, "--fine-tune", "6", "--lr", "0.1")
    assert run.returncode == 0, run.stderr
    assert "fine-tuning on 4 inputs" in run.stderr and "step 6/6" in run.stderr
    (_, _, before), (_, _, after) = (dcz.parse(f.read_bytes()) for f in (plain, tuned))
    for old, new in zip(before, after):
        assert np.array_equal(old.codes, new.codes) and np.array_equal(old.gaps, new.gaps)
    assert any(not np.array_equal(o.codebook, n.codebook) for o, n in zip(before, after))
    assert any(not np.array_equal(o.bias, n.bias) for o, n in zip(before, after))
    import skimage.data

    x = finetune.distillation_set([skimage.data.chelsea()], 2, 1, 1, 0)
    teacher = ref.predict(ref.load(w), x)
    losses = [train.distillation(ref.predict(ref.load(formats.read(f)), x), teacher, 2.0)[0]
              for f in (plain, tuned)]
    assert losses[1] < losses[0]
    bad = compress(tmp_path / "bad.dcz", "--fine-tune", "1", "--with", "onnx")
    assert bad.returncode != 0 and "port 'onnx'" in bad.stderr
    assert not (tmp_path / "bad.dcz").exists()


def test_training_views_are_caffes_crops_and_mirrors():
    """A view at offset (14, 14) is Caffe's test input; a mirrored view is that input
    reversed along the width; offsets past the 256x256 resize are refused; a set holds the
    views, the seeded inputs and the blends, in that order, the same for the same seed."""
    import skimage.data

    from ports import finetune
    from ports.preprocess import caffe_view, preprocess

    image = skimage.data.coffee()
    assert np.array_equal(caffe_view(image, 14, 14), preprocess(image, "caffe"))
    assert np.array_equal(caffe_view(image, 3, 20, mirror=True),
                          caffe_view(image, 3, 20)[..., ::-1])
    with pytest.raises(ValueError, match="crop offset"):
        caffe_view(image, 30, 0)
    x = finetune.distillation_set([image], 3, 2, 4, seed=7)
    assert x.shape == (9, 3, 227, 227) and x.dtype == np.float32
    assert np.array_equal(x, finetune.distillation_set([image], 3, 2, 4, seed=7))
    views = finetune.views([image], 3, np.random.default_rng(7))
    assert np.array_equal(x[:3], views)
    assert all(x[5 + i].min() >= views.min() - 1e-3 and x[5 + i].max() <= views.max() + 1e-3
               for i in range(4))  # blends lie between views


def test_the_curves_agreement_figures_and_smallest_file():
    """``devtools.compression``'s measures: a swapped top-1 and a NaN row each count as a
    disagreement, identical logits have KL 0 and full overlap; the smallest file keeping
    every held-back picture is found among both states, None when no file keeps all."""
    from devtools import compression as DC

    want = np.random.default_rng(0).normal(0, 3, (4, 20))
    same = DC.agreement(want.copy(), want)
    assert same["top1_agree"] == 4 and same["top5_overlap"] == 1 and same["kl"] == 0
    got = want.copy()
    got[1, [want[1].argmax(), want[1].argmin()]] = got[1, [want[1].argmin(), want[1].argmax()]]
    got[2, 3] = np.nan
    m = DC.agreement(got, want)
    assert m["kept"] == [True, False, False, True] and m["top1_agree"] == 2

    def row(bits, size, tuned_size, before, after):
        return {"bits": bits, "bytes": size, "tuned_bytes": tuned_size,
                "before": {"pictures": {"kept": before}}, "after": {"pictures": {"kept": after}}}

    rows = [row(8, 500, 500, [True, True], [True, True]),
            row(6, 380, 379, [True, False], [True, True]),
            row(4, 300, 300, [False, False], [True, False])]
    assert DC.smallest_keeping_all(rows) == {"bytes": 379, "bits": 6, "fine_tuned": True}
    assert DC.smallest_keeping_all(rows[2:]) is None


# --- Huffman ------------------------------------------------------------------------------------
def huffman_cost(counts) -> int:
    """Total bits of an unrestricted Huffman code (heapq), the independent optimum."""
    heap = [c for c in counts if c > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def test_lengths_are_optimal_and_respect_the_limit():
    rng = np.random.default_rng(0)
    for _ in range(50):
        counts = rng.integers(0, 1000, int(rng.integers(2, 64))) * (rng.random() < 0.5
                                                                   or rng.integers(0, 2, 1))
        counts = np.asarray(counts, np.int64)
        if (counts > 0).sum() < 2:
            continue
        lengths = H.lengths_for(counts, 15)
        H.check(lengths, 15, "t")
        assert int((lengths.astype(np.int64) * counts).sum()) == huffman_cost(counts.tolist())
        short = H.lengths_for(counts, 6)
        assert short.max() <= 6
        H.check(short, 6, "t")
    skewed = 2 ** np.arange(20)  # unrestricted Huffman would need 19 bits
    assert H.lengths_for(skewed, 8).max() == 8


# --- bad .dcz files -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good():
    w = seeded_weights(Variant("1_1"))
    c = C.compress(w, 4)
    return dcz.pack(c.meta, c.bits, c.layers)


def first_layer(blob: bytes) -> int:
    (metalen,) = struct.unpack_from("<I", blob, 8)
    return 12 + metalen + 2


def refused(blob: bytes, match: str, tmp_path) -> None:
    path = tmp_path / "bad.dcz"
    path.write_bytes(blob)
    with pytest.raises(WeightsError, match=match) as info:
        formats.read(path)
    assert str(path) in str(info.value) and "(dcz)" in str(info.value)


def test_truncated_files_are_refused(good, tmp_path):
    for cut in (3, 10, first_layer(good) + 2, len(good) // 2, len(good) - 1):
        refused(good[:cut], r"file ends inside|stream", tmp_path)


def test_an_impossible_huffman_table_is_refused(good, tmp_path):
    off = first_layer(good) + 4 + 4 * 16 + 4 * 64  # v1.1 conv1: 64 biases; 4-bit codes
    bad = bytearray(good)
    bad[off:off + 16] = bytes([1] * 16)  # sixteen 1-bit codes: over-subscribed
    refused(bytes(bad), r"layer conv1's code table: impossible Huffman table "
                        r"\(over-subscribed", tmp_path)
    bad[off:off + 16] = bytes([2, 2, 2] + [0] * 13)  # three 2-bit codes: incomplete
    refused(bytes(bad), r"impossible Huffman table \(incomplete", tmp_path)
    bad[off:off + 16] = bytes([16] + [0] * 15)
    refused(bytes(bad), r"a code of 16 bits, longer than the file's maximum of 15", tmp_path)


def test_more_entries_than_the_layer_holds_are_refused(good, tmp_path):
    bad = bytearray(good)
    struct.pack_into("<I", bad, first_layer(good), 1728 + 1)  # v1.1 conv1: 64*3*3*3 weights
    refused(bytes(bad), r"layer conv1: 1729 stored entries, more than its 1728 weights",
            tmp_path)


def test_other_inconsistencies_are_refused(good, tmp_path):
    refused(b"PK\x03\x04" + good[4:], r"not a \.dcz file", tmp_path)
    refused(good[:4] + bytes([2]) + good[5:], r"format version 2", tmp_path)
    refused(good[:5] + bytes([9]) + good[6:], r"codebook bits 9, expected 2 to 8", tmp_path)
    refused(good + b"\0", r"1 bytes after the last layer", tmp_path)
    off = first_layer(good) + 4
    bad = bytearray(good)
    struct.pack_into("<f", bad, off, 0.5)
    refused(bytes(bad), r"codebook entry 0 is 0\.5, not 0\.0", tmp_path)
    struct.pack_into("<f", bad, off, 0.0)
    struct.pack_into("<f", bad, off + 4, float("nan"))
    refused(bytes(bad), r"layer conv1: 1 non-finite codebook values", tmp_path)


def test_padding_bits_after_the_last_code_must_be_zero(tmp_path):
    """A stream whose last byte carries a set padding bit is refused (nothing is ignored)."""
    lengths = np.array([1, 1], np.uint8)
    stream = H.encode(np.array([0, 1, 0]), lengths)  # 3 bits: 010 + 5 padding bits
    assert H.decode(stream, 3, lengths, "s").tolist() == [0, 1, 0]
    with pytest.raises(WeightsError, match="bits after the last of its 3 entries"):
        H.decode(bytes([stream[0] | 1]), 3, lengths, "s")
    with pytest.raises(WeightsError, match="ends before its 9 entries"):
        H.decode(stream, 9, lengths, "s")
