"""PyTorch: ``inference_mode``, NCHW or channels-last, at the run's thread count or one
thread (OpenMP teams stall on a busy machine); a frozen TorchScript trace run by oneDNN Graph
(conv + ReLU fused); ``torch.compile`` (not in ``--quick``).  In bfloat16 the same modes on a
bfloat16 model (oneDNN's bfloat16 kernels where the CPU has them), logits widened to
float32."""

from __future__ import annotations

import copy
import os

import numpy as np
import torch


def candidates(port: str, mod, weights, quick: bool, dtype: str = "float32") -> list:
    threads = int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))
    model = mod.load(weights, dtype).eval()
    as_dtype = next(model.parameters()).dtype

    def placed(x, channels_last):
        """(model, input tensor), both channels-last or both as they are."""
        m, t = model, torch.from_numpy(np.ascontiguousarray(x)).to(as_dtype)
        if channels_last:
            m = copy.deepcopy(model).to(memory_format=torch.channels_last)
            t = t.contiguous(memory_format=torch.channels_last)
        return m, t

    def runner(f, t, n, mode):
        def run():
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
            with mode():
                return mod.to_numpy(f(t))
        return run

    def eager(x, channels_last=False, compiled=False, n=threads):
        m, t = placed(x, channels_last)
        return runner(torch.compile(m) if compiled else m, t, n, torch.inference_mode)

    def onednn_graph(x, channels_last=False):
        """TorchScript trace, frozen, run by oneDNN Graph (LLGA): convolution + ReLU fused,
        weights prepacked once."""
        m, t = placed(x, channels_last)
        torch.jit.enable_onednn_fusion(True)
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(m, t))
            for _ in range(2):  # the fusion pass runs on the first profiled calls
                traced(t)
        return runner(traced, t, threads, torch.no_grad)

    out = [("inference_mode NCHW", eager),
           ("inference_mode channels_last", lambda x: eager(x, True))]
    if threads > 1:  # OpenMP teams stall on a busy machine; one thread may be faster
        out += [("inference_mode NCHW, 1 thread", lambda x: eager(x, n=1)),
                ("inference_mode channels_last, 1 thread", lambda x: eager(x, True, n=1))]
    out += [("TorchScript frozen, oneDNN Graph fusion, NCHW", onednn_graph),
            ("TorchScript frozen, oneDNN Graph fusion, channels_last",
             lambda x: onednn_graph(x, True))]
    if not quick:
        out += [("torch.compile NCHW", lambda x: eager(x, False, True)),
                ("torch.compile channels_last", lambda x: eager(x, True, True))]
    return out
