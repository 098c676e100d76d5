"""File helpers shared by every writer: a file's sha256, and atomic writes.

An atomic write goes to a hidden temporary file next to the destination (``.<name>.<random>.tmp``),
is flushed and fsynced, then renamed into place, so a reader (or a run killed half-way) sees the
old file or the new one, never half of one. On any error the temporary file is removed and the
destination is left as it was.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, hex (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(path: str | Path, what: str = "output") -> None:
    """Raise InputError (one line, exit 3) when ``path`` (a file, or a folder to fill) cannot be written: the
    nearest folder that exists on its way is not a folder, or not one this process may write into. Called before
    long work, so that nothing is computed only to be lost."""
    from caso_cli.errors import InputError

    target = Path(path).absolute()
    probe = target if target.is_dir() else target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{path}: cannot write the {what} here ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write the {what} here ({probe} is not writable)")


def fsync_dir(path: str | Path) -> None:
    """Make renames in the folder ``path`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")


def _create_temp(dest: Path) -> tuple[Path, int]:
    """A new hidden temporary file next to ``dest``: (its path, an fd open for writing)."""
    tmp = _temp_name(dest)
    # O_EXCL: never follow or reuse anything; 0o666 so the umask decides the final mode, as for open()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return tmp, os.open(tmp, flags, 0o666)


def _commit(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Move the finished temporary file into place; without ``overwrite``, never replace an existing file."""
    if overwrite:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)  # atomic, and fails if dest appeared meanwhile
            linked = True
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system: check, then rename (a small race)
            linked = False
        if not linked:
            if dest.exists() or dest.is_symlink():
                raise FileExistsError(errno.EEXIST, "File exists", str(dest))
            os.replace(tmp, dest)
    fsync_dir(dest.parent)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, overwrite: bool = True, encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a hidden temporary file next to ``path`` for writing; on success fsync it and rename it to ``path``.

    ``mode`` is ``"w"`` (text; ``encoding`` defaults to UTF-8) or ``"wb"``. With ``overwrite=False`` an
    existing ``path`` is never replaced: FileExistsError, even if it appeared while writing. If the body
    raises, the temporary file is removed and ``path`` is untouched. The folder must exist.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    dest = Path(path)
    tmp, fd = _create_temp(dest)
    try:
        if mode == "w":
            fh: IO[Any] = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
        else:
            fh = os.fdopen(fd, "wb")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _commit(tmp, dest, overwrite)
    finally:
        with suppress(OSError):  # gone already after a rename
            tmp.unlink()


@contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Like :func:`atomic_write`, for writers that take a file name (``safetensors.save_file``, ``torch.save``).

    Yields the hidden temporary path (created empty) for the body to write; then fsyncs and renames it.
    """
    dest = Path(path)
    tmp, fd = _create_temp(dest)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # writers such as safetensors' save_file recreate the file 0600: give it the mode open() would (umask)
        with suppress(OSError):
            os.chmod(tmp, 0o666 & ~_umask())
        _commit(tmp, dest, overwrite)
    finally:
        with suppress(OSError):  # gone already after a rename
            tmp.unlink()
