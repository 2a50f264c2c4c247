"""A codec whose library is not installed says what to install.

Someone who installed one port's extra (``pip install ".[flax]"``) has msgpack but maybe no
h5py, protobuf or onnx: every read and write of a format whose library is missing must end
in :class:`ports.errors.WeightsError` naming the file, the format, the package and the extra
that installs it (through :func:`ports.formats.dependency`), never a bare
``ModuleNotFoundError``; and the formats that do not need it keep working.

The library is hidden, not uninstalled: a folder put first on ``PYTHONPATH`` holds a module
of that name whose import raises ``ModuleNotFoundError``, exactly what a missing package
raises.  ``PYTHONPATH`` reaches the helper process the Keras reader parses HDF5 in too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ports import formats
from ports.errors import WeightsError
from ports.seeded import seeded_weights
from ports.spec import Variant

ROOT = Path(__file__).resolve().parent.parent
# library (as imported) -> the formats that need it; the others must not notice it is gone
NEEDED_BY = {
    "h5py": {"keras", "keras-h5", "keras-file"},
    "google.protobuf": {"caffe", "onnx", "coreml", "coreml-package"},
    "msgpack": {"flax"},
    "onnx": {"onnx"},
    "safetensors": {"safetensors"},
    "flatbuffers": {"tflite"},
}
PACKAGE = {"google.protobuf": "protobuf"}
OWN = {"onnx": "onnx"}  # the library a codec imports, where it is not the hidden one
# (library, format) -> the only calls that need it (the tflite reader parses by itself)
ONLY_FOR = {("flatbuffers", "tflite"): {"write"}}

PROBE = r"""
import json, sys
from ports import formats
from ports._api import weights as port_weights
from ports.errors import WeightsError
from ports.seeded import seeded_weights
from ports.spec import Variant

files = json.loads(sys.argv[1])
w = seeded_weights(Variant("1_1"))
w = type(w)({k: (v * 32).round() / 32 for k, v in w.tensors.items()}, dict(w.meta))
out = {}
for name, path in files.items():
    got = {}
    for what, call in (("read", lambda: formats.read(path, name)),
                       ("load", lambda: port_weights(path)),   # every port's load()
                       ("write", lambda: formats.write(w, path + ".out", name))):
        try:
            call()
            got[what] = "ok"
        except WeightsError as e:
            got[what] = "WeightsError: " + str(e)
        except Exception as e:
            got[what] = f"{type(e).__name__}: {e}"
    out[name] = got
print(json.dumps(out))
"""


def hide(folder: Path, module: str) -> Path:
    """A folder that, first on ``PYTHONPATH``, makes ``import MODULE`` fail as if the package
    were not installed."""
    target = folder.joinpath(*module.split("."))
    target.mkdir(parents=True)
    top = module.split(".")[0]
    (target / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named {module!r} (hidden by the test)\", "
        f"name={top!r})\n")
    return folder


def quantized(weights):
    """``weights`` on a coarse grid, so that a Deep Compression .net (<= 255 distinct values
    per layer) can hold them (the probe writes these too)."""
    tensors = {k: np.round(v * 32) / 32 for k, v in weights.tensors.items()}
    return type(weights)(tensors, dict(weights.meta))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """One file of every format, written while every library is there."""
    folder = tmp_path_factory.mktemp("formats")
    w = quantized(seeded_weights(Variant("1_1")))
    out = {}
    for name, fmt in formats.FORMATS.items():
        path = folder / f"w{fmt.extensions[0]}"
        formats.write(w, path, name)
        out[name] = str(path)
    return out


def probe(files: dict[str, str], hidden: Path) -> dict[str, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(hidden), str(ROOT)])
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(files)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("module", sorted(NEEDED_BY))
def test_a_missing_library_is_a_weights_error_naming_the_extra(files, tmp_path, module):
    results = probe(files, hide(tmp_path / "hidden", module))
    package = PACKAGE.get(module, module)
    for name, got in results.items():
        if name not in NEEDED_BY[module]:
            assert all(v == "ok" for v in got.values()), (module, name, got)
            continue
        for what, message in got.items():
            if what not in ONLY_FOR.get((module, name), {what}):
                assert message == "ok", (module, name, what, message)
                continue
            assert message.startswith("WeightsError: "), (module, name, what, message)
            assert "\n" not in message
            # onnx itself imports protobuf: the codec names its own library and what failed
            needs = OWN.get(name, package)
            assert f"({name}): the {name} codec needs the {needs} package" in message, message
            assert f"No module named '{module}'" in message, message
            assert "pip install 'squeezenet-ports[convert]'" in message, message
            path = files[name] + (".out" if what == "write" else "")
            assert message.startswith(f"WeightsError: {path} ({name})"), message


def test_the_command_line_says_it_in_one_line(files, tmp_path):
    """What a user with only ``.[flax]`` installed sees for ``tools/convert w.weights.h5``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(hide(tmp_path / "hidden", "h5py"))
    out = tmp_path / "o.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "convert"), files["keras"],
                           str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"convert: error: {files['keras']} (keras): the keras codec "
                               "needs the h5py package"), lines[0]
    assert "squeezenet-ports[convert]" in lines[0]
    assert not out.exists()


def test_dependency_names_the_package_of_a_submodule():
    with pytest.raises(WeightsError, match=r"caffe: the caffe codec needs the protobuf package"):
        formats.dependency("google.protobuf.no_such_module_here", "caffe")
    assert formats.dependency("json", "test").__name__ == "json"
