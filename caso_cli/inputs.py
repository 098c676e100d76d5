"""Input paths for batch commands: files, folders (``-r`` to recurse), globs and ``-`` (stdin)."""

from __future__ import annotations

import errno
import glob
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from caso_cli.datasets import IMAGE_SUFFIXES


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
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    for p in sorted(pattern):
        if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.is_dir())):
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
            lines = stdin if stdin is not None else sys.stdin
            for line in lines:
                line = line.rstrip("\n")
                if line.strip():
                    yield from _expand(Path(line), recursive, emit)
            continue
        path = Path(spec).expanduser()
        if not path.exists() and glob.has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=recursive))
            if not matches:
                yield from emit(InputItem(path, "no file matches this pattern"))
            for m in matches:
                yield from _expand(Path(m), recursive, emit)
            continue
        yield from _expand(path, recursive, emit)


def _expand(path: Path, recursive: bool, emit: Callable[[InputItem], Iterator[InputItem]]) -> Iterator[InputItem]:
    if path.is_dir():
        for item in _folder(path, recursive):
            yield from emit(item)
    elif path.exists() or path.is_symlink():
        yield from emit(_item(path))
    else:
        yield from emit(InputItem(path, "no such file"))
