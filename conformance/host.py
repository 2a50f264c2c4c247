"""What this process runs on: the CPU (model and vector extensions) and every installed
distribution.

The key of recorded results (:mod:`conformance.results`), the release check
(:mod:`conformance.releases`) and the bench's records (:mod:`devtools.bench`) all read
them; this module imports nothing of the suite, so each of those can.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

# the vector extensions that decide which kernels oneDNN, MLAS, XLA and OpenBLAS pick
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo"),
                    wanted: tuple[str, ...] = SIMD_FLAGS) -> dict:
    """``{"cpu": model name, "cpu_id": "family/model", "simd": [...]}`` from /proc/cpuinfo:
    the same model name ("AMD EPYC") covers generations with and without AVX-512, and the
    ports' ratios to ONNX Runtime differ between them; ``simd``: those of ``wanted`` the CPU
    has."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            fields.setdefault(key, value)
            if key == "flags":  # the first processor's fields end with its flags
                break
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name") or platform.processor() or platform.machine(),
            "cpu_id": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
            "simd": [f for f in wanted if f in flags]}


@cache
def versions() -> dict[str, str]:
    """Every installed distribution -> version, in this interpreter."""
    from importlib import metadata

    out = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            out[name.lower().replace("_", "-")] = dist.version
    return dict(sorted(out.items()))
