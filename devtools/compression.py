"""``python -m devtools.compression [--net FILE] [--json OUT] [--plot OUT.png]``: what Deep
Compression's width costs, measured on the released v1.0 weights.

For 8 bits down to 3, the release is compressed again (``ports.formats.compress``: its own
per-layer densities, k-means with linear initialisation, no fine-tuning), written as
``.dcz``, read back, and run by the float64 NumPy reference on real photographs shipped with
scikit-image and Matplotlib (Caffe preprocessing, as the release expects) and on seeded
inputs.  Against the 8-bit release's own logits it reports the file size, the largest
per-layer weight error, top-1 agreement, top-5 overlap and the largest logit difference.
ImageNet accuracy cannot be measured offline here: agreement with the release is what
these figures show, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from ports import formats
from ports import numpy as ref
from ports._data import shared_dir
from ports.formats import compress as C
from ports.formats import dcz
from ports.preprocess import preprocess

BITS = (8, 7, 6, 5, 4, 3)
RELEASE = "weights/deep-compression/compressed_SqueezeNet.net"


def photos() -> dict[str, np.ndarray]:
    """RGB uint8 photographs installed with scikit-image and Matplotlib."""
    import matplotlib
    import skimage.data
    from PIL import Image

    out = {name: getattr(skimage.data, name)() for name in
           ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
            "immunohistochemistry", "retina")}
    out["motorcycle"] = skimage.data.stereo_motorcycle()[0]
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    out["grace_hopper"] = np.asarray(Image.open(sample / "grace_hopper.jpg").convert("RGB"))
    return out


def measure(net: Path, log=print) -> dict:
    release = formats.read(net)
    images = photos()
    x_photos = np.concatenate([preprocess(img, "caffe") for img in images.values()])
    x_seeded = np.random.default_rng(0).normal(0, 50, (8, 3, 227, 227))
    model = ref.load(release)
    base = {"photos": ref.predict(model, x_photos), "seeded": ref.predict(model, x_seeded)}
    rows = []
    for bits in BITS:
        c = C.compress(release, bits)
        blob = dcz.pack(c.meta, c.bits, c.layers)
        q = dcz.decode(blob)
        weight_err = max(float(np.abs(q[k] - release[k]).max() / np.abs(release[k]).max())
                         for k in q.tensors if k.endswith(".weight"))
        row = {"bits": bits, "bytes": len(blob), "max_weight_rel_err": weight_err}
        qm = ref.load(q)
        for what, x in (("photos", x_photos), ("seeded", x_seeded)):
            got, want = ref.predict(qm, x), base[what]
            top5 = np.argsort(-got, 1)[:, :5]
            ref5 = np.argsort(-want, 1)[:, :5]
            row[what] = {
                "top1_agree": int((got.argmax(1) == want.argmax(1)).sum()), "of": len(x),
                "top5_overlap": float(np.mean([len(set(a) & set(b)) / 5
                                               for a, b in zip(top5, ref5)])),
                "max_logit_diff": float(np.abs(got - want).max()),
                "logit_scale": float(np.abs(want).max())}
        rows.append(row)
        log(f"{bits} bits: {len(blob):,} bytes, photos top-1 {row['photos']['top1_agree']}/"
            f"{len(x_photos)}, top-5 overlap {row['photos']['top5_overlap']:.2f}, "
            f"seeded top-1 {row['seeded']['top1_agree']}/{len(x_seeded)}")
    return {"release_bytes": os.path.getsize(net), "photos": list(images), "rows": rows}


def dense(bits_list=(8, 6, 4), log=print) -> list[dict]:
    """Seeded (dense, untrained) weights of every variant: ``.dcz`` size and the largest
    logit difference to the dense weights on two seeded inputs, per width."""
    from ports.seeded import seeded_weights
    from ports.spec import all_variants

    x = np.random.default_rng(1).normal(0, 1, (2, 3, 227, 227))
    rows = []
    for v in all_variants():
        w = seeded_weights(v)
        want = ref.predict(ref.load(w), x)
        for bits in bits_list:
            c = C.compress(w, bits)
            blob = dcz.pack(c.meta, c.bits, c.layers)
            got = ref.predict(ref.load(dcz.decode(blob)), x)
            rows.append({"variant": v.id, "bits": bits, "bytes": len(blob),
                         "dense_bytes": 4 * w.num_params(),
                         "max_logit_rel_diff": float(np.abs(got - want).max()
                                                     / np.abs(want).max())})
            log(f"{v.id} {bits} bits: {len(blob):,} bytes, "
                f"logits {rows[-1]['max_logit_rel_diff']:.3g}")
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    bits = [r["bits"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(bits, [r["bytes"] / 1000 for r in rows], "o-", color="tab:blue", label="file (kB)")
    ax.axhline(result["release_bytes"] / 1000, ls=":", color="tab:blue",
               label="8-bit release .net")
    ax.axhline(400, ls="--", color="grey", label="400 kB")
    ax.set_xlabel("codebook bits (no fine-tuning)")
    ax.set_ylabel(".dcz size (kB)")
    ax.invert_xaxis()
    twin = ax.twinx()
    for what, style in (("photos", "s-"), ("seeded", "^-")):
        twin.plot(bits, [r[what]["top1_agree"] / r[what]["of"] for r in rows], style,
                  color="tab:red" if what == "photos" else "tab:orange",
                  label=f"top-1 agreement, {what}")
    twin.set_ylabel("agreement with the release")
    twin.set_ylim(0, 1.05)
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="lower left", fontsize=8)
    ax.set_title("Deep Compression of SqueezeNet v1.0: width vs size and agreement")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.compression",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--net", type=Path, default=None,
                   help=f"the released .net (default: the shared folder's {RELEASE})")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--plot", type=Path, help="write the plot here")
    p.add_argument("--dense", action="store_true",
                   help="also compress seeded weights of every variant (8, 6, 4 bits)")
    args = p.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    result = measure(args.net or shared_dir() / RELEASE, log=log)
    if args.dense:
        result["dense"] = dense(log=log)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(result, args.plot)
    print(json.dumps(result["rows"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
