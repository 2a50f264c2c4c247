"""``python -m devtools.compression [--steps N] [--with torch] [--json F] [--plot F]``:
what Deep Compression's width costs on the released v1.0 weights, before and after
fine-tuning the centroids.

For 8 bits down to 3, the release is compressed again (``ports.formats.compress``: its own
per-layer densities, k-means with linear initialisation), then fine-tuned for ``--steps``
steps by distilling the release's own logits (``ports.finetune``: Caffe training views of
the ten :data:`ports.finetune.DISTIL_PHOTOS` and seeded inputs, no labels).  Each file,
before and after, is written as ``.dcz``, read back, and run by the NumPy reference
(float32) on what fine-tuning never saw: the ten :data:`HELD_BACK` pictures (Caffe's test
crop), ten training views of each, and 16 seeded inputs of another seed.  Against the
8-bit release's own logits it reports top-1 agreement, top-5 overlap, the soft-target loss
(mean KL divergence of the softmaxes) and the largest logit difference.  ImageNet accuracy
cannot be measured offline here: agreement with the release is what these figures show.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from ports import finetune, formats
from ports import numpy as ref
from ports._data import shared_dir
from ports.formats import compress as C
from ports.formats import dcz
from ports.numpy.train import distillation
from ports.preprocess import preprocess

BITS = (8, 7, 6, 5, 4, 3)
RELEASE = "weights/deep-compression/compressed_SqueezeNet.net"
# Pictures fine-tuning never sees (ports.finetune.DISTIL_PHOTOS are the ones it does).
HELD_BACK = ("chelsea", "motorcycle", "grace_hopper", "retina", "present", "coins", "clock",
             "gravel", "page", "cell")


def picture(name: str) -> np.ndarray:
    """An RGB (or grey) uint8 picture installed with scikit-image or Matplotlib."""
    import matplotlib
    import skimage.data
    from PIL import Image

    sample = Path(matplotlib.get_data_path()) / "sample_data"
    files = {"grace_hopper": "grace_hopper.jpg", "present": "Minduka_Present_Blue_Pack.png"}
    if name in files:
        return np.asarray(Image.open(sample / files[name]).convert("RGB"))
    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return np.asarray(getattr(skimage.data, name)())


def held_back_sets() -> dict[str, np.ndarray]:
    """The inputs agreement is measured on, none of them used in fine-tuning."""
    images = [picture(name) for name in HELD_BACK]
    return {"pictures": np.concatenate([preprocess(im, "caffe") for im in images]),
            "views": finetune.views(images, 10, np.random.default_rng(101)),
            "seeded": np.random.default_rng(102).normal(
                0, finetune.SEEDED_SCALE, (16, 3, 227, 227)).astype(np.float32)}


def agreement(got: np.ndarray, want: np.ndarray) -> dict:
    """Top-1 agreement, top-5 overlap, soft-target loss and largest logit difference of
    ``got`` against ``want`` ([N, classes] logits)."""
    top5, ref5 = np.argsort(-got, 1)[:, :5], np.argsort(-want, 1)[:, :5]
    kept = (got.argmax(1) == want.argmax(1)) & np.isfinite(got).all(1)  # NaN never agrees
    return {"top1_agree": int(kept.sum()), "of": len(got), "kept": kept.tolist(),
            "top5_overlap": float(np.mean([len(set(a) & set(b)) / 5
                                           for a, b in zip(top5, ref5)])),
            "kl": distillation(got.astype(np.float64), want.astype(np.float64))[0],
            "max_logit_diff": float(np.abs(got - want).max()),
            "logit_scale": float(np.abs(want).max())}


def measure(net: Path, steps: int = 100, port: str = "numpy", bits_list=BITS,
            log=print) -> dict:
    release = formats.read(net)
    sets = held_back_sets()
    model = ref.load(release, "float32")
    base = {k: ref.predict(model, x) for k, x in sets.items()}
    x_distil = finetune.distillation_set([picture(n) for n in finetune.DISTIL_PHOTOS]) \
        if steps else np.zeros((0, 3, 227, 227), np.float32)
    grads_of = finetune.gradients(release, x_distil, port=port) if steps else None

    def written(c: C.Compressed) -> tuple[bytes, object]:
        """The ``.dcz`` of ``c`` and the weights it reads back as."""
        blob = dcz.pack(c.meta, c.bits, c.layers)
        return blob, dcz.decode(blob)

    def evaluate(q) -> dict:
        qm = ref.load(q, "float32")
        return {k: agreement(ref.predict(qm, x), base[k]) for k, x in sets.items()}

    rows = []
    for bits in bits_list:
        c = C.compress(release, bits)
        blob, q = written(c)
        row = {"bits": bits, "bytes": len(blob),
               "max_weight_rel_err": max(float(np.abs(q[k] - release[k]).max()
                                               / np.abs(release[k]).max())
                                         for k in q.tensors if k.endswith(".weight")),
               "before": evaluate(q)}
        if steps:
            tuned, losses = C.fine_tune(c, grads_of, steps, finetune.LR,
                                        progress=lambda line, b=bits: log(f"{b} bits, {line}"))
            tuned_blob, tuned_q = written(tuned)
            row.update(tuned_bytes=len(tuned_blob), losses=losses, after=evaluate(tuned_q))
        rows.append(row)
        log(f"{bits} bits: {len(blob):,} bytes; " + "; ".join(
            f"{when}: pictures {row[when]['pictures']['top1_agree']}/10, views "
            f"{row[when]['views']['top1_agree']}/100, KL {row[when]['views']['kl']:.3f}"
            for when in ("before", "after") if when in row))
    return {"release_bytes": os.path.getsize(net), "steps": steps, "port": port,
            "distil_photos": list(finetune.DISTIL_PHOTOS), "held_back": list(HELD_BACK),
            "distil_inputs": len(x_distil), "rows": rows, "smallest_keeping_all":
            smallest_keeping_all(rows)}


def smallest_keeping_all(rows: list[dict]) -> dict | None:
    """The smallest file whose top-1 equals the release's on every held-back picture."""
    found = [(r["tuned_bytes"] if when == "after" else r["bytes"], r["bits"], when)
             for r in rows for when in ("before", "after")
             if when in r and all(r[when]["pictures"]["kept"])]
    if not found:
        return None
    size, bits, when = min(found)
    return {"bytes": size, "bits": bits, "fine_tuned": when == "after"}


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


def markdown(result: dict) -> str:
    """The curve as a Markdown table: per width and state, size and agreement."""
    head = ("| bits | .dcz bytes | fine-tuned | pictures: top-1 | pictures: top-5 overlap | "
            "views: top-1 | views: top-5 overlap | views: KL | seeded: top-1 | "
            "max logit diff (views) |")
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for r in result["rows"]:
        for when in ("before", "after"):
            if when not in r:
                continue
            m = r[when]
            lines.append(
                f"| {r['bits']} | {r['tuned_bytes' if when == 'after' else 'bytes']:,} | "
                f"{'yes' if when == 'after' else 'no'} | "
                f"{m['pictures']['top1_agree']}/{m['pictures']['of']} | "
                f"{m['pictures']['top5_overlap']:.2f} | "
                f"{m['views']['top1_agree']}/{m['views']['of']} | "
                f"{m['views']['top5_overlap']:.2f} | {m['views']['kl']:.3f} | "
                f"{m['seeded']['top1_agree']}/{m['seeded']['of']} | "
                f"{m['views']['max_logit_diff']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    bits = [r["bits"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(bits, [r["bytes"] / 1000 for r in rows], "o-", color="tab:blue", label=".dcz")
    left.axhline(result["release_bytes"] / 1000, ls=":", color="tab:blue",
                 label="8-bit release .net")
    left.axhline(400, ls="--", color="grey", label="400 kB")
    left.set(xlabel="codebook bits", ylabel="file size (kB)", title="size")
    left.invert_xaxis()
    left.legend(fontsize=8)
    for when, style in (("before", "--"), ("after", "-")):
        if when not in rows[0]:
            continue
        label = "k-means only" if when == "before" else f"fine-tuned ({result['steps']} steps)"
        for what, colour, name in (("pictures", "tab:red", "held-back pictures"),
                                   ("views", "tab:orange", "views of them"),
                                   ("seeded", "tab:green", "seeded inputs")):
            right.plot(bits, [r[when][what]["top1_agree"] / r[when][what]["of"] for r in rows],
                       style, marker="o", color=colour, label=f"{name}, {label}")
    right.set(xlabel="codebook bits", ylabel="top-1 agreement with the release",
              title="agreement on inputs never distilled on", ylim=(0, 1.05))
    right.invert_xaxis()
    right.legend(fontsize=7, loc="lower left")
    fig.suptitle("Deep Compression of SqueezeNet v1.0: width against size and agreement")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.compression",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--net", type=Path, default=None,
                   help=f"the released .net (default: the shared folder's {RELEASE})")
    p.add_argument("--steps", type=int, default=finetune.STEPS,
                   help="fine-tuning steps per width (default 100; 0: none)")
    p.add_argument("--with", dest="port", default="numpy",
                   help="port taking the fine-tuning gradients: numpy or torch")
    p.add_argument("--bits", type=int, nargs="+", default=list(BITS))
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--plot", type=Path, help="write the plot here")
    p.add_argument("--markdown", type=Path, help="write the table here")
    p.add_argument("--dense", action="store_true",
                   help="also compress seeded weights of every variant (8, 6, 4 bits)")
    p.add_argument("--from-json", type=Path, help="draw and tabulate an earlier run's figures")
    args = p.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        if args.plot:
            plot(result, args.plot)
        if args.markdown:
            args.markdown.write_text(markdown(result))
        return 0
    result = measure(args.net or shared_dir() / RELEASE, args.steps, args.port, args.bits,
                     log=log)
    if args.dense:
        result["dense"] = dense(log=log)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(result, args.plot)
    if args.markdown:
        args.markdown.write_text(markdown(result))
    print(json.dumps(result["smallest_keeping_all"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
