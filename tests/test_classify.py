"""Real-weights classification: the published Deep Compression SqueezeNet v1.0 through the
NumPy reference, the ``caffe`` preprocessing checked against Caffe's own input, the
``tools/classify`` command, and the ImageNet class names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data as skimage_data
from conftest import shared_or_skip

from ports import preprocess as P
from ports.classes import imagenet_classes, imagenet_wnids
from ports.cli.classify import load_image, softmax, top_k

ROOT = Path(__file__).resolve().parent.parent
DC_NET = "weights/deep-compression/compressed_SqueezeNet.net"
CAFFE_NPZ = "weights/caffe-real/squeezenet_v1.0_deep_compression.caffe_logits.npz"


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [skimage_data.chelsea(), skimage_data.coffee()]


@pytest.fixture(scope="module")
def caffe_run() -> dict:
    """Real Caffe's input ``x`` [2,3,227,227] and logits [2,1000] for chelsea and coffee."""
    z = np.load(shared_or_skip(CAFFE_NPZ))
    return {"x": z["x"], "logits": z["logits"]}


@pytest.fixture(scope="module")
def reference_logits(photos) -> np.ndarray:
    """The float64 NumPy reference on the Deep Compression weights, caffe preprocessing."""
    path = shared_or_skip(DC_NET)
    from ports import formats
    from ports import numpy as ref

    weights = formats.read(path)
    assert weights.meta["preprocessing"] == "caffe"
    x = P.preprocess_batch(photos, weights.meta["preprocessing"])
    return ref.predict(ref.load(weights), x)


# --- preprocessing ------------------------------------------------------------------------
def test_caffe_preprocessing_reproduces_caffes_input(photos, caffe_run):
    """Our ``caffe`` mode gives exactly the array real Caffe was fed (max abs diff 0)."""
    x = P.preprocess_batch(photos, "caffe")
    assert x.shape == caffe_run["x"].shape == (2, 3, 227, 227) and x.dtype == np.float32
    assert np.abs(x - caffe_run["x"]).max() == 0.0


def test_resize_is_pillow_bilinear(photos):
    """Independent check of ``resize`` against Pillow itself on the two photos."""
    from PIL import Image
    for img in photos:
        for size in [(256, 256), (256, int(256 * img.shape[1] / img.shape[0]))]:
            ours = P.resize(img, *size)
            theirs = np.asarray(Image.fromarray(img).resize(size[::-1], Image.BILINEAR))
            assert np.array_equal(ours, theirs.astype(np.float64)), size


def _shapes_and_sizes(count: int = 40) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(7)
    drawn = [tuple(int(v) for v in rng.integers(5, 700, size=4)) for _ in range(count)]
    # a tall image whose height shrinks by more than twice as much as its width: Pillow 13
    # resamples the rows first there (and the other way round elsewhere)
    return drawn + [(2000, 31, 256, 256), (640, 427, 256, 256), (427, 640, 256, 383)]


@pytest.mark.parametrize("h,w,height,width", _shapes_and_sizes())
def test_resize_is_pillow_bilinear_for_any_shapes(h, w, height, width):
    """Bit-exact against Pillow itself, shrinking and enlarging either axis."""
    from PIL import Image
    img = np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    theirs = np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))
    ours = P.resize(img, height, width)
    assert ours.shape == theirs.shape and np.array_equal(ours, theirs.astype(np.float64))


def test_the_order_of_passes_matters_where_pillow_switches_it():
    """The check can fail: on a tall image the other order is off by one grey level."""
    img = np.random.default_rng(0).integers(0, 256, (2000, 31, 3), dtype=np.uint8)
    assert P.vertical_first(2000, 31, 256, 256) and not P.vertical_first(427, 640, 256, 383)
    columns_first = P._resample_rows(img.transpose(1, 0, 2), *P._bilinear_taps(31, 256))
    columns_first = columns_first.transpose(1, 0, 2)
    columns_first = P._resample_rows(columns_first, *P._bilinear_taps(2000, 256))
    assert np.abs(columns_first - P.resize(img, 256, 256)).max() == 1.0


def test_torchvision_preprocessing_matches_a_pillow_pipeline(photos):
    """torchvision's Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize, via Pillow."""
    from PIL import Image
    img = photos[0]  # 300 x 451: the long side becomes int(256 * 451 / 300) = 384
    pil = Image.fromarray(img).resize((384, 256), Image.BILINEAR)
    crop = np.asarray(pil, dtype=np.float64)[16:240, 80:304] / 255.0
    expected = ((crop - P.IMAGENET_MEAN) / P.IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(P.preprocess(img, "torchvision")[0], expected, atol=1e-6)


# --- classification with the real weights -------------------------------------------------
def test_reference_classifies_chelsea_and_coffee(reference_logits):
    chelsea, coffee = reference_logits
    top3 = [c for c, _, _ in top_k(chelsea, 3)]
    assert top3[0] == 285  # Egyptian cat
    assert {281, 282} <= set(top3)  # tabby, tiger cat
    assert top_k(coffee, 1)[0][0] == 967  # espresso


def test_reference_reproduces_caffes_logits(reference_logits, caffe_run):
    """Same input, same function: the float64 reference matches real Caffe's float32 run."""
    np.testing.assert_allclose(reference_logits, caffe_run["logits"], rtol=1e-5, atol=1e-4)
    assert list(np.argsort(-reference_logits, axis=1)[:, :5].ravel()) == \
        list(np.argsort(-caffe_run["logits"], axis=1)[:, :5].ravel())


def run_classify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "classify"), *args],
                          capture_output=True, text=True, timeout=300)


def test_classify_cli(caffe_run):
    weights = shared_or_skip(DC_NET)
    r = run_classify("skimage:chelsea", "--weights", str(weights), "--port", "numpy")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "SqueezeNet 1_0-p1-none" in lines[0] and "preprocessing caffe 227x227" in lines[0]
    assert lines[1].split() == ["rank", "class", "prob", "logit", "name"]
    rows = [line.split(None, 4) for line in lines[2:]]
    assert len(rows) == 5
    caffe = caffe_run["logits"][0].astype(np.float64)
    probs = softmax(caffe)
    for rank, (r_, cls, prob, logit, name) in enumerate(rows, 1):
        cls = int(cls)
        assert int(r_) == rank
        assert abs(float(logit) - caffe[cls]) < 1e-3  # real Caffe's own score for the class
        assert abs(float(prob) - probs[cls]) < 1e-4
        assert name == imagenet_classes()[cls]
    assert rows[0][1] == "285" and rows[0][4] == "Egyptian cat"
    assert {r[1] for r in rows[:3]} == {"285", "281", "282"}


def test_classify_cli_options_and_errors(tmp_path):
    weights = shared_or_skip(DC_NET)
    r = run_classify("skimage:coffee", "--weights", str(weights), "--top", "1",
                     "--preprocessing", "caffe")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.strip().splitlines()[2:]
    assert len(rows) == 1 and rows[0].split(None, 4)[1] == "967"
    assert rows[0].endswith("  espresso")

    r = run_classify(str(tmp_path / "absent.png"), "--weights", str(weights))
    assert r.returncode == 2
    assert r.stderr.strip() == f"classify: error: {tmp_path / 'absent.png'}: no such image file"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    r = run_classify(str(bad), "--weights", str(weights))
    assert r.returncode == 2 and r.stderr.startswith(f"classify: error: {bad}: cannot read")
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_classify("skimage:chelsea", "--weights", str(weights), "--port", "nonesuch")
    assert r.returncode == 2 and "--port nonesuch: cannot import ports.nonesuch" in r.stderr


def test_classify_reads_image_files(tmp_path, photos):
    import skimage.io as skimage_io
    path = tmp_path / "coffee.png"
    skimage_io.imsave(str(path), photos[1], check_contrast=False)
    assert np.array_equal(load_image(str(path)), photos[1])  # PNG is lossless
    assert np.array_equal(load_image("skimage:chelsea"), photos[0])
    with pytest.raises(ValueError, match="no picture 'nonesuch'"):
        load_image("skimage:nonesuch")


def test_top_k_and_softmax():
    logits = np.array([1.0, 3.0, 3.0, -2.0])
    assert [c for c, _, _ in top_k(logits, 4)] == [1, 2, 0, 3]  # ties: lower index first
    p = softmax(logits)
    e = np.exp(logits)
    np.testing.assert_allclose(p, e / e.sum())
    assert softmax(np.array([1000.0, 0.0]))[0] == 1.0  # no overflow


# --- class names --------------------------------------------------------------------------
def test_imagenet_classes_file():
    lines = (ROOT / "weights" / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1000
    wnids = [line.split("\t")[0] for line in lines]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000  # sorted WordNet-id order
    names = imagenet_classes()
    assert len(names) == 1000
    assert (names[0], names[281], names[282], names[285], names[967], names[999]) == (
        "tench", "tabby", "tiger cat", "Egyptian cat", "espresso", "toilet tissue")
    assert imagenet_classes(full=True)[281] == "tabby, tabby cat"
    assert (imagenet_wnids()[285], imagenet_wnids()[967]) == ("n02124075", "n07920052")
