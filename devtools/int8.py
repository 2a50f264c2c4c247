"""``tools/int8``: int8 post-training static quantization of the real Deep Compression
SqueezeNet v1.0, each runtime quantizing with its own tool, measured against float.

    tools/int8 [--quick] [--engines onnxruntime,litert,onnxruntime-u8s8] [--out build/int8]
               [--plot PNG]

Runs in the ``int8`` tox environment (``python3 -m tox exec -e int8 -- python tools/int8``;
the shared folder at ``$SQUEEZENET_SHARED``).  For each engine:

1. our converter writes the float file (``ports.formats.write``: ``.onnx``, ``.tflite``)
   from ``compressed_SqueezeNet.net`` (variant 1_0, conv10 pad 1, as Caffe); the runtime's
   quantizer makes it int8, calibrated on the views of :data:`conformance.int8_images.
   CALIBRATION` (:mod:`conformance.engines.int8_onnxruntime`, :mod:`~.int8_litert`;
   ``onnxruntime-u8s8``: ORT with uint8 activations, the variant whose convolutions ORT
   runs as int8 kernels on x86);
2. on the views of the *report* photos (never calibrated on): top-1 / top-5 agreement and
   the logit error of int8 against the float64 NumPy reference (``ports.numpy``), the same
   for the runtime's float32 for comparison;
3. per layer (:mod:`conformance.quantized`): the dequantized int8 activation against the
   same runtime's float32 on the same input (cosine, SNR, max error in steps), and each
   layer recomputed from the int8 model's own inputs (codes within one step);
4. file sizes, and images/s of int8 and float32 in the same runtime, batch 1, ``--threads``
   (2) threads, in alternating rounds (median);
5. the verdict against ``[int8]`` of ``conformance/tolerances.toml``.

Writes ``OUT/int8.json`` and the SNR per layer plot ``OUT/int8-layers.png`` (``--plot``
also elsewhere); exits 1 when an engine fails its verdict.  ``--quick``: 3 calibration
photos and the 2 report photos with known classes, centre views only, short timings (under
a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from conformance import int8_images as images
from conformance import quantized as Q

ENGINES = ("onnxruntime", "litert", "onnxruntime-u8s8")
DC_NET = "weights/deep-compression/compressed_SqueezeNet.net"
CPU_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def bounds() -> dict:
    """``[int8]`` of ``conformance/tolerances.toml``."""
    from conformance.harness import tolerances_table

    return tolerances_table()["int8"]


def cpu() -> dict:
    """The CPU's model name and which int8/bf16 extensions it has (``/proc/cpuinfo``, as the
    suite's records and the bench read it: :func:`conformance.host.cpu_description`)."""
    import os

    from conformance.host import cpu_description

    described = cpu_description(wanted=CPU_FLAGS)
    return {"model": described["cpu"], "cores": os.cpu_count(),
            "flags": {f: f in described["simd"] for f in CPU_FLAGS}}


class Engine:
    """One runtime's float32 and int8 models of the same weights, files under ``out``."""

    def __init__(self, name: str, weights, out: Path, calibration: np.ndarray, threads: int):
        from ports.formats import write

        self.name, self.variant = name, weights.variant
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if name in ("onnxruntime", "onnxruntime-u8s8"):
            from conformance.engines import int8_onnxruntime as int8
            from conformance.engines import onnxruntime as f32

            u8 = name.endswith("u8s8")
            self.float_path = out / "squeezenet-f32.onnx"
            self.int8_path = out / f"squeezenet-{'u8s8' if u8 else 'int8'}.onnx"
            write(weights, self.float_path)
            int8.quantize(self.float_path, self.int8_path, list(calibration[:, None]),
                          activations="uint8" if u8 else "int8")
            self.f32 = f32.load(weights)
            self.f32_timed = f32.session(self.f32.proto.SerializeToString(), threads)
        elif name == "litert":
            from conformance.engines import int8_litert as int8
            from conformance.engines import litert as f32

            self.float_path = out / "squeezenet-f32.tflite"
            self.int8_path = out / "squeezenet-int8.tflite"
            write(weights, self.float_path)
            int8.quantize(self.float_path.read_bytes(), self.int8_path, list(calibration[:, None]))
            self.f32 = f32.load(weights, threads=threads)
        else:
            raise ValueError(f"engine {name!r}: expected one of {ENGINES}")
        self.quantize_s = time.perf_counter() - start
        self.int8_mod, self.f32_mod = int8, f32
        self.int8 = int8.load(self.int8_path, weights.variant, threads=threads)

    def predict_int8(self, x: np.ndarray) -> np.ndarray:
        return self.int8_mod.predict(self.int8, x)

    def predict_f32(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.f32_mod.predict(self.f32, b[None]) for b in x])

    def timed_f32(self, x1: np.ndarray) -> None:
        """One batch-1 float32 inference as the bench runs it (the session/interpreter
        with ``threads``)."""
        if self.name.startswith("onnxruntime"):
            self.f32_timed.run(None, {self.f32_timed.get_inputs()[0].name: x1})
        else:
            self.f32_mod.predict(self.f32, x1)

    def layers(self, x1: np.ndarray):
        """(QuantizedRun, float32 activations) on one image."""
        return self.int8_mod.int8_run(self.int8, x1), self.f32_mod.activations(self.f32, x1)


def speed(engine: Engine, x: np.ndarray, rounds: int, seconds: float) -> dict:
    """images/s of float32 and int8, batch 1, in alternating rounds of ``seconds`` each."""
    runs = {"float32": engine.timed_f32,
            "int8": lambda b: engine.int8_mod.predict(engine.int8, b)}
    for fn in runs.values():  # warm up
        fn(x[:1])
    rates: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for r in range(rounds):
        for key in (order if r % 2 == 0 else order[::-1]):
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                engine_input = x[n % len(x)][None]
                runs[key](engine_input)
                n += 1
            rates[key].append(n / (time.perf_counter() - start))
    out = {k: statistics.median(v) for k, v in rates.items()}
    out["int8_over_float32"] = statistics.median(
        [a / b for a, b in zip(rates["int8"], rates["float32"])])
    out["rounds"] = rounds
    return out


def summarise(per_image: list[dict], names: list[str], key: str) -> dict:
    """Per layer over the images: the worst cosine / SNR / steps (``float``) or the worst
    codes and mean mismatch (``local``)."""
    out = {}
    for name in names:
        ms = [m[key][name] for m in per_image]
        if key == "float":
            out[name] = {"cosine_min": min(m["cosine"] for m in ms),
                         "snr_db_min": min(m["snr_db"] for m in ms),
                         "snr_db_median": statistics.median(m["snr_db"] for m in ms),
                         "max_steps": max(m["max_steps"] for m in ms),
                         "nonfinite": sum(m["nonfinite"] for m in ms)}
        else:
            out[name] = {"max_codes": max(m["max_codes"] for m in ms),
                         "mismatched": statistics.mean(m["mismatched"] for m in ms),
                         "nonfinite": sum(m["nonfinite"] for m in ms)}
    return out


def measure(engine: Engine, x: np.ndarray, reference: np.ndarray, *, rounds: int,
            seconds: float) -> dict:
    """Everything the report says of one engine (see the module docstring)."""
    names = engine.variant.activation_names()
    int8_logits = engine.predict_int8(x)
    per_image = []
    for i in range(len(x)):
        run, floats = engine.layers(x[i:i + 1])
        per_image.append({"float": Q.against_float(run, floats, names),
                          "local": Q.local(engine.variant, run, names)})
    worst_float = {n: min((m["float"][n] for m in per_image),
                          key=lambda m: (m.get("snr_db", -math.inf)
                                         if not m.get("nonfinite") else -math.inf))
                   for n in names}
    worst_local = {n: max((m["local"][n] for m in per_image),
                          key=lambda m: m.get("max_codes", math.inf)) for n in names}
    report = {"agreement": Q.agreement(reference, int8_logits),
              "float": worst_float, "local": worst_local}
    result = {
        "quantizer": engine.int8_mod.SETTINGS, "quantize_s": engine.quantize_s,
        "agreement_int8": report["agreement"],
        "agreement_float32": Q.agreement(reference, engine.predict_f32(x)),
        "bytes": {"float32": engine.float_path.stat().st_size,
                  "int8": engine.int8_path.stat().st_size},
        "layers_vs_float32": summarise(per_image, names, "float"),
        "layers_local": summarise(per_image, names, "local"),
        "step_bound": Q.step_bound(),
    }
    result["speed"] = speed(engine, x, rounds, seconds)
    result["problems"] = Q.verdict(report, bounds())
    snr = {n: v["snr_db_median"] for n, v in result["layers_vs_float32"].items()}
    result["lowest_snr_layer"] = min(snr, key=snr.get)
    return result


def plot(results: dict, names: list[str], path: Path, title: str) -> None:
    """SNR per layer (median over the report views, and the worst as a thin line) for each
    engine, in network order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4.5))
    styles = (("tab:blue", "o", 7), ("tab:orange", "s", 5), ("tab:green", "^", 4))
    for (engine, r), (colour, marker, size) in zip(results.items(), styles):
        layers = r["layers_vs_float32"]
        ax.plot(range(len(names)), [layers[n]["snr_db_median"] for n in names], "-",
                marker=marker, markersize=size, color=colour, label=f"{engine} (median)")
        ax.plot(range(len(names)), [layers[n]["snr_db_min"] for n in names], "--",
                color=colour, linewidth=0.8, label=f"{engine} (worst view)")
    ax.axhline(bounds()["min_snr_db"], color="red", linewidth=0.8,
               label="bound (tolerances.toml [int8])")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=70, fontsize=7)
    ax.set_ylabel("SNR of int8 vs float32 (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="int8", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few photos, short timings (< 60 s)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--out", type=Path, default=Path("build/int8"))
    p.add_argument("--plot", type=Path, help="also write the plot here (e.g. docs/int8-layers.png)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from conformance.fixtures import shared
    from ports import numpy as ref
    from ports.formats import read

    start = time.perf_counter()
    weights = read(shared(DC_NET))
    calib_names = images.QUICK_CALIBRATION if args.quick else images.CALIBRATION
    report_names = images.QUICK_REPORT if args.quick else images.REPORT
    views = images.QUICK_VIEWS if args.quick else images.VIEWS
    images.check_disjoint(calib_names, report_names)
    calibration, _ = images.inputs(calib_names, views)
    x, labels = images.inputs(report_names, views)
    reference = ref.predict(ref.load(weights, "float64"), x.astype(np.float64))
    results = {}
    for name in args.engines.split(","):
        engine = Engine(name, weights, args.out, calibration, args.threads)
        results[name] = measure(engine, x, reference, rounds=3 if args.quick else 7,
                                seconds=0.3 if args.quick else 1.5)
        print(f"{name}: top-1 {results[name]['agreement_int8']['top1']:.3f}, "
              f"lowest SNR {results[name]['lowest_snr_layer']}, "
              f"{'PASS' if not results[name]['problems'] else 'FAIL'}", flush=True)
    true = {i: images.TRUE_CLASS[label.split("#")[0]] for i, label in enumerate(labels)
            if label.endswith("#0") and label.split("#")[0] in images.TRUE_CLASS}
    doc = {"weights": DC_NET, "variant": weights.variant.id, "quick": args.quick,
           "cpu": cpu(), "threads": args.threads,
           "calibration": {"photos": list(calib_names), "views": [list(v) for v in views],
                           "count": len(calibration)},
           "report": {"photos": list(report_names), "labels": labels, "count": len(x)},
           "reference_top1_true_class": {labels[i]: [int(reference[i].argmax()), c]
                                         for i, c in true.items()},
           "int8_top1_true_class": {e: {labels[i]: r["agreement_int8"]["per_image"][i][1]
                                        for i in true} for e, r in results.items()},
           "bounds": bounds(), "engines": results,
           "seconds": time.perf_counter() - start}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8.json").write_text(json.dumps(doc, indent=1, default=float))
    names = weights.variant.activation_names()
    title = (f"Deep Compression SqueezeNet v1.0: int8 vs float32 per layer, "
             f"{len(x)} report views, {len(calibration)} calibration views; {cpu()['model']}")
    for target in [args.out / "int8-layers.png"] + ([args.plot] if args.plot else []):
        plot(results, names, target, title)
    print(f"wrote {args.out / 'int8.json'} ({time.perf_counter() - start:.1f} s)")
    failed = {e: r["problems"] for e, r in results.items() if r["problems"]}
    for e, problems in failed.items():
        for line in problems:
            print(f"{e}: {line}")
    return 1 if failed else 0
