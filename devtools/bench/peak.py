"""The machine's float32 roof: the best of a few large matrix products in NumPy.

Measured in a child process (:func:`main`, started by :func:`measure`) whose BLAS uses the run's
thread count, as the workers' frameworks do, and with ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` unset **in that child only**: some machines set
``OPENBLAS_CORETYPE=Haswell`` (older OpenBLAS builds misbehave on some CPUs without it), which
holds NumPy's matmul to AVX2 kernels (on a 2-core AVX-512 machine: 225 GFLOP/s with it, 404
without) and so understates the roof.  The child reports which BLAS and which kernel
architecture ran (threadpoolctl), and the parent records whether the variables were set.
Tests and the workers keep the environment they were given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

ROOF_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def machine_peak(n: int, repeats: int = 3) -> float:
    """Best float32 GFLOP/s of an ``n x n`` matrix product in NumPy (its BLAS)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def blas_info() -> list[dict]:
    """What threadpoolctl says about the BLAS libraries loaded (kernel architecture, threads,
    version); empty when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [{k: lib.get(k) for k in keys} for lib in threadpool_info()
            if lib.get("user_api") == "blas"]


def measure(n: int, env: dict[str, str], cwd) -> dict:
    """``{"gflops", "blas", "unset"}`` from a child process with ``env`` minus
    :data:`ROOF_VARS` (``unset`` records the values that were removed)."""
    unset = {k: env[k] for k in ROOF_VARS if k in env}
    child = {k: v for k, v in env.items() if k not in ROOF_VARS}
    code = f"from devtools.bench.peak import main; main([{int(n)}])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=child,
                          stdout=subprocess.PIPE, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "unset": unset}


def main(argv: list) -> int:
    """Print ``{"gflops", "blas", "threads_env"}`` for an ``argv[0]``-sized product."""
    n = int(argv[0])
    gflops = machine_peak(n)
    print(json.dumps({"gflops": gflops, "blas": blas_info(),
                      "threads_env": os.environ.get("OPENBLAS_NUM_THREADS")}))
    return 0
