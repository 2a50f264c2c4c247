"""The table of bad inputs and the messages they get (``docs/bad-inputs.md``).

``tools/fuzz --table docs/bad-inputs.md`` runs every case below, each reader on broken and
hostile files and ``predict`` on bad arrays, and writes every message as produced.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from pathlib import Path

import numpy as np

from ports import formats
from ports.spec import Variant

from . import hostile, hostile_folders
from .outcome import run_one
from .seeds import availability, build_seeds


def bad_predict_inputs() -> list[tuple[str, object]]:
    """``(label, x)`` for inputs every port's ``predict`` must refuse."""
    def full(shape, dtype=np.float32, fill=0.5):
        return np.full(shape, fill, dtype=dtype)

    nan = full((1, 3, 32, 32))
    nan[0, 1, 2, 3] = np.nan
    inf = full((2, 3, 32, 32))
    inf[1, 0, 0, 0] = -np.inf
    return [
        ("rank 3: one image without a batch axis, [3, 32, 32]", full((3, 32, 32))),
        ("rank 2, [32, 32]", full((32, 32))),
        ("rank 5, [1, 1, 3, 32, 32]", full((1, 1, 3, 32, 32))),
        ("a scalar", 1.0),
        ("NHWC layout, [1, 32, 32, 3]", full((1, 32, 32, 3))),
        ("1 channel (grayscale), [1, 1, 32, 32]", full((1, 1, 32, 32))),
        ("4 channels (RGBA), [1, 4, 32, 32]", full((1, 4, 32, 32))),
        ("uint8 pixels", full((1, 3, 32, 32), np.uint8, 128)),
        ("int64", full((1, 3, 32, 32), np.int64, 1)),
        ("bool", full((1, 3, 32, 32), np.bool_, True)),
        ("complex64", full((1, 3, 32, 32), np.complex64, 1)),
        ("strings", np.full((1, 3, 32, 32), "a")),
        ("ragged nested lists", [[[[0.0]]], [[[0.0, 1.0]]]]),
        ("empty batch, [0, 3, 32, 32]", full((0, 3, 32, 32))),
        ("zero-sized image, [1, 3, 0, 0]", full((1, 3, 0, 0))),
        ("16x16 image (v1.1 needs 17, v1.0 21)", full((1, 3, 16, 16))),
        ("rectangular 224x8", full((1, 3, 224, 8))),
        ("one NaN", nan),
        ("-inf in the second image", inf),
    ]


def hostile_files(name: str, directory: Path) -> list[tuple[str, Path]]:
    """``(label, path)``: broken and hostile files for format ``name``."""
    import io
    import pickle
    import zipfile

    ext = formats.FORMATS[name][1][0]
    rng = random.Random(f"bad-inputs/{name}")
    seeds = build_seeds(name, directory / "seeds", lambda _: None)
    blob = seeds[0].path.read_bytes()
    out: list[tuple[str, Path]] = []

    def put(label: str, data: bytes) -> None:
        p = directory / f"case{len(out)}{ext}"
        p.write_bytes(data)
        out.append((label, p))

    out.append(("missing file", directory / f"missing{ext}"))
    d = directory / f"a-directory{ext}"
    d.mkdir(exist_ok=True)
    out.append(("a directory", d))
    put("empty file", b"")
    put("100 random bytes", rng.randbytes(100))
    put("the first 16 bytes of a valid file, then 4 KiB of junk",
        blob[:16] + rng.randbytes(4096))
    put("a valid file truncated to half", blob[: len(blob) // 2])
    put("a valid file truncated by one byte", blob[:-1])
    put("a valid file with 1 KiB of zeros appended", blob + bytes(1024))

    class _Evil:
        def __reduce__(self):
            return (open, (str(directory / "MARKER"), "w"))

    if name == "chainer":
        buf = io.BytesIO()
        np.savez(buf, **{"conv1/W": np.array([_Evil(), 1], dtype=object)})
        put("an .npz whose array is pickled objects (would run code)", buf.getvalue())
    if name == "torch":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps(_Evil(), protocol=2))
            z.writestr("archive/version", "3\n")
        put("a .pth whose data.pkl calls open() (would run code)", buf.getvalue())
        put("a legacy raw-pickle .pth", pickle.dumps({"a": 1}, protocol=2))
    import os
    import shutil

    def folder(label: str, change) -> None:  # a copy of the seed folder, changed
        d = directory / f"case{len(out)}{ext}"
        shutil.copytree(seeds[0].root, d)
        change(d)
        out.append((label, d))

    if name == "coreml-package":  # a package is a folder: broken and hostile folders
        manifest, weights = "Manifest.json", hostile_folders.MLPACKAGE_WEIGHTS
        model = hostile_folders.MLPACKAGE_MODEL
        folder("Manifest.json nested 100000 deep",
               lambda d: (d / manifest).write_bytes(b"[" * 100000 + b"]" * 100000))
        folder("the root model's path '../../etc/passwd' (a path out of the package)",
               lambda d: (d / manifest).write_text((d / manifest).read_text().replace(
                   '"com.apple.CoreML/model.mlmodel"', '"../../etc/passwd"', 1)))
        folder("weight.bin truncated by one byte",
               lambda d: (d / weights).write_bytes((d / weights).read_bytes()[:-1]))
        folder("weight.bin's first blob record pointing past the end of the file",
               lambda d: (d / weights).write_bytes(_far_blob((d / weights).read_bytes())))
        folder("model.mlmodel truncated to half",
               lambda d: (d / model).write_bytes((d / model).read_bytes()[:len(
                   (d / model).read_bytes()) // 2]))
        folder("weight.bin that is a FIFO",
               lambda d: (os.remove(d / weights), os.mkfifo(d / weights)))
        folder("weight.bin a link to /dev/zero",
               lambda d: (os.remove(d / weights), os.symlink("/dev/zero", d / weights)))
    if name == "orbax":  # a checkpoint is a folder: broken and hostile folders
        chunk = "conv1.kernel.value/0.0.0.0"
        folder("_METADATA nested 100000 deep",
               lambda d: (d / "_METADATA").write_bytes(b"[" * 100000 + b"]" * 100000))
        folder("a tree key '../../etc' (a path out of the folder)", lambda d: (
            d / "_METADATA").write_text((d / "_METADATA").read_text().replace(
                '"key": "conv1"', '"key": "../../etc"', 1)))
        folder("a chunk truncated by one byte",
               lambda d: (d / chunk).write_bytes((d / chunk).read_bytes()[:-1]))
        folder("a chunk that is a FIFO", lambda d: (os.remove(d / chunk), os.mkfifo(d / chunk)))
        folder("a chunk that is a link to /dev/zero",
               lambda d: (os.remove(d / chunk), os.symlink("/dev/zero", d / chunk)))
        folder("an OCDBT database (Orbax's default layout) where Orbax is not installed"
               if importlib.util.find_spec("orbax") is None else "a broken OCDBT manifest",
               lambda d: (d / "manifest.ocdbt").write_bytes(b"\x0c\xdb:*"))
    for case in hostile.build_all(name, directory / "hostile"):
        out.append((case.label, case.path))
    if name in hostile_folders.BUILDERS:
        for case in hostile_folders.build_all(directory / "hostile-folders", name):
            out.append((case.label, case.path))
    if name == "safetensors":
        def st(header: bytes, data: bytes = b"") -> bytes:
            return struct.pack("<Q", len(header)) + header + data

        import struct
        put("header length 2**64-1", struct.pack("<Q", 2**64 - 1) + b"{}")
        put("header nested 100000 deep", st(b"[" * 100000 + b"]" * 100000))
        entry = b'{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
        put("a tensor named twice", st(b'{"a":' + entry + b',"a":' + entry + b"}", bytes(4)))
        put("dtype F16", st(b'{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}',
                            bytes(4)))
        put("shape [2**40] with 4 bytes of data",
            st(b'{"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4]}}',
               bytes(4)))
        put("data_offsets past the end",
            st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}}', bytes(4)))
        from ports.seeded import seeded_weights

        def encode(tensors: dict, meta: dict) -> bytes:  # a raw encoder: keeps whatever it gets
            header: dict = {"__metadata__": meta}
            chunks, offset = [], 0
            for key, t in tensors.items():
                raw = np.ascontiguousarray(t, dtype="<f4").tobytes()
                header[key] = {"dtype": "F32", "shape": list(t.shape),
                               "data_offsets": [offset, offset + len(raw)]}
                chunks.append(raw)
                offset += len(raw)
            return st(json.dumps(header).encode(), b"".join(chunks))

        w = seeded_weights(Variant("1_1", 10))
        tensors, meta = dict(w.tensors), dict(w.meta)
        put("a tensor missing (fire5.squeeze.bias)",
            encode({k: t for k, t in tensors.items() if k != "fire5.squeeze.bias"}, meta))
        put("conv1.weight with 32 filters instead of 64",
            encode(tensors | {"conv1.weight": tensors["conv1.weight"][:32]}, meta))
        nan = tensors["conv10.bias"].copy()
        nan[3] = np.nan
        put("a NaN in conv10.bias", encode(tensors | {"conv10.bias": nan}, meta))
        put("metadata num_classes='ten'", encode(tensors, meta | {"num_classes": "ten"}))
    if name == "dcz":
        import math
        import struct

        (metalen,) = struct.unpack_from("<I", blob, 8)
        layer = 12 + metalen + 2  # the first layer's entry count
        conv1 = next(formats.read(seeds[0].path).variant.convs())
        tables = layer + 4 + 4 * (1 << blob[5]) + 4 * conv1.out_channels
        over = bytearray(blob)
        over[tables:tables + (1 << blob[5])] = bytes([1] * (1 << blob[5]))
        put("conv1's code table over-subscribed (every code 1 bit long)", bytes(over))
        many = bytearray(blob)
        struct.pack_into("<I", many, layer, math.prod(conv1.weight_shape) + 1)
        put("conv1 claims one entry more than its weights", bytes(many))
    return out


def _far_blob(data: bytes) -> bytes:
    """A MIL blob-storage file (``weight.bin``) whose first blob's metadata record (at the
    64-byte-aligned offset the file header's 64 bytes end at) says its data starts at
    2**40: sentinel u32, data type u32, size u64, offset u64."""
    import struct

    out = bytearray(data)
    struct.pack_into("<Q", out, 64 + 16, 2**40)
    return bytes(out)


def bad_inputs_table(work: Path) -> str:
    """The Markdown of ``docs/bad-inputs.md``: every case run, every message as produced."""
    import contextlib
    import io

    from ports import numpy as ref
    from ports.cli import run as cli_run

    def clean(text: str, *paths: Path) -> str:
        for p in paths:
            text = text.replace(str(p), "FILE")
        text = re.sub(re.escape(str(work)) + r"[^\s:()']*", "FILE", text)
        # pickle names open() by its __module__: _io before Python 3.13, io from 3.13
        text = text.replace("global _io.open", "global io.open")
        return text.replace("|", "\\|")

    lines = [
        "# Bad inputs and the messages they get",
        "",
        "Generated by `tools/fuzz --table docs/bad-inputs.md` (it runs every case below; do not",
        "edit by hand).  Every reader raises `ports.errors.WeightsError`"
        " (`FILE (format): reason`);",
        "the command-line tools print it as one line `TOOL: error: MESSAGE` and exit with"
        " status 2",
        "(`--debug` shows the traceback instead).  `predict` raises `ValueError`.",
        "",
        "## Weight files (`ports.formats.read(FILE, format)`)",
        "",
    ]
    for name in formats.FORMATS:
        why = availability(name)
        lines += [f"### {name}", ""]
        if why is not None:
            lines += [f"Not generated: {why}.", ""]
            continue
        lines += ["| input | outcome |", "| --- | --- |"]
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        for label, path in hostile_files(name, d):
            r = run_one(str(path), name, 30.0)
            if r["status"] == "ok":
                outcome = "accepted"
            elif r["status"] == "rejected":
                outcome = f"`{clean(r['msg'], path)}`"
            else:
                outcome = f"**CRASH** {r.get('kind')}: `{clean(r['msg'], path)}`"
            if (d / "MARKER").exists():
                outcome += " **(the pickled payload RAN)**"
            lines.append(f"| {label} | {outcome} |")
        lines.append("")
    lines += ["## Model inputs (`predict(model, x)`, SqueezeNet 1_1)", "",
              "| input | message |", "| --- | --- |"]
    model = ref.SqueezeNet("1_1", num_classes=10)
    for label, x in bad_predict_inputs():
        try:
            ref.predict(model, x)
            outcome = "accepted"
        except ValueError as e:
            outcome = f"`{clean(str(e))}`"
        lines.append(f"| {label} | {outcome} |")
    lines += ["", "## Command line", "", "| situation | stderr, exit status |", "| --- | --- |"]
    bad = work / "safetensors" / "case2.safetensors"

    def read_main(args):
        formats.read(args[0])
        return 0

    for label, argv in (("a broken file", [str(bad)]),
                        ("a missing file", [str(work / "missing.safetensors")]),
                        ("an unknown file ending", [str(work / "weights.bin")])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = cli_run(read_main, argv, prog="convert")
        lines.append(f"| {label} | `{clean(err.getvalue().strip(), bad)}`, {status} |")
    lines.append("")
    return "\n".join(lines)
