"""``tools/convert NAME DST``: a manifest entry as the source, fetched the way ``tools/fetch``
fetches it (verified, cached), against a local HTTP server on 127.0.0.1 (never the
internet).  The manifest is the official ``weights/manifest.toml`` with the ``caffe-v1.1``
entry's address (and size and checksum) pointed at a Caffe file this test writes, since the
real release is not on this machine; a second test keeps the official checksum and shows
the mismatch refused.  Also ``--from``/``--to`` by format name for files with other endings."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from ports import formats
from ports.cli import run
from ports.cli.convert import main
from ports.formats import manifest as W
from ports.seeded import seeded_weights
from ports.spec import Variant

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "convert"
ENTRY = "caffe-v1.1"
CACHED = "squeezenet_v1.1.caffemodel"  # the entry's file name in the cache
OUTPUTS = [".safetensors", ".weights.h5", ".keras", ".msgpack"]  # e.g. convert caffe-v1.1 x.keras


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> bytes:
    """A SqueezeNet 1.1 .caffemodel (seeded weights), standing in for the published one."""
    folder = tmp_path_factory.mktemp("release")
    formats.write(seeded_weights(Variant("1_1")), folder / "w.caffemodel")
    return (folder / "w.caffemodel").read_bytes()


class Handler(BaseHTTPRequestHandler):
    """``/v1.1.caffemodel``: the release; anything else 404.  Counts requests by path."""

    body = b""
    hits: dict[str, int] = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path != "/v1.1.caffemodel":
            self.send_error(404, "not here")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(Handler.body)))
        self.end_headers()
        self.wfile.write(Handler.body)


@pytest.fixture(scope="module")
def server(release):
    Handler.body = release
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1.1.caffemodel"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Proxies from the environment must not see (or intercept) the local server."""
    for k in list(os.environ):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(k)


def hits() -> int:
    return Handler.hits.get("/v1.1.caffemodel", 0)


def manifest(folder: Path, url: str, body: bytes | None, official_checksum=False) -> Path:
    """The official manifest, entry caffe-v1.1 downloaded from ``url`` (no mirrors) and
    verified against ``body``'s size and sha256 (or, ``official_checksum``, the published
    sha256 with no size)."""
    text = (ROOT / "weights" / "manifest.toml").read_text(encoding="utf-8")
    blocks = text.split("[[weights]]")
    (i,) = [i for i, b in enumerate(blocks) if re.search(rf'^name = "{ENTRY}"$', b, re.M)]
    b = re.sub(r'^url = ".*"$', f'url = "{url}"', blocks[i], flags=re.M)
    b = re.sub(r"^mirrors = \[.*?\]\n", "", b, flags=re.M | re.S)
    if official_checksum:
        b = re.sub(r"^size = \d+\n", "", b, flags=re.M)
    else:
        b = re.sub(r"^size = \d+$", f"size = {len(body)}", b, flags=re.M)
        sha = hashlib.sha256(body).hexdigest()
        b = re.sub(r"^checksum = .*$", f'checksum = {{ sha256 = "{sha}" }}', b, flags=re.M)
    blocks[i] = b
    path = folder / "manifest.toml"
    path.write_text("[[weights]]".join(blocks), encoding="utf-8")
    assert W.load_manifest(path)[ENTRY].url == url
    return path


def convert(*args, capsys) -> tuple[int, str, str]:
    code = run(main, [str(a) for a in args], prog="convert")
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def same_as_seeded(path: Path, fmt: str | None = None) -> None:
    w, ref = formats.read(path, fmt), seeded_weights(Variant("1_1"))
    assert w.variant == ref.variant
    assert all(np.array_equal(w.tensors[k], ref.tensors[k]) for k in ref.tensors)


def test_tool_fetches_verifies_caches_and_converts_a_name(tmp_path, server, release):
    """``tools/convert caffe-v1.1 out.safetensors`` as a user runs it."""
    m, cache = manifest(tmp_path, server, release), tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    before = hits()
    out = tmp_path / "out.safetensors"
    proc = subprocess.run([sys.executable, str(TOOL), ENTRY, str(out), "--manifest", str(m),
                           "--cache", str(cache)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sha = hashlib.sha256(release).hexdigest()
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"entry {ENTRY}: {cache / CACHED} (caffe, sha256 {sha}, downloaded "
                        f"and verified)"), proc.stdout
    assert lines[1].startswith(f"read  {cache / CACHED} (caffe): SqueezeNet 1_1-p0-none")
    assert lines[2].startswith(f"wrote {out} (safetensors")
    assert f"{ENTRY} [" in proc.stderr and "100.0%" in proc.stderr  # the progress bar
    assert hits() == before + 1
    assert sorted(p.name for p in cache.iterdir()) == [CACHED]  # nothing else, no .part
    assert (cache / CACHED).read_bytes() == release
    same_as_seeded(out)


@pytest.mark.parametrize("ending", OUTPUTS)
def test_second_conversion_uses_the_verified_cache(tmp_path, server, release, capsys, ending):
    m, cache = manifest(tmp_path, server, release), tmp_path / "cache"
    code, out, _ = convert(ENTRY, tmp_path / f"a{ending}", "--manifest", m, "--cache", cache,
                           "--quiet", capsys=capsys)
    assert code == 0 and "downloaded and verified" in out
    before = hits()
    code, out, err = convert(ENTRY, tmp_path / f"b{ending}", "--manifest", m, "--cache", cache,
                             "--quiet", capsys=capsys)
    assert code == 0, err
    assert out.splitlines()[0].endswith("verified copy already in the cache)")
    assert hits() == before and err == ""
    same_as_seeded(tmp_path / f"b{ending}")
    # a damaged cached copy is not used: it is fetched again, verified
    (cache / CACHED).write_bytes(b"damaged")
    code, out, err = convert(ENTRY, tmp_path / f"c{ending}", "--manifest", m, "--cache", cache,
                             "--quiet", capsys=capsys)
    assert code == 0 and "downloaded and verified" in out and "fails verification" in err
    assert hits() == before + 1
    same_as_seeded(tmp_path / f"c{ending}")


def test_checksum_mismatch_is_refused_and_nothing_written(tmp_path, server, release):
    """The official entry's sha256 against other bytes: one line, exit 2, nothing cached or
    written."""
    m, cache = manifest(tmp_path, server, None, official_checksum=True), tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out = tmp_path / "out.safetensors"
    proc = subprocess.run([sys.executable, str(TOOL), ENTRY, str(out), "--manifest", str(m),
                           "--cache", str(cache), "--quiet"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"convert: error: {ENTRY}: checksum mismatch for download from {server}: expected "
        f"sha256 72b912ace512e8621f8ff168a7d72af55910d3c7c9445af8dfbff4c2ee960142, got sha256 "
        f"{hashlib.sha256(release).hexdigest()}"), proc.stderr
    assert proc.stdout == "" and not out.exists()
    assert sorted(p.name for p in cache.iterdir()) == []


def test_existing_output_is_refused_before_any_download(tmp_path, server, release, capsys):
    m, cache = manifest(tmp_path, server, release), tmp_path / "cache"
    (tmp_path / "o.safetensors").write_bytes(b"keep")
    before = hits()
    code, _, err = convert(ENTRY, tmp_path / "o.safetensors", "--manifest", m, "--cache", cache,
                           capsys=capsys)
    refused(code, err, "o.safetensors exists; use --force")
    assert hits() == before and not cache.exists()
    assert (tmp_path / "o.safetensors").read_bytes() == b"keep"


def test_unknown_names_and_unverified_entries(tmp_path, capsys):
    """Neither touches the network: a name that is no entry, and an entry the manifest has
    no checksum for (convert reads only verified downloads; tools/fetch can opt in)."""
    cache = tmp_path / "cache"
    code, _, err = convert("caffe-v9.9", tmp_path / "o.safetensors", "--cache", cache,
                           capsys=capsys)
    refused(code, err, "caffe-v9.9: no such file, nor an entry of the manifest", ENTRY)
    unverified = [n for n, e in W.load_manifest().items() if e.checksum is None]
    assert unverified
    code, _, err = convert(unverified[0], tmp_path / "o.safetensors", "--cache", cache,
                           capsys=capsys)
    refused(code, err, "no checksum", "only verified downloads",
            f"tools/fetch {unverified[0]} --allow-unverified")
    assert not cache.exists() and not (tmp_path / "o.safetensors").exists()
    # a missing file with a known ending is still just a missing file
    code, _, err = convert(tmp_path / "nope.caffemodel", tmp_path / "o.safetensors",
                           capsys=capsys)
    refused(code, err, "nope.caffemodel", "no such file")


def test_a_file_of_that_name_wins(tmp_path, capsys, monkeypatch, release):
    """A file called like an entry is the file (nothing is fetched)."""
    monkeypatch.chdir(tmp_path)
    Path(ENTRY).write_bytes(release)
    code, out, err = convert(ENTRY, "o.safetensors", "--from", "caffe", "--manifest",
                             tmp_path / "absent.toml", capsys=capsys)
    assert code == 0, err
    assert out.startswith(f"read  {ENTRY} (caffe)")
    same_as_seeded(tmp_path / "o.safetensors")


def test_formats_by_name_for_other_endings(tmp_path, server, release, capsys):
    """``--from``/``--to`` name formats where the endings say nothing; with a name as SRC,
    ``--from`` must agree with the entry."""
    src = tmp_path / "weights.bin"
    src.write_bytes(release)
    code, _, err = convert(src, tmp_path / "out.dat", capsys=capsys)
    refused(code, err, "cannot tell the format")
    code, out, err = convert(src, tmp_path / "out.dat", "--from", "caffe", "--to", "safetensors",
                             capsys=capsys)
    assert code == 0, err
    assert "wrote " + str(tmp_path / "out.dat") + " (safetensors" in out
    same_as_seeded(tmp_path / "out.dat", "safetensors")
    m, cache = manifest(tmp_path, server, release), tmp_path / "cache"
    code, out, err = convert(ENTRY, tmp_path / "named.dat", "--to", "flax", "--from", "caffe",
                             "--manifest", m, "--cache", cache, "--quiet", capsys=capsys)
    assert code == 0, err
    same_as_seeded(tmp_path / "named.dat", "flax")
    code, _, err = convert(ENTRY, tmp_path / "x.safetensors", "--from", "torch", "--manifest", m,
                           "--cache", cache, capsys=capsys)
    refused(code, err, "--from torch", f"{ENTRY} is a caffe file")
