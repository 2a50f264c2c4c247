"""Contained reading: a checkpoint folder, or one named file, read only from where it is.

A reader given a folder (an Orbax checkpoint) or a file and its companion (an MXNet export
pair) reads those and nothing else: no symbolic link inside is followed, no FIFO or device
is opened, and a folder changed between the check and the read is refused, not read
through.

:meth:`Folder.check` walks the folder once, never following a link: every directory is
opened (``O_DIRECTORY | O_NOFOLLOW``) by its full path and must be the directory its parent
listed (same device and inode); every entry inside is recorded by its path relative to the
folder -- device, inode, size and kind -- and any entry that is a symbolic link, or neither
a regular file nor a directory (a FIFO, a device, a socket), is refused, as are more than
:data:`MAX_ENTRIES` entries and directories nested more than :data:`MAX_DEPTH` deep.  The
folder itself is the path the caller gave, resolved once (a link the user named is theirs
to name).  Questions about the folder (:meth:`Folder.exists`, :meth:`Folder.is_dir`,
:meth:`Folder.listdir`) are answered from that record, without touching the disk again.

:meth:`Folder.read` opens a recorded regular file by its full path with ``O_NOFOLLOW |
O_NONBLOCK`` and checks the descriptor (``fstat``): it must be the very file the walk
recorded, so a file or an intermediate directory swapped for a link after the check is
refused; then the read is bounded (an exact size or a
limit, checked before anything is read).  :func:`read_file` does the same for one file a
caller names directly.  :meth:`Folder.private_copy` copies every checked file (each through
:meth:`Folder.read`) into a fresh directory: what a library that opens files itself (Orbax,
TensorStore) is given instead of the user's folder, so that nothing changed after the check
can reach it.

Every problem is a :class:`ports.errors.WeightsError` whose reason names the entry relative
to the folder (the reader's caller names the folder); no ``OSError`` escapes.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Union

from ..errors import WeightsError

PathLike = Union[str, os.PathLike]

MAX_ENTRIES = 100_000   # files and directories in one folder, all levels together
MAX_DEPTH = 32          # directories nested inside the folder
MAX_TARGET = 200        # characters of a link's target quoted in a message

_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
    | getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = _READ | getattr(os, "O_DIRECTORY", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
    | getattr(os, "O_CLOEXEC", 0)
FILE, DIR = "file", "dir"

__all__ = ["MAX_ENTRIES", "MAX_DEPTH", "Entry", "Folder", "read_file", "kind_of"]


@dataclass(frozen=True)
class Entry:
    """What the walk saw at one path: device, inode, size and kind (:data:`FILE`/:data:`DIR`)."""

    dev: int
    ino: int
    size: int
    kind: str


def kind_of(mode: int) -> str:
    """A file type in words (``a FIFO``, ``a character device``...)."""
    for test, words in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                        (stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return f"a file of type {stat.S_IFMT(mode):o}"


def _target(read_link: Callable[[], str]) -> str:
    try:
        target = os.fsdecode(read_link())
    except OSError as e:
        return f"unreadable: {e.strerror}"
    return target if len(target) <= MAX_TARGET else target[:MAX_TARGET] + "..."


def _bounded_read(fd: int, st: os.stat_result, what: str, *,
                  limit: int | None, exact: int | None) -> bytes:
    """Check the open regular file's size (``st``, its fstat) against ``exact``/``limit``,
    then read at most one byte more than allowed; closes ``fd``."""
    with os.fdopen(fd, "rb") as f:
        if exact is not None and st.st_size != exact:
            raise WeightsError(f"{what} has {st.st_size} bytes, its metadata needs {exact}")
        if limit is not None and st.st_size > limit:
            raise WeightsError(f"{what} has {st.st_size} bytes, more than the {limit} allowed")
        bound = exact if exact is not None else limit if limit is not None else st.st_size
        try:
            data = f.read(bound + 1)
        except OSError as e:
            raise WeightsError(f"{what}: {e.strerror}") from None
    if len(data) > bound or (exact is not None and len(data) != exact) or \
            (exact is None and limit is None and len(data) != st.st_size):
        raise WeightsError(f"{what} changed size while it was read")
    return data


def _open_same(path: str, what: str, dev: int, ino: int, *, directory: bool,
               changed: str) -> tuple[int, os.stat_result]:
    """Open ``path`` without following a last link and check that the descriptor is the
    file or directory ``(dev, ino)`` seen before; ``changed``: the reason when it is not."""
    try:
        fd = os.open(path, _DIRECTORY if directory else _READ)
    except FileNotFoundError:
        raise WeightsError(f"{what} disappeared {changed}") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):  # now a link, or not a dir
            raise WeightsError(f"{what} was replaced {changed}") from None
        raise WeightsError(f"{what}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise WeightsError(f"{what}: {e.strerror}") from None
    wanted = stat.S_ISDIR if directory else stat.S_ISREG
    if not wanted(st.st_mode) or (st.st_dev, st.st_ino) != (dev, ino):
        os.close(fd)
        raise WeightsError(f"{what} is not the {'folder' if directory else 'file'} that was "
                           f"checked: a path to it leads elsewhere {changed}")
    return fd, st


def read_file(path: PathLike, what: str, *, limit: int | None = None,
              exact: int | None = None, noun: str = "this file") -> bytes:
    """The bytes of ``path`` when it is a regular file itself -- not a symbolic link, FIFO or
    device -- of at most ``limit`` bytes, or exactly ``exact``; otherwise
    ``WeightsError(f"{what} ...")``.  Judged with ``lstat`` before it is opened, then opened with
    ``O_NOFOLLOW`` and checked to be that same file.  ``noun``: what is read only from its
    own files (``"an MXNet export pair"``), for the message about a link."""
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise WeightsError(f"{what} is missing") from None
    except OSError as e:
        raise WeightsError(f"{what}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise WeightsError(f"{what} is a symbolic link (to {_target(lambda: os.readlink(path))}), "
                           f"which is not a regular file; {noun} is read only from its own files")
    if not stat.S_ISREG(st.st_mode):
        raise WeightsError(f"{what} is not a regular file ({kind_of(st.st_mode)})")
    if exact is not None and st.st_size != exact:
        raise WeightsError(f"{what} has {st.st_size} bytes, its metadata needs {exact}")
    if limit is not None and st.st_size > limit:
        raise WeightsError(f"{what} has {st.st_size} bytes, more than the {limit} allowed")
    fd, st = _open_same(os.path.abspath(path), what, st.st_dev, st.st_ino,
                        directory=False, changed="after it was checked")
    return _bounded_read(fd, st, what, limit=limit, exact=exact)


class Folder:
    """A checked folder (see the module docstring): build one with :meth:`check`."""

    def __init__(self, root: Path, entries: dict[str, Entry],
                 children: dict[str, list[str]], noun: str) -> None:
        self.root = root                  # absolute, resolved
        self.entries = entries            # "" (the folder), "a", "a/b"... -> Entry
        self._children = children         # directory -> sorted names
        self.noun = noun

    # --- the walk -----------------------------------------------------------------------------
    @classmethod
    def check(cls, root: PathLike, *, noun: str = "a checkpoint",
              max_entries: int = MAX_ENTRIES, max_depth: int = MAX_DEPTH) -> Folder:
        """Walk ``root`` once (see the module docstring); ``noun`` names what the folder is
        in messages ("a checkpoint is read only from its own folder")."""
        base = Path(os.path.realpath(os.fspath(root)))
        try:
            st = os.lstat(base)
        except FileNotFoundError:
            raise WeightsError("no such directory") from None
        except OSError as e:
            raise WeightsError(f"{e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise WeightsError(f"not a directory ({kind_of(st.st_mode)})")
        entries = {"": Entry(st.st_dev, st.st_ino, 0, DIR)}
        children: dict[str, list[str]] = {}
        pending = [""]
        while pending:
            rel = pending.pop()
            depth = len(PurePosixPath(rel).parts)
            names = cls._scan(base, rel, entries, noun, max_entries)
            children[rel] = sorted(names)
            for name in names:
                sub = f"{rel}/{name}" if rel else name
                if entries[sub].kind == DIR:
                    if depth + 1 > max_depth:
                        raise WeightsError(f"{sub} is nested {depth + 1} folders deep, more than "
                                           f"the {max_depth} allowed")
                    pending.append(sub)
        return cls(base, entries, children, noun)

    @staticmethod
    def _scan(base: Path, rel: str, entries: dict[str, Entry], noun: str,
              max_entries: int) -> list[str]:
        """Record the entries of directory ``rel`` (opened and checked to be the one its
        parent listed); returns their names."""
        seen = entries[rel]
        what = rel or "the folder"
        full = str(base / rel) if rel else str(base)
        fd, _ = _open_same(full, what, seen.dev, seen.ino, directory=True,
                           changed="while the folder was checked")
        names = []
        by_fd = os.scandir in os.supports_fd  # not on Windows: there, by path
        try:
            with os.scandir(fd if by_fd else full) as it:
                for entry in it:
                    sub = f"{rel}/{entry.name}" if rel else entry.name
                    if len(entries) > max_entries:  # the folder itself is one of them
                        raise WeightsError(f"holds more than {max_entries} files and folders: not "
                                           f"{noun}")
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        target = _target(lambda name=entry.name: os.readlink(name, dir_fd=fd)
                                         if by_fd else os.readlink(os.path.join(full, name)))
                        raise WeightsError(f"{sub} is a symbolic link (to {target}), which is not "
                                           f"a regular file or folder; {noun} is read only from "
                                           "its own folder")
                    if stat.S_ISDIR(st.st_mode):
                        kind = DIR
                    elif stat.S_ISREG(st.st_mode):
                        kind = FILE
                    else:
                        raise WeightsError(f"{sub} is not a regular file or folder "
                                           f"({kind_of(st.st_mode)})")
                    entries[sub] = Entry(st.st_dev, st.st_ino, st.st_size, kind)
                    names.append(entry.name)
        except OSError as e:
            raise WeightsError(f"{what}: {e.strerror}") from None
        finally:
            os.close(fd)
        return names

    # --- questions, from the record -----------------------------------------------------------
    @staticmethod
    def _key(rel: PathLike) -> str:
        text = PurePosixPath(os.fspath(rel)).as_posix()
        return "" if text == "." else text

    def exists(self, rel: PathLike) -> bool:
        """Whether the walk saw ``rel`` (a file or a folder)."""
        return self._key(rel) in self.entries

    def is_dir(self, rel: PathLike) -> bool:
        """Whether ``rel`` is a folder of the checked folder."""
        entry = self.entries.get(self._key(rel))
        return entry is not None and entry.kind == DIR

    def listdir(self, rel: PathLike = "") -> list[str]:
        """The sorted names in folder ``rel`` (``""``: the folder itself); ``[]`` when it is
        not one."""
        return list(self._children.get(self._key(rel), []))

    def files(self) -> list[str]:
        """Every regular file, by relative path, sorted."""
        return sorted(rel for rel, e in self.entries.items() if e.kind == FILE)

    def path(self, rel: PathLike) -> Path:
        """The full path of ``rel`` (for a message or a library; read it with :meth:`read`)."""
        key = self._key(rel)
        return self.root / key if key else self.root

    # --- reading ------------------------------------------------------------------------------
    def read(self, rel: PathLike, what: str, *, limit: int | None = None,
             exact: int | None = None) -> bytes:
        """The bytes of the checked regular file ``rel`` (see the module docstring);
        problems are ``WeightsError(f"{what} ...")``."""
        key = self._key(rel)
        entry = self.entries.get(key)
        if entry is None or key == "":
            raise WeightsError(f"{what} is missing")
        if entry.kind != FILE:
            raise WeightsError(f"{what} is not a regular file (a directory)")
        if exact is not None and entry.size != exact:
            raise WeightsError(f"{what} has {entry.size} bytes, its metadata needs {exact}")
        if limit is not None and entry.size > limit:
            raise WeightsError(f"{what} has {entry.size} bytes, more than the {limit} allowed")
        fd, st = _open_same(str(self.root / key), what, entry.dev, entry.ino,
                            directory=False, changed="after the folder was checked (the "
                            f"folder changed while it was read; {self.noun} is read only "
                            "from its own folder)")
        return _bounded_read(fd, st, what, limit=limit, exact=exact)

    def private_copy(self, dest: PathLike, limit_bytes: int) -> Path:
        """Copy every checked file, each re-verified by :meth:`read`, into the new directory
        ``dest`` (it must not exist; it is created, private to this user), at most
        ``limit_bytes`` in all; returns ``dest``."""
        total = sum(e.size for e in self.entries.values() if e.kind == FILE)
        if total > limit_bytes:
            raise WeightsError(f"holds {total} bytes of files, more than the {limit_bytes} "
                               f"allowed for {self.noun} read through a library")
        dest = Path(os.path.abspath(os.fspath(dest)))
        try:
            os.mkdir(dest, 0o700)
            for rel in sorted(self.entries, key=lambda r: (r.count("/"), r)):
                entry = self.entries[rel]
                if rel == "":
                    continue
                if entry.kind == DIR:
                    os.mkdir(dest / rel, 0o700)
                    continue
                data = self.read(rel, rel, limit=entry.size)
                fd = os.open(dest / rel, _CREATE, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
        except OSError as e:
            raise WeightsError(f"cannot make a private copy in {dest}: {e.strerror}") from None
        return dest
