"""The bench records which CPU generation it ran on: the model name alone ("AMD EPYC") covers
machines with and without AVX-512, whose ratios to ONNX Runtime differ."""

from conformance import host

try:  # NumPy's own run-time dispatch table, an independent reading of the same CPU
    from numpy._core._multiarray_umath import __cpu_features__ as NUMPY_FEATURES
except ImportError:  # NumPy 1.x
    from numpy.core._multiarray_umath import __cpu_features__ as NUMPY_FEATURES

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512_bf16 avx512_vnni
processor\t: 1
cpu family\t: 99
flags\t\t: fpu amx_tile
"""


def test_this_machine_agrees_with_numpys_dispatch():
    found = host.cpu_description()
    assert ("avx2" in found["simd"]) == NUMPY_FEATURES["AVX2"]
    assert ("avx512f" in found["simd"]) == NUMPY_FEATURES["AVX512F"]
    assert ("fma" in found["simd"]) == NUMPY_FEATURES["FMA3"]
    assert all(part.isdigit() for part in found["cpu_id"].split("/"))


def test_the_first_processor_is_read(tmp_path):
    (tmp_path / "cpuinfo").write_text(ZEN4)
    found = host.cpu_description(tmp_path / "cpuinfo")
    assert found == {"cpu": "AMD EPYC 9R14", "cpu_id": "25/17",
                     "simd": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]}


def test_without_cpuinfo_the_platform_names_the_cpu(tmp_path):
    found = host.cpu_description(tmp_path / "missing")
    assert found["cpu_id"] == "?/?" and found["simd"] == [] and found["cpu"]


def test_bench_entries_name_a_port_and_a_precision_it_computes():
    """``PORT@bfloat16`` is the port in bfloat16 (issue 31); a precision the port does not
    compute is unknown; --quick keeps one Keras backend in bfloat16."""
    from devtools.bench.config import DEFAULT_PORTS, QUICK_PORTS, split, unknown

    assert split("torch@bfloat16") == ("torch", "bfloat16")
    assert split("torch") == ("torch", "float32")
    assert not unknown("openvino@bfloat16") and not unknown("chainer")
    assert unknown("mxnet@bfloat16") and unknown("onnxruntime@bfloat16") and unknown("nope")
    assert {"torch@bfloat16", "flax@bfloat16", "openvino@bfloat16"} <= set(DEFAULT_PORTS)
    assert "keras-torch@bfloat16" in QUICK_PORTS and "keras-tf@bfloat16" not in QUICK_PORTS
