"""Input paths for batch commands: files, folders (``-r`` to recurse), globs and ``-`` (stdin)."""

from __future__ import annotations

import errno
import glob
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from caso_cli.errors import UsageError
from caso_cli.io.datasets import IMAGE_SUFFIXES

MAX_PATH_LINE = 4096  # longer stdin "lines" are not paths (PATH_MAX on Linux)
STDIN_NOT_PATHS = ("'-' reads image paths from stdin, one per line, but stdin holds {what}; to edit one image "
                   "give its path (or use a folder)")


@dataclass(frozen=True)
class InputItem:
    """One input: a path to process, or a problem to report (``error`` set)."""

    path: Path
    error: str | None = None


def _link_problem(path: Path) -> str | None:
    """Why a symbolic link cannot be followed (a loop, a missing target), or None."""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return "symbolic link loop"
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)"
    except OSError as exc:
        return "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot follow symbolic link ({exc.strerror})"
    return None


def _item(path: Path) -> InputItem:
    problem = _link_problem(path) if path.is_symlink() else None
    return InputItem(path, problem)


def _folder(folder: Path, recursive: bool) -> Iterator[InputItem]:
    """The images of a folder, less caso's own outputs (PNGs with caso provenance: a rerun into the input folder
    must not edit its edits; name such a file to edit it again)."""
    from caso_cli.io.png import is_caso_output

    pattern = folder.rglob("*") if recursive else folder.iterdir()
    for p in sorted(pattern):
        if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.is_dir())) \
                and not is_caso_output(p):
            yield _item(p)


def expand_inputs(specs: Iterable[str], recursive: bool = False,
                  stdin: Iterable[str] | None = None) -> Iterator[InputItem]:
    """Yield each image path once, in order; missing paths and unmatched globs become error items.

    A folder yields its images (sorted; sub-folders only with ``recursive``); a glob its matches;
    ``-`` the newline-separated paths read from ``stdin`` (default: the process's stdin).
    """
    seen: set[Path] = set()

    def emit(item: InputItem) -> Iterator[InputItem]:
        key = item.path.resolve() if item.error is None else item.path
        if key not in seen:
            seen.add(key)
            yield item

    for spec in specs:
        if spec == "-":
            for line in _path_lines(stdin if stdin is not None else _stdin()):
                yield from _expand(Path(line), recursive, emit)
            continue
        path = Path(spec).expanduser()
        if glob.has_magic(spec) and not _exists(path):
            matches = sorted(glob.glob(spec, recursive=recursive))
            if not matches:
                yield from emit(InputItem(path, "no file matches this pattern"))
            for m in matches:
                yield from _expand(Path(m), recursive, emit)
            continue
        yield from _expand(path, recursive, emit)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long: _expand reports it
        return False


def _stdin() -> Iterable[str]:
    """The process's stdin as text whose undecodable bytes survive (a file name need not be UTF-8)."""
    import io

    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # replaced by a text-only stream (tests)
        return sys.stdin
    return io.TextIOWrapper(buffer, encoding=sys.stdin.encoding or "utf-8", errors="surrogateescape")


def _binary(line: str) -> bool:
    """A line no file name has: a NUL or another control character (tabs aside)."""
    return any(ord(ch) < 32 and ch != "\t" for ch in line)


def _path_lines(lines: Iterable[str]) -> Iterator[str]:
    """The non-blank lines of ``lines``; binary data (an image piped in by mistake) is one usage error. Names that
    are not UTF-8 pass (as surrogate escapes). Each line is given out only once the next one is read, so binary
    data whose first line looks like a name (a PNG's) is refused before anything is done."""
    it = iter(lines)
    pending: str | None = None
    while True:
        try:
            line = next(it)
        except StopIteration:
            break
        except UnicodeDecodeError as exc:
            raise UsageError(STDIN_NOT_PATHS.format(what="binary data")) from exc
        line = line.rstrip("\r\n")
        if _binary(line):
            raise UsageError(STDIN_NOT_PATHS.format(what="binary data"))
        if len(line) > MAX_PATH_LINE:
            raise UsageError(STDIN_NOT_PATHS.format(what=f"a line of {len(line)} characters"))
        if line.strip():
            if pending is not None:
                yield pending
            pending = line
    if pending is not None:
        yield pending


def _expand(path: Path, recursive: bool, emit: Callable[[InputItem], Iterator[InputItem]]) -> Iterator[InputItem]:
    try:
        is_dir, exists = path.is_dir(), path.exists() or path.is_symlink()
    except OSError as exc:  # e.g. a name too long for the file system
        yield from emit(InputItem(path, (exc.strerror or str(exc)).lower()))
        return
    if is_dir:
        found = False
        for item in _folder(path, recursive):
            found = True
            yield from emit(item)
        if not found:
            yield from emit(InputItem(path, "is a directory, not an image file" if path.suffix.lower() in IMAGE_SUFFIXES
                                      else f"no images in this folder ({', '.join(IMAGE_SUFFIXES)}"
                                           + ("" if recursive else "; -r also searches its sub-folders") + ")"))
    elif exists:
        yield from emit(_item(path))
    else:
        yield from emit(InputItem(path, "no such file"))
