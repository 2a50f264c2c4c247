"""File input and output: atomic output, and bounded reading of zip members.

Output: write to a temporary file beside the destination, then rename.

A reader never sees a half-written destination: it sees the previous file or the new one.

Temporary files are named ``.NAME.PID.RANDOM.part`` (hidden, and ending in ``.part`` so no
reader takes one for a weights file).  A writer killed outright (SIGKILL, power loss) cannot
remove its own, so each :func:`atomic_write` to ``NAME`` first removes *stale* temporaries
of ``NAME``: those whose writer process no longer exists on this machine and that have not
been modified for :data:`STALE_AFTER` seconds.  A live writer's file is never touched.

Input: a file another file names (a checkpoint's member, an export's params) is read by
:mod:`ports.formats._folder`, never through a link.  Zip archives (``.pth``, ``.npz``,
``.keras``) go through two guards: :func:`zip_members` lists the members by name, refusing
a name that could point out of the archive (absolute, a ``..`` component, a drive, a
backslash path) or that appears twice; :func:`read_zip_member` checks every size a member
declares against the archive's size and what deflate can produce before anything is read,
and stops the read at the declared size.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import struct
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Union

from ..errors import WeightsError

PathLike = Union[str, os.PathLike]

STALE_AFTER = 60.0  # seconds without modification before a dead writer's temporary goes

# Deflate expands at most ~1032:1; a member declaring more than this over its compressed size
# (plus a little slack for tiny members) is a lie -- or a zip bomb.
DEFLATE_MAX_RATIO = 1032
DEFLATE_SLACK = 1024
# Anything zipfile may raise on a malformed archive (it has no single error type).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError,
              IndexError, NotImplementedError, RuntimeError, struct.error, OverflowError,
              TypeError)
# Flag bits of members zipfile cannot (or will not) read without a password.
_FLAG_ENCRYPTED, _FLAG_PATCHED, _FLAG_STRONG = 0x1, 0x20, 0x40


def temp_prefix(path: PathLike) -> str:
    """Leading part of every temporary file name for destination ``path``."""
    return f".{Path(path).name}."


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def stale_temps(path: PathLike, *, older_than: float = STALE_AFTER) -> list[Path]:
    """Temporaries of ``path`` left by writers that are gone (see the module docstring)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    prefix = temp_prefix(path)
    found = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    now = time.time()
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".part")):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit():
            continue
        candidate = directory / name
        try:
            st = candidate.lstat()
        except OSError:
            continue
        if (stat.S_ISREG(st.st_mode) and now - st.st_mtime >= older_than
                and not _pid_alive(int(pid_text))):
            found.append(candidate)
    return found


def remove_stale_temps(path: PathLike, *, older_than: float = STALE_AFTER) -> list[Path]:
    """Remove :func:`stale_temps` of ``path``; returns those removed."""
    removed = []
    for p in stale_temps(path, older_than=older_than):
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, content: Union[bytes, Callable[[BinaryIO], None]], *,
                 overwrite: bool = True) -> Path:
    """Write ``content`` (bytes, or a function writing to a binary file) to ``path``.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    temporary is renamed onto ``path``: killed at any moment, the writer leaves either the
    previous ``path`` (or none) or the complete new one; racing writers leave exactly one
    writer's bytes.  A replaced file keeps its permission bits; a new one gets 0644.

    With ``overwrite=False`` an existing ``path`` is kept and :class:`FileExistsError`
    raised (before anything is written, and again at publication: the check and the
    publication are one atomic ``link``, so two writers racing never both win).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"directory {directory} does not exist",
                                str(path))
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "already exists; not overwritten", str(path))
    remove_stale_temps(path)
    mode = 0o644
    if overwrite:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            pass
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{temp_prefix(path)}{os.getpid()}.",
                               suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # FileExistsError if path appeared meanwhile
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, "already exists; not overwritten",
                                      str(path)) from None
            except OSError as e:  # no hard links here (some network/FUSE filesystems)
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                                   errno.EMLINK, errno.ENOSYS):
                    raise
                if os.path.lexists(path):  # best effort: a narrow race remains here
                    raise FileExistsError(errno.EEXIST, "already exists; not overwritten",
                                          str(path)) from None
                os.rename(tmp, path)
            else:
                os.unlink(tmp)
        _fsync_dir(directory)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path



def read_limited(path: PathLike, limit: int) -> bytes:
    """The bytes of the file ``path``, refused (before any is read) above ``limit`` bytes;
    exactly the file's size is read, nothing reserved beyond it."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise WeightsError(f"file is {size} bytes, more than the {limit} allowed")
        return f.read(size)


# --- folders: written whole beside the target, then renamed onto it ------------------------
def _remove_stale_folders(path: Path) -> None:
    """Temporary directories of ``path`` left by writers that are gone (as
    :func:`remove_stale_temps` does for files)."""
    parent, prefix, now = path.parent, temp_prefix(path), time.time()
    for name in os.listdir(parent):
        pid = name[len(prefix):].split(".", 1)[0]
        if not (name.startswith(prefix) and name.endswith(".part") and pid.isdigit()):
            continue
        candidate = parent / name
        try:
            st = candidate.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and now - st.st_mtime >= STALE_AFTER \
                and not _pid_alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    """Every ``relative path -> bytes`` of ``files`` under ``root``, each file and folder
    synced; folders ``rwxr-xr-x``."""
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    folders = {(root / rel).parent for rel in files}
    for folder in folders | {p for f in folders for p in f.parents if root in p.parents}:
        os.chmod(folder, 0o755)
    for folder in folders:
        _fsync_dir(folder)
    os.chmod(root, 0o755)


def atomic_write_folder(path: PathLike, files: Callable[[], dict[str, bytes]], *,
                        replaceable: Callable[[Path], bool], noun: str,
                        overwrite: bool = True) -> Path:
    """Write the folder ``path`` holding ``files()`` (relative path -> bytes) atomically: it
    is made whole in a temporary directory beside ``path`` (``.NAME.PID.RANDOM.part``) and
    renamed onto it, so a reader sees the old folder, none, or the new one.  An existing
    ``path`` is replaced (with ``overwrite``) only where ``replaceable(path)`` says it is
    what this writer writes (``noun``: what that is, for the refusal), or an empty folder;
    the contents are computed (``files()``) only once that is settled."""
    path = Path(os.fspath(path).rstrip("/" + os.sep) or ".")
    parent = path.parent

    def replaceable_now() -> bool:
        if path.is_symlink() or not path.is_dir():
            return False
        return not os.listdir(path) or replaceable(path)

    if not parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"directory {parent} does not exist", str(path))
    exists = os.path.lexists(path)
    if exists and not overwrite:
        raise FileExistsError(errno.EEXIST, "already exists; not overwritten", str(path))
    if exists and not replaceable_now():
        raise FileExistsError(errno.EEXIST, f"exists and is not {noun} (nor an empty "
                              "directory); not replaced", str(path))
    content = files()
    _remove_stale_folders(path)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f"{temp_prefix(path)}{os.getpid()}.",
                                suffix=".part"))
    old = None
    try:
        _write_tree(tmp, content)
        if os.path.lexists(path):  # again: it may have appeared meanwhile
            if not overwrite or not replaceable_now():
                raise FileExistsError(errno.EEXIST, "appeared meanwhile; not overwritten",
                                      str(path))
            # Aside, then in: a reader sees the old folder, none, or the new one.
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f"{temp_prefix(path)}"
                                        f"{os.getpid()}.", suffix=".part"))
            os.rename(path, old / "old")
        try:
            os.rename(tmp, path)  # onto nothing (or an empty directory)
        except OSError as e:
            if old is not None:
                os.rename(old / "old", path)
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise FileExistsError(errno.EEXIST, "appeared meanwhile; not overwritten",
                                      str(path)) from None
            raise
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path


# --- reading zip members ----------------------------------------------------------------------
def zip_error(e: BaseException) -> str:
    """A zipfile exception as one phrase."""
    text = str(e) or "unexpected end of data"
    return text if isinstance(e, zipfile.BadZipFile) else f"{type(e).__name__}: {text}"


def unsafe_member_name(name: str) -> str | None:
    """Why zip member ``name`` could point out of the archive when extracted (a phrase), or
    ``None``: an absolute path, a drive letter, a ``..`` component, a backslash (a Windows
    path separator) or a NUL byte.  Readers here never extract, but an archive holding such a
    name was made to attack a tool that does; it is refused, not passed over."""
    if "\0" in name:
        return "holds a NUL byte"
    if "\\" in name:
        return "holds a backslash (a Windows path)"
    if name.startswith("/"):
        return "is an absolute path"
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        return "starts with a drive letter"
    if ".." in name.split("/"):
        return "has a '..' component"
    return None


def zip_members(infos: list[zipfile.ZipInfo], *, what: str = "member",
                limit: int | None = None) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by name, each name checked by :func:`unsafe_member_name` and
    seen once (zipfile keeps both of two members of one name; which one a tool reads
    differs between tools); at most ``limit`` of them.  Any problem is a
    :class:`WeightsError` naming the member."""
    if limit is not None and len(infos) > limit:
        raise WeightsError(f"archive has {len(infos)} {what}s, more than {limit}")
    out: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        problem = unsafe_member_name(name)
        if problem is not None:
            raise WeightsError(f"archive {what} {name[:200]!r} {problem}: refused (a name that "
                               "points out of the archive)")
        if name in out:
            raise WeightsError(f"archive {what} {name[:200]!r} appears twice")
        out[name] = info
    return out


def zip_member_problem(info: zipfile.ZipInfo, size: int) -> str | None:
    """What is wrong with the sizes and flags ``info`` declares, in an archive of ``size``
    bytes (a phrase to follow the member's name), or ``None``."""
    if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG):
        return f"is encrypted (flag bits 0x{info.flag_bits:04X})"
    if info.flag_bits & _FLAG_PATCHED:
        return "holds compressed patched data (flag bit 5)"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"uses zip compression method {info.compress_type} (expected stored or deflated)"
    if not 0 <= info.header_offset < size or \
            not 0 <= info.compress_size <= size - info.header_offset:
        return (f"claims {info.compress_size} compressed bytes at offset {info.header_offset}, "
                f"beyond the {size}-byte file")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        return (f"is stored uncompressed but declares {info.file_size} bytes in "
                f"{info.compress_size}")
    if info.file_size > info.compress_size * DEFLATE_MAX_RATIO + DEFLATE_SLACK:
        return (f"claims {info.file_size} bytes from {info.compress_size} compressed, more "
                "than deflate can expand")
    return None


def check_zip_member(info: zipfile.ZipInfo, size: int, what: str) -> None:
    """Raise ``WeightsError(f"{what} ...")`` when :func:`zip_member_problem` finds
    something."""
    problem = zip_member_problem(info, size)
    if problem is not None:
        raise WeightsError(f"{what} {problem}")


def read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, what: str,
                    *, limit: int | None = None) -> bytes:
    """The bytes of member ``info`` of ``archive`` (``size`` bytes in all), checked by
    :func:`check_zip_member` and against ``limit`` before anything is read or decompressed;
    any problem is ``WeightsError(f"{what} ...")``."""
    check_zip_member(info, size, what)
    if limit is not None and info.file_size > limit:
        raise WeightsError(f"{what} declares {info.file_size} bytes, more than the {limit} "
                           "allowed")
    try:
        # open + a bounded read, never archive.read(): zipfile would decompress a whole
        # member in one call, however far beyond its declared size it expands.
        with archive.open(info) as f:
            data = f.read(info.file_size)
    except ZIP_ERRORS as e:
        raise WeightsError(f"{what}: {zip_error(e)}") from None
    if len(data) != info.file_size:
        raise WeightsError(f"{what}: read {len(data)} bytes, declared {info.file_size}")
    return data
