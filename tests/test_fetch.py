"""tools/fetch and ports.formats.manifest against a local HTTP server on 127.0.0.1 (never the
internet), plus the well-formedness of every entry of weights/manifest.toml."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ports.formats import manifest as W
from ports.preprocess import MODES
from ports.spec import Variant

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = bytes(range(256)) * 1000 + b"squeezenet"  # 256,010 bytes: several chunks
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
SHA1 = hashlib.sha1(PAYLOAD).hexdigest()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model-1234abcd.params", PAYLOAD)
    return buf.getvalue()


ZIP = _zip_bytes()


class Handler(BaseHTTPRequestHandler):
    """``/good`` the payload; ``/truncated`` announces it all, sends half and closes;
    ``/huge`` announces 1 GB; ``/stream`` sends the payload without Content-Length;
    ``/slow`` waits 3 s; ``/zip`` a zip holding the payload; anything else 404."""

    hits: dict[str, int] = {}

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path == "/good":
            self._send(PAYLOAD)
        elif self.path == "/zip":
            self._send(ZIP)
        elif self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.close_connection = True
        elif self.path == "/stream":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the body ends when the connection closes
            self.wfile.write(PAYLOAD)
            self.close_connection = True
        elif self.path == "/slow":
            time.sleep(3)
            self._send(PAYLOAD)
        else:
            self.send_error(404, "not here")

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Proxies from the environment must not see (or intercept) the local server."""
    for k in list(os.environ):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(k)


def entry(**overrides) -> W.Entry:
    fields = dict(name="test-weights", url="https://example.invalid/never-used",
                  file="model.bin", format="torch", variant=Variant("1_1"),
                  preprocessing="torchvision", checksum=W.Checksum("sha256", SHA256),
                  size=len(PAYLOAD), accuracy={"top1": 50.0, "claimed_by": "test"})
    fields.update(overrides)
    return W.Entry(**fields)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- downloading --------------------------------------------------------------------------
def test_full_digest(server, tmp_path):
    bar = io.StringIO()
    path = W.fetch(entry(), cache=tmp_path, url=f"{server}/good", progress=bar)
    assert path == tmp_path / "model.bin"
    assert path.read_bytes() == PAYLOAD
    assert listing(tmp_path) == ["model.bin"]  # no temporary file left behind
    text = bar.getvalue()
    assert "test-weights [" in text and "100.0%" in text and text.endswith("\n")
    assert text.count("\r") >= 3  # redrawn as the download progresses


def test_prefix_digest_and_sha1(server, tmp_path):
    e = entry(checksum=W.Checksum("sha256", SHA256[:8], prefix=True), size=None)
    assert W.fetch(e, cache=tmp_path, url=f"{server}/good", progress=None).read_bytes() == PAYLOAD
    e = entry(checksum=W.Checksum("sha1", SHA1), file="other.bin")
    assert W.fetch(e, cache=tmp_path, url=f"{server}/good", progress=None).is_file()


@pytest.mark.parametrize("checksum", [
    W.Checksum("sha256", "0" * 64),
    W.Checksum("sha256", ("1" if SHA256[0] != "1" else "2") + SHA256[1:8], prefix=True),
])
def test_mismatch_is_refused_and_leaves_nothing(server, tmp_path, checksum):
    with pytest.raises(W.FetchError, match="checksum mismatch") as err:
        W.fetch(entry(checksum=checksum), cache=tmp_path, url=f"{server}/good", progress=None)
    assert SHA256 in str(err.value) and "\n" not in str(err.value)
    assert listing(tmp_path) == []


def test_truncated_response(server, tmp_path):
    with pytest.raises(W.FetchError, match="truncated"):
        W.fetch(entry(size=None), cache=tmp_path, url=f"{server}/truncated", progress=None)
    assert listing(tmp_path) == []


def test_size_bounds(server, tmp_path):
    # announced too large: refused before reading the body
    with pytest.raises(W.FetchError, match="announces 1000000000 bytes"):
        W.fetch(entry(), cache=tmp_path, url=f"{server}/huge", progress=None)
    # no announced length, body larger than the manifest size
    with pytest.raises(W.FetchError, match="exceeds"):
        W.fetch(entry(size=1000), cache=tmp_path, url=f"{server}/stream", progress=None)
    # no size in the manifest: the caller's bound applies
    with pytest.raises(W.FetchError, match="exceeds the 4096 bytes"):
        W.fetch(entry(size=None), cache=tmp_path, url=f"{server}/stream", progress=None,
                max_bytes=4096)
    # complete body of the wrong size
    with pytest.raises(W.FetchError, match="the manifest says"):
        W.fetch(entry(size=len(PAYLOAD) + 1), cache=tmp_path, url=f"{server}/good",
                progress=None)
    assert listing(tmp_path) == []


def test_unknown_length_download_and_progress(server, tmp_path):
    bar = io.StringIO()
    path = W.fetch(entry(size=None), cache=tmp_path, url=f"{server}/stream", progress=bar)
    assert path.read_bytes() == PAYLOAD
    assert "MB" in bar.getvalue() and "%" not in bar.getvalue()


def test_http_error_and_timeout(server, tmp_path):
    with pytest.raises(W.FetchError, match="HTTP 404"):
        W.fetch(entry(), cache=tmp_path, url=f"{server}/missing", progress=None)
    start = time.monotonic()
    with pytest.raises(W.FetchError, match=r"127\.0\.0\.1.*(timed out|cannot connect)"):
        W.fetch(entry(), cache=tmp_path, url=f"{server}/slow", progress=None, timeout=0.5)
    assert time.monotonic() - start < 2.5
    assert listing(tmp_path) == []


def test_cache_reuse_and_repair(server, tmp_path):
    e = entry()
    W.fetch(e, cache=tmp_path, url=f"{server}/good", progress=None)
    hits = Handler.hits.get("/good", 0)
    W.fetch(e, cache=tmp_path, url=f"{server}/good", progress=None)
    assert Handler.hits.get("/good", 0) == hits  # verified cached copy, no download
    (tmp_path / "model.bin").write_bytes(b"corrupted")
    log = io.StringIO()
    path = W.fetch(e, cache=tmp_path, url=f"{server}/good", progress=None, log=log)
    assert path.read_bytes() == PAYLOAD and "fails verification" in log.getvalue()
    assert Handler.hits["/good"] == hits + 1


def test_mirrors_after_a_failure(server, tmp_path):
    e = entry(url=f"{server}/missing", mirrors=(f"{server}/truncated", f"{server}/good"))
    log = io.StringIO()
    assert W.fetch(e, cache=tmp_path, progress=None, log=log).read_bytes() == PAYLOAD
    notes = log.getvalue().splitlines()
    assert len(notes) == 2 and "HTTP 404" in notes[0] and "truncated" in notes[1]
    assert all(n.endswith("trying the next mirror") for n in notes)
    # wrong content is final: no mirror is tried after a checksum mismatch
    bad = entry(url=f"{server}/good", mirrors=(f"{server}/zip",), file="bad.bin",
                checksum=W.Checksum("sha256", "0" * 64))
    hits = Handler.hits.get("/zip", 0)
    with pytest.raises(W.FetchError, match="checksum mismatch"):
        W.fetch(bad, cache=tmp_path, progress=None)
    assert Handler.hits.get("/zip", 0) == hits
    assert listing(tmp_path) == ["model.bin"]


def test_zip_member(server, tmp_path):
    e = entry(archive="zip", member="model-1234abcd.params", file="model-1234abcd.params",
              checksum=W.Checksum("sha1", SHA1))
    path = W.fetch(e, cache=tmp_path, url=f"{server}/zip", progress=None)
    assert path.read_bytes() == PAYLOAD
    assert listing(tmp_path) == ["model-1234abcd.params"]
    with pytest.raises(W.FetchError, match="archive lacks 'absent.params'"):
        W.fetch(entry(archive="zip", member="absent.params", file="x.params"),
                cache=tmp_path / "b", url=f"{server}/zip", progress=None)
    with pytest.raises(W.FetchError, match="not a valid zip"):
        W.fetch(entry(archive="zip", member="a", file="y.params", size=None),
                cache=tmp_path / "c", url=f"{server}/good", progress=None)
    assert listing(tmp_path / "b") == [] and listing(tmp_path / "c") == []


def test_unverified_entry_needs_consent(server, tmp_path):
    e = entry(checksum=None)
    with pytest.raises(W.FetchError, match="--allow-unverified"):
        W.fetch(e, cache=tmp_path, url=f"{server}/good", progress=None)
    assert W.fetch(e, cache=tmp_path, url=f"{server}/good", progress=None,
                   allow_unverified=True).read_bytes() == PAYLOAD


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SQUEEZENET_CACHE", str(tmp_path / "c"))
    assert W.cache_dir() == tmp_path / "c"
    assert W.cache_dir(tmp_path / "d") == tmp_path / "d"
    monkeypatch.delenv("SQUEEZENET_CACHE")
    assert W.cache_dir() == Path.home() / ".cache" / "squeezenet-ports"


# --- the command line ---------------------------------------------------------------------
MANIFEST_TEMPLATE = """
schema = 1
[[weights]]
name = "local"
url = "{url}"
file = "local.pth"
format = "torch"
size = {size}
checksum = {{ {checksum} }}
variant = {{ version = "1_1", final_conv_padding = 0, bypass = "none", num_classes = 1000 }}
preprocessing = "torchvision"
labels = "imagenet1k"
accuracy = {{ top1 = 58.178, claimed_by = "test" }}
licence = "test"
source = "test"
"""


def run_fetch(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run([sys.executable, str(ROOT / "tools" / "fetch"), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli(server, tmp_path):
    manifest = tmp_path / "m.toml"
    manifest.write_text(MANIFEST_TEMPLATE.format(url=f"{server}/good", size=len(PAYLOAD),
                                                 checksum=f'sha256_prefix = "{SHA256[:8]}"'))
    cache = tmp_path / "cache"
    r = run_fetch("local", "--manifest", str(manifest), "--cache", str(cache))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(cache / "local.pth")
    assert (cache / "local.pth").read_bytes() == PAYLOAD
    assert "local [" in r.stderr and "100.0%" in r.stderr

    r = run_fetch("--list", "--manifest", str(manifest), "--cache", str(cache))
    assert r.returncode == 0 and "local [cached]" in r.stdout
    assert f"sha256 prefix {SHA256[:8]}" in r.stdout and "1_1-p0-none" in r.stdout


def test_cli_mismatch(server, tmp_path):
    manifest = tmp_path / "m.toml"
    manifest.write_text(MANIFEST_TEMPLATE.format(url="https://example.invalid/x",
                                                 size=len(PAYLOAD),
                                                 checksum=f'sha256 = "{"ab" * 32}"'))
    cache = tmp_path / "cache"
    r = run_fetch("local", "--manifest", str(manifest), "--cache", str(cache),
                  "--url", f"{server}/good", "--quiet")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fetch: error: local: checksum mismatch")
    assert listing(cache) == [] and r.stdout == ""

    r = run_fetch("nonesuch", "--manifest", str(manifest), "--cache", str(cache))
    assert r.returncode == 2 and "unknown weights 'nonesuch'; known: local" in r.stderr


# --- checksums and the manifest -----------------------------------------------------------
def test_checksum_rules():
    assert W.Checksum("sha256", SHA256.upper()).matches(SHA256)
    assert W.Checksum("sha256", SHA256[:8], prefix=True).matches(SHA256)
    assert not W.Checksum("sha256", SHA256[:8], prefix=True).matches("0" * 64)
    assert W.Checksum.parse("sha1:" + SHA1) == W.Checksum("sha1", SHA1)
    assert W.Checksum.parse("sha256_prefix:b66bff10") == W.Checksum("sha256", "b66bff10", True)
    with pytest.raises(ValueError, match="expected 64 hex digits"):
        W.Checksum("sha256", "b66bff10")  # a prefix must be declared as one
    with pytest.raises(ValueError, match="algorithm 'crc32'"):
        W.Checksum("crc32", "00000000")
    with pytest.raises(ValueError, match="hex digits"):
        W.Checksum("sha1", "xyz", prefix=True)


def test_manifest_validation(tmp_path):
    good = MANIFEST_TEMPLATE.format(url="https://x.invalid/a", size=1,
                                    checksum=f'sha256 = "{SHA256}"')
    path = tmp_path / "m.toml"
    path.write_text(good)
    assert list(W.load_manifest(path)) == ["local"]
    for old, new, message in [
        ('version = "1_1"', 'version = "2_0"', "variant: version"),
        ("final_conv_padding = 0", "final_conv_padding = 3", "final_conv_padding"),
        ('preprocessing = "torchvision"', 'preprocessing = "keras"', "preprocessing 'keras'"),
        ('format = "torch"', 'format = "pickle"', "format 'pickle'"),
        (f'sha256 = "{SHA256}"', 'sha256 = "b66bff10"', "sha256_prefix"),
        ('file = "local.pth"', 'file = "../local.pth"', "plain file name"),
        ('url = "https://x.invalid/a"', 'url = "ftp://x.invalid/a"', "http(s) URL"),
        ("size = 1", "size = -5", "positive number of bytes"),
        ('licence = "test"', 'licence = "test"\ncolour = "red"', "unknown field(s) colour"),
    ]:
        path.write_text(good.replace(old, new))
        with pytest.raises(W.ManifestError, match=re.escape(message)) as err:
            W.load_manifest(path)
        assert str(path) in str(err.value) and "(local)" in str(err.value) \
            or "unknown field" in str(err.value)
    path.write_text(good + good.replace("schema = 1", ""))
    with pytest.raises(W.ManifestError, match="duplicate entry name 'local'"):
        W.load_manifest(path)


def test_official_manifest_is_well_formed():
    entries = W.load_manifest()
    assert {"caffe-v1.0", "caffe-v1.1", "deep-compression-v1.0", "torchvision-v1.0",
            "torchvision-v1.1", "gluon-v1.0", "gluon-v1.1", "onnx-zoo-v1.1"} <= set(entries)
    for name, e in entries.items():
        assert isinstance(e.variant, Variant) and e.variant.num_classes == 1000, name
        assert e.preprocessing in MODES and e.preprocessing != "none", name
        assert e.url.startswith("https://") and all(m.startswith("https://") for m in e.mirrors)
        assert e.accuracy.get("top1", 50) > 40 and e.accuracy.get("top5", 80) > 70, name
        assert e.licence and e.source, name
    # Architecture facts (SQUEEZENET-FACTS.md): Caffe's v1.0 conv10 has pad 1, no one else's.
    assert entries["caffe-v1.0"].variant.final_conv_padding == 1
    assert entries["deep-compression-v1.0"].variant.id == "1_0-p1-none"
    assert entries["torchvision-v1.0"].variant.id == "1_0-p0-none"
    assert entries["gluon-v1.0"].variant.id == "1_0-p0-none"
    assert all(e.variant.version == "1_1" for n, e in entries.items() if "v1.1" in n)
    # The zoo's "1.0" file is really SqueezeNet 1.1 (onnx/models#578).
    assert entries["onnx-zoo-v1.0-is-v1.1"].variant.version == "1_1"
    assert entries["onnx-zoo-v1.0-is-v1.1"].checksum is None
    # Publishers' embedded hash prefixes agree with the recorded checksums.
    for name, algorithm in [("torchvision-v1.0", "sha256"), ("torchvision-v1.1", "sha256"),
                            ("gluon-v1.0", "sha1"), ("gluon-v1.1", "sha1")]:
        e = entries[name]
        embedded = re.search(r"-([0-9a-f]{8})\.", e.file).group(1)
        assert e.checksum.algorithm == algorithm and e.checksum.digest.startswith(embedded)
        assert embedded in e.url
    assert entries["torchvision-v1.0"].checksum.prefix  # only the prefix is published
    assert entries["deep-compression-v1.0"].checksum == W.Checksum(
        "sha256", "e4ab6960ae8cd81505e1c2136921201507e930966c53deaf15862a395b3a3261")
    assert entries["deep-compression-v1.0"].size == 675763


def test_manifest_matches_shared_release():
    """The Deep Compression entry verifies against the copy in the shared folder."""
    from conformance.fixtures import shared_or_skip

    path = shared_or_skip("weights/deep-compression/compressed_SqueezeNet.net")
    e = W.load_manifest()["deep-compression-v1.0"]
    assert path.stat().st_size == e.size
    assert e.checksum.matches(W.file_digest(path, e.checksum.algorithm))
