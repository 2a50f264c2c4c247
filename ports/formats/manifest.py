"""The manifest of official checkpoints (``weights/manifest.toml``) and a verifying downloader.

Standard library only (``urllib``, ``hashlib``, ``zipfile``).

    >>> from ports.formats import manifest as weights
    >>> entry = weights.load_manifest()["deep-compression-v1.0"]
    >>> entry.variant.id, entry.preprocessing
    ('1_0-p1-none', 'caffe')
    >>> path = weights.fetch("deep-compression-v1.0")     # into the user cache, verified

Guarantees of :func:`fetch`:

* the cache only ever holds verified files: the download goes to a temporary file beside
  the destination, is checked (size, then the full digest or the publisher's hash prefix),
  and is renamed into place only if it passes; on any failure the temporary file is deleted;
* a response larger than the manifest's size (or :data:`DEFAULT_MAX_BYTES` when the size is
  not published) is refused, before reading when the server announces its length;
* a response shorter than announced (truncated) is refused;
* every network operation has a timeout.

The cache is ``$SQUEEZENET_CACHE`` or ``~/.cache/squeezenet-ports``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Union

from .._data import data_file
from ..preprocess import MODES
from ..spec import Variant
from . import FORMATS as _CODECS

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

MANIFEST = "manifest.toml"
CACHE_ENV = "SQUEEZENET_CACHE"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # no SqueezeNet checkpoint comes near this
DEFAULT_TIMEOUT = 30.0  # seconds, per connection attempt and per read
CHUNK = 64 * 1024
ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
FORMATS = tuple(_CODECS)  # the codec registry's format names
ARCHIVES = ("zip",)
LABELS = ("imagenet1k",)
USER_AGENT = "squeezenet-ports-fetch/0.1"

PathLike = Union[str, os.PathLike]


class FetchError(ValueError):
    """A download that cannot be used: network failure, bad size, checksum mismatch."""


class ManifestError(ValueError):
    """A manifest entry that is malformed (names the file, the entry and the field)."""


# --- checksums ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Checksum:
    """``algorithm`` (a :mod:`hashlib` name) and ``digest`` (lowercase hex): the full digest,
    or with ``prefix=True`` the leading hex digits a publisher embeds in a file name."""

    algorithm: str
    digest: str
    prefix: bool = False

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"checksum algorithm {self.algorithm!r}: expected one of "
                             f"{', '.join(ALGORITHMS)}")
        full = hashlib.new(self.algorithm).digest_size * 2
        digest = self.digest.lower()
        object.__setattr__(self, "digest", digest)
        if not digest or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{self.algorithm} digest {self.digest!r}: expected hex digits")
        if self.prefix and not 4 <= len(digest) < full:
            raise ValueError(f"{self.algorithm} prefix {digest!r}: expected 4 to {full - 1} "
                             f"hex digits")
        if not self.prefix and len(digest) != full:
            raise ValueError(f"{self.algorithm} digest {digest!r}: expected {full} hex digits, "
                             f"got {len(digest)} (record a partial digest as "
                             f"{self.algorithm}_prefix)")

    def matches(self, hexdigest: str) -> bool:
        hexdigest = hexdigest.lower()
        return hexdigest.startswith(self.digest) if self.prefix else hexdigest == self.digest

    def __str__(self) -> str:
        return f"{self.algorithm}{' prefix' if self.prefix else ''} {self.digest}"

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """``"sha256:HEX"`` (full) or ``"sha256_prefix:HEX"`` / ``"sha256:HEX..."`` (prefix)."""
        algorithm, sep, digest = text.partition(":")
        if not sep:
            raise ValueError(f"checksum {text!r}: expected ALGORITHM:HEX, e.g. sha256:e4ab69...")
        prefix = algorithm.endswith("_prefix") or digest.endswith("...")
        return cls(algorithm.removesuffix("_prefix"), digest.removesuffix("..."), prefix)


def file_digest(path: PathLike, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- the manifest -------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One official checkpoint, as described in ``weights/manifest.toml``."""

    name: str
    url: str
    file: str
    format: str
    variant: Variant
    preprocessing: str
    checksum: Checksum | None
    size: int | None = None
    mirrors: tuple[str, ...] = ()
    archive: str | None = None
    member: str | None = None
    input_size: int | None = None
    labels: str = "imagenet1k"
    accuracy: dict = field(default_factory=dict)
    licence: str = ""
    source: str = ""
    checksum_source: str = ""
    notes: str = ""

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


_KNOWN_FIELDS = {"name", "url", "mirrors", "file", "format", "archive", "member", "size",
                 "checksum", "checksum_source", "variant", "preprocessing", "input_size",
                 "labels", "accuracy", "licence", "source", "notes"}
_REQUIRED_FIELDS = ("name", "url", "file", "format", "checksum", "variant", "preprocessing",
                    "labels", "accuracy", "licence", "source")
_VARIANT_FIELDS = ("version", "final_conv_padding", "bypass", "num_classes")


def _check_url(url: object, where: str) -> str:
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ManifestError(f"{where}: expected an http(s) URL, got {url!r}")
    return url


def _entry(raw: dict, where: str) -> Entry:
    unknown = sorted(set(raw) - _KNOWN_FIELDS)
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [k for k in _REQUIRED_FIELDS if k not in raw]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
    name = raw["name"]
    if not isinstance(name, str) or not name or any(c.isspace() or c == "/" for c in name):
        raise ManifestError(f"{where}: name {name!r} must be a non-empty word without '/'")
    where = f"{where} ({name})"
    file = raw["file"]
    if not isinstance(file, str) or not file or Path(file).name != file or file.startswith("."):
        raise ManifestError(f"{where}: file {file!r} must be a plain file name")
    if raw["format"] not in FORMATS:
        raise ManifestError(f"{where}: format {raw['format']!r}, expected one of "
                            f"{', '.join(FORMATS)}")
    if raw["preprocessing"] not in MODES or raw["preprocessing"] == "none":
        raise ManifestError(f"{where}: preprocessing {raw['preprocessing']!r}, expected one of "
                            f"{', '.join(m for m in MODES if m != 'none')}")
    if raw["labels"] not in LABELS:
        raise ManifestError(f"{where}: labels {raw['labels']!r}, expected one of {LABELS}")
    v = raw["variant"]
    if not isinstance(v, dict) or sorted(v) != sorted(_VARIANT_FIELDS):
        raise ManifestError(f"{where}: variant must have exactly the fields "
                            f"{', '.join(_VARIANT_FIELDS)}")
    try:
        variant = Variant(v["version"], v["num_classes"], v["final_conv_padding"], v["bypass"])
    except ValueError as e:
        raise ManifestError(f"{where}: variant: {e}") from None
    if variant.version != v["version"]:
        raise ManifestError(f"{where}: variant version {v['version']!r}, write it as "
                            f"{variant.version!r}")
    c = raw["checksum"]
    if not isinstance(c, dict) or len(c) > 1:
        raise ManifestError(f"{where}: checksum must be {{}} or one ALGORITHM = \"HEX\" pair")
    checksum = None
    if c:
        (key, digest), = c.items()
        try:
            checksum = Checksum(key.removesuffix("_prefix"), str(digest), key.endswith("_prefix"))
        except ValueError as e:
            raise ManifestError(f"{where}: checksum: {e}") from None
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ManifestError(f"{where}: size {size!r} must be a positive number of bytes")
    mirrors = raw.get("mirrors", [])
    if not isinstance(mirrors, list):
        raise ManifestError(f"{where}: mirrors must be a list of URLs")
    archive, member = raw.get("archive"), raw.get("member")
    if (archive is None) != (member is None):
        raise ManifestError(f"{where}: archive and member go together")
    if archive is not None and archive not in ARCHIVES:
        raise ManifestError(f"{where}: archive {archive!r}, expected one of {ARCHIVES}")
    accuracy = raw["accuracy"]
    if not isinstance(accuracy, dict) or not ({"top1", "top5"} & set(accuracy)) \
            or "claimed_by" not in accuracy:
        raise ManifestError(f"{where}: accuracy needs top1 and/or top5 and claimed_by")
    for k in ("top1", "top5"):
        if k in accuracy and not (isinstance(accuracy[k], (int, float))
                                  and 0 < accuracy[k] <= 100):
            raise ManifestError(f"{where}: accuracy {k} {accuracy[k]!r} must be a percentage")
    input_size = raw.get("input_size")
    if input_size is not None:
        try:
            variant.feature_sizes(int(input_size))
        except (ValueError, TypeError) as e:
            raise ManifestError(f"{where}: input_size {input_size!r}: {e}") from None
    return Entry(
        name=name, url=_check_url(raw["url"], f"{where}: url"), file=file,
        format=raw["format"], variant=variant, preprocessing=raw["preprocessing"],
        checksum=checksum, size=size,
        mirrors=tuple(_check_url(m, f"{where}: mirrors") for m in mirrors),
        archive=archive, member=member, input_size=input_size, labels=raw["labels"],
        accuracy=dict(accuracy), licence=str(raw["licence"]), source=str(raw["source"]),
        checksum_source=str(raw.get("checksum_source", "")), notes=str(raw.get("notes", "")),
    )


def parse_manifest(data: dict, path: PathLike = MANIFEST) -> dict[str, Entry]:
    """Validate a parsed manifest; returns name -> :class:`Entry` in file order."""
    if data.get("schema") != 1:
        raise ManifestError(f"{path}: expected schema = 1, got {data.get('schema')!r}")
    items = data.get("weights")
    if not isinstance(items, list) or not items:
        raise ManifestError(f"{path}: expected one or more [[weights]] entries")
    entries: dict[str, Entry] = {}
    for i, raw in enumerate(items):
        entry = _entry(raw, f"{path}: [[weights]] #{i + 1}")
        if entry.name in entries:
            raise ManifestError(f"{path}: duplicate entry name {entry.name!r}")
        if any(e.file == entry.file for e in entries.values()):
            raise ManifestError(f"{path}: entry {entry.name!r} reuses file name {entry.file!r}")
        entries[entry.name] = entry
    return entries


def load_manifest(path: PathLike | None = None) -> dict[str, Entry]:
    """The manifest (``weights/manifest.toml`` unless ``path`` is given), validated."""
    path = Path(path) if path is not None else data_file(MANIFEST)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{path}: not valid TOML: {e}") from None
    return parse_manifest(data, path)


def cache_dir(override: PathLike | None = None) -> Path:
    """``override``, else ``$SQUEEZENET_CACHE``, else ``~/.cache/squeezenet-ports``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "squeezenet-ports"


# --- downloading --------------------------------------------------------------------------
class Progress:
    """A one-line progress bar redrawn with ``\\r`` on ``stream`` (stderr by default)."""

    def __init__(self, label: str, total: int | None, stream: IO[str] | None = None,
                 width: int = 30) -> None:
        self.label, self.total, self.width = label, total, width
        self.stream = stream if stream is not None else sys.stderr
        self._last = -1.0

    def update(self, done: int, final: bool = False) -> None:
        if self.total:
            fraction = min(done / self.total, 1.0)
            if not final and fraction - self._last < 0.01:
                return
            self._last = fraction
            filled = int(fraction * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            text = (f"\r{self.label} [{bar}] {fraction * 100:5.1f}% "
                    f"{done / 1e6:.2f}/{self.total / 1e6:.2f} MB")
        else:
            if not final and done - self._last < 256 * 1024:
                return
            self._last = done
            text = f"\r{self.label} {done / 1e6:.2f} MB"
        self.stream.write(text + ("\n" if final else ""))
        self.stream.flush()


def _download_to(url: str, out: IO[bytes], *, limit: int, timeout: float,
                 progress: IO[str] | None, label: str) -> int:
    """Stream ``url`` into ``out``; returns the byte count.  Refuses more than ``limit``
    bytes and a body shorter than the announced Content-Length."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) only)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"{url}: cannot connect: {reason}") from None
    with response:
        announced = response.headers.get("Content-Length")
        expected = int(announced) if announced and announced.isdigit() else None
        if expected is not None and expected > limit:
            raise FetchError(f"{url}: server announces {expected} bytes, more than the "
                             f"{limit} allowed")
        bar = Progress(label, expected, progress) if progress is not None else None
        done = 0
        try:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                done += len(block)
                if done > limit:
                    raise FetchError(f"{url}: response exceeds the {limit} bytes allowed")
                out.write(block)
                if bar:
                    bar.update(done)
        except http.client.IncompleteRead as e:
            done += len(e.partial)
            raise FetchError(f"{url}: truncated response: {done} of {expected} bytes") from None
        except (TimeoutError, OSError) as e:
            raise FetchError(f"{url}: download failed after {done} bytes: {e}") from None
        if bar:
            bar.update(done, final=True)
    if expected is not None and done != expected:
        raise FetchError(f"{url}: truncated response: {done} of {expected} bytes")
    return done


def _verify(path: Path, entry_name: str, checksum: Checksum | None, size: int | None,
            what: str) -> str:
    """Check size and checksum of ``path``; returns its sha256 (for the record)."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise FetchError(f"{entry_name}: {what} is {actual} bytes, the manifest says {size}")
    if checksum is not None:
        digest = file_digest(path, checksum.algorithm)
        if not checksum.matches(digest):
            raise FetchError(f"{entry_name}: checksum mismatch for {what}: expected "
                             f"{checksum}, got {checksum.algorithm} {digest}")
    return file_digest(path, "sha256")


def _extract(archive: Path, member: str, dest: Path, limit: int, entry_name: str) -> None:
    """Copy ``member`` of zip ``archive`` to ``dest``, refusing more than ``limit`` bytes."""
    try:
        with zipfile.ZipFile(archive) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                raise FetchError(f"{entry_name}: archive lacks {member!r} (has: "
                                 f"{', '.join(z.namelist()[:5])})") from None
            if info.file_size > limit:
                raise FetchError(f"{entry_name}: {member} is {info.file_size} bytes, more than "
                                 f"the {limit} allowed")
            with z.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    except zipfile.BadZipFile as e:
        raise FetchError(f"{entry_name}: download is not a valid zip archive: {e}") from None


def fetch(entry: Union[str, Entry], *, cache: PathLike | None = None,
          url: str | None = None, manifest: PathLike | None = None,
          progress: IO[str] | bool | None = True, timeout: float = DEFAULT_TIMEOUT,
          max_bytes: int = DEFAULT_MAX_BYTES, allow_unverified: bool = False,
          force: bool = False, log: IO[str] | None = None) -> Path:
    """Download manifest entry ``entry`` (a name or :class:`Entry`) into the cache and return
    the verified file's path.  A verified file already in the cache is reused (``force``
    downloads again).  ``url`` replaces the manifest's URL and mirrors (for tests and private
    mirrors); the checksum still applies.  ``progress``: stream for the progress bar, ``True``
    for the current ``sys.stderr``, or ``None``/``False`` for none.  ``log``: stream for
    one-line notes (e.g. which URL failed), or ``None``."""
    if progress is True:
        progress = sys.stderr
    elif progress is False:
        progress = None
    if isinstance(entry, str):
        entries = load_manifest(manifest)
        if entry not in entries:
            raise FetchError(f"unknown weights {entry!r}; known: {', '.join(entries)}")
        entry = entries[entry]
    if entry.checksum is None and not allow_unverified:
        raise FetchError(f"{entry.name}: the manifest has no checksum for it; pass "
                         f"--allow-unverified to download it anyway")
    urls = (_check_url(url, "--url"),) if url is not None else entry.urls
    folder = cache_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / entry.file
    if dest.is_file() and not force:
        try:
            _verify(dest, entry.name, entry.checksum, entry.size, f"cached {dest}")
            return dest
        except FetchError:
            if log:
                print(f"{entry.name}: cached {dest} fails verification; downloading again",
                      file=log)
    # Download limit: the exact size when known (for archives, the default bound).
    limit = entry.size if (entry.size and entry.archive is None) else max_bytes
    errors = []
    for source in urls:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{entry.file}.", suffix=".part")
        tmp = Path(tmp_name)
        extracted: Path | None = None
        try:
            with os.fdopen(fd, "wb") as out:
                _download_to(source, out, limit=limit, timeout=timeout, progress=progress,
                             label=entry.name)
                out.flush()
                os.fsync(out.fileno())
            final = tmp
            if entry.archive == "zip":
                fd2, name2 = tempfile.mkstemp(dir=folder, prefix=f".{entry.file}.",
                                              suffix=".part")
                os.close(fd2)
                extracted = Path(name2)
                _extract(tmp, entry.member, extracted, entry.size or max_bytes, entry.name)
                final = extracted
            _verify(final, entry.name, entry.checksum, entry.size, f"download from {source}")
            os.chmod(final, 0o644)
            os.replace(final, dest)
            return dest
        except FetchError as e:
            errors.append(e)
            if "checksum mismatch" in str(e) or "bytes, the manifest says" in str(e):
                raise  # wrong content is not a transient failure: do not try other mirrors
            if log and source != urls[-1]:
                print(f"{e}; trying the next mirror", file=log)
        finally:
            for p in (tmp, extracted):
                if p is not None:
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        pass
    raise errors[-1]


def describe(entry: Entry) -> str:
    """Several lines describing ``entry`` for ``tools/fetch --list``."""
    acc = entry.accuracy
    claims = " / ".join(f"{k} {acc[k]}" for k in ("top1", "top5") if k in acc)
    size = f"{entry.size:,} bytes" if entry.size else "size unpublished"
    check = str(entry.checksum) if entry.checksum else "NO CHECKSUM (needs --allow-unverified)"
    lines = [
        f"{entry.name}",
        f"  {entry.format} file {entry.file}, {size}"
        + (f" (in a {entry.archive} archive)" if entry.archive else ""),
        f"  variant {entry.variant.id}, preprocessing {entry.preprocessing}"
        + (f" at {entry.input_size}" if entry.input_size else "") + f", labels {entry.labels}",
        f"  claimed {claims} ({acc.get('claimed_by', '?')})",
        f"  checksum {check}",
        f"  {entry.url}",
        f"  licence: {entry.licence}",
    ]
    if entry.notes:
        lines.append(f"  note: {entry.notes}")
    return "\n".join(lines)
