"""A reader reads only the file it was given: HDF5 links, external storage, virtual datasets
and plugin filters, zip member names, and code in Keras model configs (issue 26).

Each hostile file of :mod:`ports.fuzz.hostile` is refused, and its honest twin (the
same file with the pointed-to part kept inside) is read, so each test fails on a reader that
follows the pointer.  Converting them with ``tools/convert`` under an audit hook
(``tests/opens.py``: the converter's process and the isolated HDF5 reader's) opens nothing
outside the inputs, the output folder and Python's own files.
"""

from __future__ import annotations

import json
import sys
import zipfile

import numpy as np
import pytest
from opens import audited

from ports import formats, fuzz
from ports.errors import WeightsError
from ports.formats._io import unsafe_member_name
from ports.fuzz import hostile

CASES = [(fmt, k) for fmt, built in hostile.builders().items() for k in range(len(built))]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[tuple[str, int], hostile.Hostile]:
    """Every hostile case, built once for this module."""
    root = tmp_path_factory.mktemp("hostile")
    out = {}
    for fmt, k in CASES:
        why = fuzz.availability(fmt)
        assert why is None, why
        (root / f"{fmt}-{k}").mkdir()
        out[(fmt, k)] = hostile.builders()[fmt][k](root / f"{fmt}-{k}")
    return out


@pytest.mark.parametrize(("fmt", "k"), CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_hostile_file_is_refused_and_its_honest_twin_read(built, fmt, k):
    case = built[(fmt, k)]
    with pytest.raises(WeightsError, match=case.match) as e:
        formats.read(case.path, fmt)
    assert str(case.path) in str(e.value)   # the message names the file
    weights = formats.read(case.honest, fmt)
    assert weights.variant == hostile.VARIANT


def test_converting_hostile_files_opens_nothing_outside_them(built, tmp_path):
    """One process converts every hostile file (exit 2) and the honest twin of each that
    points outside itself (exit 0), watched by an audit hook, as is the isolated HDF5
    reader."""
    cases = list(built.values())
    pointing = [c for c in cases if c.outside is not None]
    assert {c.format for c in pointing} >= {"keras", "keras-h5", "keras-file"}
    out = tmp_path / "out"
    out.mkdir()
    jobs = [(str(c.path), str(out / f"h{i}.safetensors"), 2) for i, c in enumerate(cases)]
    jobs += [(str(c.honest), str(out / f"ok{i}.safetensors"), 0) for i, c in enumerate(pointing)]
    script = ("import json, sys\nfrom ports.cli import run\nfrom ports.cli.convert import main\n"
              "jobs = json.loads(sys.argv[1])\n"
              "print(json.dumps([run(main, [src, dst], prog='convert') for src, dst, _ in jobs]))")
    audit = audited([sys.executable, "-c", script, json.dumps(jobs)])
    assert audit.returncode == 0, audit.stderr[-2000:]
    assert json.loads(audit.stdout.strip().splitlines()[-1]) == [want for *_, want in jobs], \
        audit.stderr[-3000:]
    assert len(audit.processes) >= 2, "the isolated HDF5 reader was not watched"
    for c in pointing:
        assert not audit.opened(c.outside), f"{c.label}: opened {c.outside}"
    allowed = [c.path for c in cases] + [c.honest for c in pointing] + [out]
    assert audit.outside(*allowed) == []


def test_the_audit_sees_an_open_outside(tmp_path):
    """The audit itself can fail: a process that opens a file beyond the allowed ones is
    caught, in the isolated reader too."""
    secret = tmp_path / "secret"
    secret.write_text("x")
    script = ("import sys\nopen(sys.argv[1]).close()\n"
              "from ports.formats._sandbox import isolated\n"
              "from ports.formats import keras\n")
    audit = audited([sys.executable, "-c", script, str(secret)])
    assert audit.returncode == 0, audit.stderr
    assert audit.opened(secret) and audit.outside() == [secret]


def test_a_file_with_more_links_than_the_bound_is_refused(tmp_path, monkeypatch):
    import h5py

    from ports.formats import _hdf5

    path = tmp_path / "many.weights.h5"
    with h5py.File(path, "w") as f:
        for i in range(50):
            f.create_group(f"g{i}")
    monkeypatch.setattr(_hdf5, "MAX_LINKS", 20)
    with pytest.raises(WeightsError, match="more than 20 links"):
        _hdf5.opened(str(path), None, lambda f: pytest.fail("parsed"), "keras")
    monkeypatch.setattr(_hdf5, "MAX_LINKS", 100)
    assert _hdf5.opened(str(path), None, lambda f: len(f), "keras") == 50


FOREIGN_CONFIGS = {
    "an initializer from module os": lambda c: c["config"]["layers"][1]["config"].update(
        kernel_initializer={"module": "os", "class_name": "system", "config": {},
                            "registered_name": None}),
    "a custom object of another package": lambda c: c["config"]["layers"][1]["config"].update(
        kernel_regularizer={"module": None, "class_name": "Evil", "config": {},
                            "registered_name": "evil_pkg>Evil"}),
    "a nested model as a layer": lambda c: c["config"]["layers"].append(
        {"module": "keras.src.models.functional", "class_name": "Functional", "name": "inner",
         "config": {"name": "inner", "layers": []}, "inbound_nodes": []}),
    "a lambda activation": lambda c: c["config"]["layers"][1]["config"].update(
        activation={"class_name": "__lambda__", "config": {"code": "AAAA"}}),
}


@pytest.mark.parametrize("label", list(FOREIGN_CONFIGS))
def test_both_keras_readers_refuse_a_foreign_config_alike(tmp_path, label):
    """The same foreign object in a ``.keras``'s config.json and a tf.keras whole-model
    ``.h5``'s model_config gets the same message from both readers; without it both read."""
    from ports.formats import keras_config as KC
    from ports.formats import keras_legacy
    from ports.seeded import seeded_weights

    weights = seeded_weights(hostile.VARIANT)
    config = KC.builtin_config(hostile.VARIANT)
    FOREIGN_CONFIGS[label](config)
    keras_file = tmp_path / "model.keras"
    formats.write(weights, tmp_path / "honest.keras")
    hostile.rezip(tmp_path / "honest.keras", keras_file,
                  edit={"config.json": lambda _: json.dumps(config).encode()})
    h5 = tmp_path / "model.h5"
    h5.write_bytes(keras_legacy.encode(weights, model_config=config))
    messages = []
    for path, what in ((keras_file, "config.json"), (h5, "attribute model_config")):
        with pytest.raises(WeightsError, match="a SqueezeNet is made of") as e:
            formats.read(path)
        messages.append(e.value.reason.split(f"{what}: ", 1)[1])
    assert messages[0] == messages[1]
    (tmp_path / "plain.h5").write_bytes(keras_legacy.encode(
        weights, model_config=KC.builtin_config(hostile.VARIANT)))
    assert formats.read(tmp_path / "plain.h5").variant == hostile.VARIANT
    assert formats.read(tmp_path / "honest.keras").variant == hostile.VARIANT


@pytest.mark.parametrize(("name", "problem"), [
    ("a/b.npy", None), ("archive/data/0", None), ("x..y", None),
    ("../x", "'..' component"), ("a/../../b", "'..' component"), ("/etc/passwd", "absolute"),
    ("C:/x", "drive letter"), ("a\\..\\b", "backslash"), ("a\0b", "NUL")])
def test_unsafe_zip_member_names(name, problem):
    found = unsafe_member_name(name)
    assert (found is None) if problem is None else (problem in found)


def test_a_pth_member_torch_added_later_is_still_read(tmp_path):
    """``.pth``: unsafe names are refused, unknown ones are not (torch adds records)."""
    src = tmp_path / "w.pth"
    formats.write(hostile.seeded_weights(hostile.VARIANT), src)
    with zipfile.ZipFile(src) as z:
        prefix = z.infolist()[0].filename.split("/")[0]
    dest = hostile.rezip(src, tmp_path / "later.pth", add=[(f"{prefix}/.data/new_record", b"1")])
    w = formats.read(dest)
    np.testing.assert_array_equal(w.tensors["conv1.weight"],
                                  formats.read(src).tensors["conv1.weight"])
