"""Inference speed of every port against ONNX Runtime, measured side by side.

``tools/bench`` (this module's :func:`main`) starts, for each port, a long-lived worker
process in the port's own tox environment (``python -m devtools.bench --worker PORT``
run by that environment's interpreter, the environment created completely first by
:mod:`conformance.toxenv`), and one ONNX Runtime worker that lives for the whole run.
Workers load SqueezeNet 1.1 with the seeded weights, choose their fastest honest inference
mode per batch size (every candidate computes the full logits and hands them back as a
NumPy array), and then time rounds on command.  Rounds alternate ``port, ORT, ORT, port,
...`` so that machine drift hits both alike; each round gives one ratio port/ORT, and the
report gives medians.  Only one worker computes at a time.

Fast modes (the worker tries the candidates and keeps the fastest, per batch size; one
module per framework in :mod:`devtools.bench.candidates`):

=============== ==================================================================
torch           ``inference_mode``; NCHW or channels-last; at the run's thread count or
                one thread (OpenMP teams stall on a busy machine); a frozen TorchScript
                trace run by oneDNN Graph (conv + ReLU fused); ``torch.compile`` (not in
                ``--quick``)
onnxruntime     our ONNX export, ``ORT_ENABLE_ALL``
opencv          ``cv2.dnn`` from our Caffe files, OpenCV backend, CPU target
openvino        our ONNX export compiled for OpenVINO's CPU plugin in float32 (``f32`` hint),
                one infer request reused; with the ``LATENCY`` hint (not in ``--quick``)
litert          our ``.tflite`` export in the ``ai-edge-litert`` interpreter (its default
                CPU delegate, XNNPACK), input allocated once per batch shape
keras-*         ``predict_on_batch`` (compiled predict function) or a direct call
flax            the port's ``jax.jit``-compiled forward, NHWC input already on device
                (on CPU it maps the layers through the second pool over the images)
mxnet           ``hybridize(static_alloc=True, static_shape=True)``, or the same after
                ``optimize_for(backend="MKLDNN")`` (conv + ReLU fused)
chainer         ``using_config('train', False)`` + ``no_backprop_mode``
=============== ==================================================================

``PORT@bfloat16`` (every port that computes bfloat16, by default) is the same port loaded
in bfloat16, its candidates the same modes on a bfloat16 model, timed against ONNX
Runtime's float32 like the others; the CPU's bfloat16 support (``avx512_bf16``,
``amx_tile``) is recorded with the machine.

A candidate whose logits disagree with the float64 NumPy reference (the bound of its dtype
in ``tolerances.toml``, top-5 included) is rejected.  Workers run with glibc's malloc told to
keep freed memory (``MALLOC_TUNED`` below; ``--system-malloc`` turns that off): by default
every block above 32 MB is a fresh ``mmap``, so a framework without its own arena pays
page faults on each large activation of every call, which ONNX Runtime (an arena) never
does.

Inputs are the seeded conformance images at 224x224, float32, handed over once in the
framework's own layout (NCHW, or NHWC for Keras/Flax); outputs are copied back to NumPy in
every timed call.  The spec's multiply-accumulate count gives achieved GFLOP/s (2 FLOP per
MAC), compared with a measured machine peak: the best of a few large float32 matrix
multiplies in NumPy (:mod:`devtools.bench.peak`: measured without the
``OPENBLAS_CORETYPE`` override some machines set, and with the kernel that ran recorded).

Writes ``build/bench/bench.json`` and ``build/bench/bench.png``.  ``--quick`` (CI) runs two
short rounds at batch 1 and 4 only to prove that everything works; its numbers mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conformance import toxenv
from conformance.harness import ROOT
from conformance.host import cpu_description
from conformance.registry import PORTS

from . import peak
from .config import (
    BATCHES,
    DEFAULT_PORTS,
    OUT,
    QUICK_BATCHES,
    QUICK_PORTS,
    REFERENCE,
    SIZE,
    VARIANT_ID,
    split,
    unknown,
)

# glibc malloc serves every block above 32 MB (its largest mmap threshold) with a fresh mmap
# and unmaps it on free, so a framework without its own arena page-faults and zeroes every
# large activation again on every call: at batch 32, conv1's output alone is 100 MB.  ONNX
# Runtime keeps an arena and does not care; the ports do (torch channels-last at batch 32:
# 95 -> 185 img/s).  Workers therefore run with malloc told to keep what it frees, as
# PyTorch's CPU tuning guide advises (there with jemalloc or tcmalloc); ``--system-malloc``
# measures glibc's defaults instead.
MALLOC_TUNED = {"MALLOC_MMAP_MAX_": "0",                    # no mmap: blocks come from the heap
                "MALLOC_TRIM_THRESHOLD_": str(16 << 30),    # and freed ones stay there
                "MALLOC_TOP_PAD_": str(512 << 20)}          # grow the heap in 512 MB steps


def _thread_env(threads: int, tuned_malloc: bool = True) -> dict:
    env = toxenv.clean_environ()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS"):
        env[var] = str(threads)
    if tuned_malloc:
        env.update(MALLOC_TUNED)
    return env


class Worker:
    """A running worker process; ``info`` is its ready message."""

    def __init__(self, port: str, python: str, batches, quick: bool, threads: int,
                 log_dir: Path, tuned_malloc: bool = True) -> None:
        self.port = port
        env = _thread_env(threads, tuned_malloc)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in
                                             env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env["PYTHONHASHSEED"] = "0"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{port}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        cmd = [python, "-m", "devtools.bench", "--worker", port,
               "--batches", ",".join(map(str, batches))] + (["--quick"] if quick else [])
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1)
        self.info = self._read()
        if not self.info.get("ready"):
            self.close()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            return {"ready": False, "error": f"worker exited ({self.proc.returncode}); see "
                                             f"{self.log_path}"}
        return json.loads(line)

    def run(self, batch: int, seconds: float) -> float:
        self.proc.stdin.write(json.dumps({"cmd": "run", "batch": batch, "seconds": seconds})
                              + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "images_per_s" not in reply:
            raise RuntimeError(f"{self.port} worker: {reply.get('error', reply)}")
        return float(reply["images_per_s"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def bench(ports: list[str], pythons: dict[str, str], *, quick: bool, rounds: int,
          seconds: float, threads: int, batches=BATCHES, tuned_malloc: bool = True,
          log=print) -> dict:
    from ports.spec import Variant

    macs = Variant.from_id(VARIANT_ID).macs(SIZE)
    log(f"SqueezeNet {VARIANT_ID} at {SIZE}x{SIZE}: {macs / 1e9:.3f} G multiply-adds per image")
    peak_n = 1024 if quick else 4096
    probe = peak.measure(peak_n, _thread_env(threads), ROOT)
    roof = probe["gflops"]
    kernels = ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']}"
                        for b in probe["blas"]) or "unknown BLAS"
    cpu = cpu_description()
    log(f"cpu: {cpu['cpu']} (family/model {cpu['cpu_id']}; {' '.join(cpu['simd']) or 'no AVX2'})")
    log(f"machine peak (NumPy float32 {peak_n}x{peak_n} matmul, {threads} threads, "
        f"{kernels}{', without ' + str(probe['unset']) if probe['unset'] else ''}): "
        f"{roof:.1f} GFLOP/s")
    result = {"variant": VARIANT_ID, "size": SIZE, "dtype": "float32", "batches": list(batches),
              "macs_per_image": macs, "flops_per_image": 2 * macs, "threads": threads,
              "quick": quick, "rounds": rounds, "seconds_per_round": seconds,
              "worker_env": MALLOC_TUNED if tuned_malloc else {},
              "machine": {**cpu, "cores": os.cpu_count(),
                          "peak_gflops": roof, "peak_method": "numpy float32 matmul",
                          "peak_blas": probe["blas"], "peak_unset_env": probe["unset"]},
              "reference": REFERENCE, "ports": {}, "not_run": {}}

    env = {p: PORTS[split(p)[0]].env for p in [REFERENCE, *ports]}
    needed = list(dict.fromkeys(env[p] for p in env if env[p] and split(p)[0] not in pythons
                                and env[p] not in pythons))
    pythons = {**(toxenv.pythons(needed, log) if needed else {}), **pythons}

    def python_for(port: str) -> str:  # an environment that could not be built says why
        name = split(port)[0]
        return pythons.get(name) or pythons.get(env[port]) or toxenv.python(env[port], log)

    def start(port: str) -> Worker:
        log(f"   starting {port} worker (load, warm up, choose the fastest mode) ...")
        t0 = time.perf_counter()
        w = Worker(port, python_for(port), batches, quick, threads, OUT / "logs", tuned_malloc)
        if w.info.get("ready"):
            log(f"   {port} ready in {time.perf_counter() - t0:.0f}s: "
                + ", ".join(f"batch {b}: {m}" for b, m in w.info["modes"].items()))
        return w

    log(f"== [{0}/{len(ports)}] {REFERENCE} (reference, lives for the whole run)")
    ref = start(REFERENCE)
    if not ref.info.get("ready"):
        raise RuntimeError(f"{REFERENCE} worker failed: {ref.info.get('error')}\n"
                           f"{ref.info.get('traceback', '')}")
    ref_logits = np.asarray(ref.info["logits0"])
    ref_rates: dict[int, list[float]] = {b: [] for b in batches}
    others = [p for p in ports if p != REFERENCE]
    try:
        for i, port in enumerate(others, 1):
            log(f"== [{i}/{len(others)}] {port} (env {env[port]})")
            try:
                w = start(port)
            except Exception as e:
                result["not_run"][port] = f"{type(e).__name__}: {e}"
                log(f"   not run: {result['not_run'][port]}")
                continue
            if not w.info.get("ready"):
                result["not_run"][port] = w.info.get("error", "failed")
                log(f"   not run: {result['not_run'][port]}")
                continue
            try:
                record = _measure(w, ref, batches, rounds, seconds, ref_rates, log)
            except Exception as e:
                result["not_run"][port] = f"{type(e).__name__}: {e}"
                log(f"   failed while timing: {e}")
                continue
            finally:
                w.close()
            record["max_abs_vs_onnxruntime"] = float(
                np.abs(np.asarray(w.info["logits0"]) - ref_logits).max())
            result["ports"][port] = _finish(record, w.info, macs, roof)
            _print_port(port, result["ports"][port], log)
        if not any(ref_rates.values()):  # nothing else ran: time the reference on its own
            for _ in range(rounds):
                for b in batches:
                    ref_rates[b].append(ref.run(b, seconds))
    finally:
        ref.close()
    # the machine may have been busier at the start
    again = peak.measure(peak_n, _thread_env(threads), ROOT)["gflops"]
    if again > roof:
        log(f"machine peak measured again: {again:.1f} GFLOP/s")
        roof = result["machine"]["peak_gflops"] = again
    ref_record = {"batches": {str(b): {"images_per_s": statistics.median(ref_rates[b]),
                                       "min": min(ref_rates[b]), "max": max(ref_rates[b]),
                                       "rounds": len(ref_rates[b]),
                                       "ratio_to_onnxruntime": 1.0} for b in batches},
                  "max_abs_vs_onnxruntime": 0.0}
    result["ports"] = {REFERENCE: _finish(ref_record, ref.info, macs, roof), **result["ports"]}
    for rec in result["ports"].values():
        for b in rec["batches"].values():
            b["fraction_of_peak"] = b["gflops"] / roof
    _print_port(REFERENCE, result["ports"][REFERENCE], log)
    return result


def _measure(w: Worker, ref: Worker, batches, rounds: int, seconds: float,
             ref_rates: dict, log) -> dict:
    rec: dict = {"batches": {}}
    for b in batches:
        mine, ratios = [], []
        for r in range(rounds):
            order = (w, ref) if r % 2 == 0 else (ref, w)   # ABBA: linear drift cancels
            rates = {x.port: x.run(b, seconds) for x in order}
            mine.append(rates[w.port])
            ref_rates[b].append(rates[ref.port])
            ratios.append(rates[w.port] / rates[ref.port])
            log(f"   batch {b:>2} round {r + 1}/{rounds}: {rates[w.port]:8.1f} img/s, "
                f"ORT {rates[ref.port]:8.1f} img/s, ratio {ratios[-1]:.2f}")
        rec["batches"][str(b)] = {"images_per_s": statistics.median(mine), "min": min(mine),
                                  "max": max(mine), "rounds": rounds,
                                  "ratio_to_onnxruntime": statistics.median(ratios),
                                  "ratio_min": min(ratios), "ratio_max": max(ratios)}
    return rec


def _finish(record: dict, info: dict, macs: int, roof: float) -> dict:
    for b in record["batches"].values():
        b["gflops"] = b["images_per_s"] * 2 * macs / 1e9
        b["fraction_of_peak"] = b["gflops"] / roof
    record.update({"env": PORTS[split(info["port"])[0]].env, "dtype": split(info["port"])[1],
                   "modes": info["modes"],
                   "trials": info["trials"], "versions": info["versions"],
                   "python": info["python"]})
    return record


def _print_port(port: str, rec: dict, log) -> None:
    for b, r in rec["batches"].items():
        log(f"   {port} batch {b}: {r['images_per_s']:.1f} img/s, "
            f"{r['ratio_to_onnxruntime']:.2f}x ORT, {r['gflops']:.1f} GFLOP/s "
            f"({100 * r['fraction_of_peak']:.1f}% of peak)")


def table(result: dict) -> str:
    batches = [str(b) for b in result["batches"]]
    head = f"{'port':<21}" + "".join(f"{'b' + b + ' img/s':>12}{'xORT':>7}{'%peak':>7}"
                                     for b in batches) + "  mode"
    lines = [head]
    for port, rec in result["ports"].items():
        cells = "".join(f"{rec['batches'][b]['images_per_s']:>12.1f}"
                        f"{rec['batches'][b]['ratio_to_onnxruntime']:>7.2f}"
                        f"{100 * rec['batches'][b]['fraction_of_peak']:>7.1f}" for b in batches)
        modes = " / ".join(dict.fromkeys(rec["modes"].values()))
        lines.append(f"{port:<21}{cells}  {modes}")
    for port, why in result["not_run"].items():
        lines.append(f"{port:<21}  not run: {why[:150]}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ports = list(result["ports"])
    batches = [str(b) for b in result["batches"]]
    fig, axes = plt.subplots(1, len(batches), figsize=(4 + 1.1 * len(ports), 4.5),
                             squeeze=False)
    bound = result["machine"]["peak_gflops"] * 1e9 / result["flops_per_image"]
    for ax, b in zip(axes[0], batches):
        rates = [result["ports"][p]["batches"][b]["images_per_s"] for p in ports]
        colors = ["tab:orange" if p == REFERENCE else "tab:blue" for p in ports]
        bars = ax.bar(range(len(ports)), rates, color=colors)
        for bar, p in zip(bars, ports):
            r = result["ports"][p]["batches"][b]
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                    f"{r['ratio_to_onnxruntime']:.2f}x", ha="center", va="bottom", fontsize=8)
        ax.axhline(bound, color="grey", linestyle="--", linewidth=1)
        if REFERENCE in result["ports"]:  # the bar for every port but Chainer
            half = 0.5 * result["ports"][REFERENCE]["batches"][b]["images_per_s"]
            ax.axhline(half, color="tab:orange", linestyle=":", linewidth=1)
            ax.text(len(ports) - 0.5, half, "0.5x ONNX Runtime", ha="right", va="bottom",
                    fontsize=7, color="tab:orange")
        ax.text(len(ports) - 0.5, bound, f"matmul-peak bound {bound:.0f}", ha="right",
                va="bottom", fontsize=7, color="grey")
        ax.set_xticks(range(len(ports)), ports, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("images / s")
        ax.set_title(f"batch {b}")
    fig.suptitle(f"SqueezeNet {result['variant']} {result['size']}x{result['size']} float32, "
                 f"{result['threads']} threads; labels: ratio to ONNX Runtime"
                 + (" (--quick: not meaningful)" if result["quick"] else ""), fontsize=9)
    fig.tight_layout()
    tmp = str(path) + ".part.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--ports", help="comma-separated ports, PORT@bfloat16 for a reduced "
                                        "precision (default: all but the numpy oracle, and "
                                        "each in bfloat16 where it computes it; --quick: one "
                                        "Keras backend in bfloat16)")
    parser.add_argument("--quick", action="store_true", help="CI: 2 short rounds, no compile")
    parser.add_argument("--rounds", type=int, help="timed rounds per port and batch (default 7)")
    parser.add_argument("--seconds", type=float, help="seconds per timed run (default 1.0)")
    parser.add_argument("--threads", type=int, default=int(
        os.environ.get("SQUEEZENET_BENCH_THREADS") or os.cpu_count() or 1),
        help="threads per framework and for the peak matmul (default: every core, or "
             "$SQUEEZENET_BENCH_THREADS)")
    parser.add_argument("--python", action="append", default=[], metavar="PORT_OR_ENV=PATH",
                        help="use this interpreter instead of the tox environment's")
    parser.add_argument("--system-malloc", action="store_true",
                        help="run the workers with glibc's default malloc settings instead of "
                             "MALLOC_MMAP_MAX_=0 and a large trim threshold")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batches", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # --quick proves the tool end to end; a small second batch keeps it brief
    default = QUICK_BATCHES if args.quick else BATCHES
    batches = [int(b) for b in (args.batches or ",".join(map(str, default))).split(",") if b]
    if args.worker:
        from .worker import worker

        return worker(args.worker, batches, args.quick)
    if hasattr(sys.stdout, "reconfigure"):  # progress shows even through a pipe or a file
        sys.stdout.reconfigure(line_buffering=True)
    ports = [p for p in (args.ports or ",".join(QUICK_PORTS if args.quick else DEFAULT_PORTS))
             .split(",") if p]
    wrong = [p for p in ports if unknown(p)]
    if wrong:
        parser.error(f"unknown ports {wrong}; known: {', '.join(DEFAULT_PORTS)}")
    pythons = {}
    for item in args.python:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--python expects PORT_OR_ENV=PATH, got {item!r}")
        pythons[key] = value
    rounds = args.rounds or (2 if args.quick else 7)
    seconds = args.seconds or (0.05 if args.quick else 1.0)
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = bench(ports, pythons, quick=args.quick, rounds=rounds, seconds=seconds,
                   threads=args.threads, batches=batches, tuned_malloc=not args.system_malloc)
    result["wall_seconds"] = time.perf_counter() - start
    print()
    print(table(result))
    tmp = OUT / ".bench.json.part"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(OUT / "bench.json")
    if not args.no_plot:
        plot(result, OUT / "bench.png")
    print(f"\nran: {', '.join(result['ports'])}; not run: "
          f"{', '.join(result['not_run']) or 'none'}")
    print(f"wrote {OUT / 'bench.json'}" + ("" if args.no_plot else f" and {OUT / 'bench.png'}"))
    return 0
