"""Labelled image sets on disk: class folders, a ``path,label`` CSV, or a CelebA ``list_attr`` file.

Every reader returns a :class:`LabelledImages`: image paths, integer labels and the class
names (label k is ``classes[k]``). Binary CelebA attributes become the classes
``("no_<attr>", "<attr>")`` (lower case), so label 1 means the attribute is present.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from caso_cli.errors import InputError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # a GIF: its first frame


@dataclass(frozen=True)
class LabelledImages:
    """Image files with integer class labels."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    split: tuple[int, ...] | None = None  # per image: 0 train, 1 validation, 2 test (from a partition file)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per class."""
        return {c: sum(1 for y in self.labels if y == k) for k, c in enumerate(self.classes)}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def from_folders(root: Path) -> LabelledImages:
    """One sub-folder per class (``root/<class>/*.png``); classes in sorted name order."""
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and _images_in(d))
    if len(dirs) < 2:
        raise InputError(f"{root}: class folders need at least 2 sub-folders with images, found {len(dirs)}")
    paths, labels = [], []
    for k, d in enumerate(dirs):
        for p in _images_in(d):
            paths.append(p)
            labels.append(k)
    return LabelledImages(tuple(paths), tuple(labels), tuple(d.name for d in dirs))


def from_csv(csv_path: Path, root: Path | None = None) -> LabelledImages:
    """A CSV with ``path`` and ``label`` columns; relative paths are under ``root`` (default: the CSV's folder)."""
    base = root or csv_path.parent
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise InputError(f"{csv_path}: needs a header with 'path' and 'label' columns")
        rows = [(r["path"], r["label"].strip()) for r in reader]
    if not rows:
        raise InputError(f"{csv_path}: no rows")
    classes = tuple(sorted({lab for _, lab in rows}))
    if len(classes) < 2:
        raise InputError(f"{csv_path}: needs at least 2 classes, found {list(classes)}")
    index = {c: k for k, c in enumerate(classes)}
    return LabelledImages(tuple(base / p for p, _ in rows), tuple(index[lab] for _, lab in rows), classes)


def _read_list_attr(path: Path) -> tuple[list[str], list[tuple[str, list[int]]]]:
    try:
        lines = path.read_text().splitlines()
        header = lines[1].split()
        rows = []
        for line in lines[2:]:
            parts = line.split()
            if parts:
                rows.append((parts[0], [int(x) for x in parts[1:]]))
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a CelebA list_attr file ({exc})") from exc
    if any(len(v) != len(header) for _, v in rows):
        raise InputError(f"{path}: rows and header have different numbers of columns")
    return header, rows


def _pick_columns(header: list[str], attr: str, path: Path) -> list[int]:
    """Column indices for ``attr``: one column (binary), a comma list, or a prefix (``Hair`` -> ``Hair_*``)."""
    lower = {h.lower(): i for i, h in enumerate(header)}
    names = [a.strip() for a in attr.split(",") if a.strip()]
    if len(names) > 1:
        missing = [n for n in names if n.lower() not in lower]
        if missing:
            raise UsageError(f"{path}: no column {missing[0]!r} (columns: {', '.join(header)})")
        return [lower[n.lower()] for n in names]
    name = names[0].lower() if names else ""
    if name in lower:
        return [lower[name]]
    prefixed = [i for i, h in enumerate(header) if h.lower().startswith(name + "_")]
    if len(prefixed) >= 2:
        return prefixed
    import difflib

    close = difflib.get_close_matches(attr, header, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else f" (columns: {', '.join(header)})"
    raise UsageError(f"{path}: no attribute {attr!r}{hint}")


def from_list_attr(labels: Path, attr: str, root: Path, partition: Path | None = None) -> LabelledImages:
    """A CelebA-style ``list_attr`` file (count, header, ``file 1 -1 ...``); images under ``root``.

    ``attr`` names one column (two classes: ``no_<attr>``, ``<attr>``), a comma list of one-hot
    columns, or a prefix shared by one-hot columns (``Hair`` for ``Hair_black``, ``Hair_blond``...);
    rows with not exactly one active column are skipped. ``partition`` is CelebA's
    ``list_eval_partition.txt`` (``file 0|1|2``).
    """
    header, rows = _read_list_attr(labels)
    cols = _pick_columns(header, attr, labels)
    if len(cols) == 1:
        name = header[cols[0]].lower()
        classes: tuple[str, ...] = (f"no_{name}", name)
        kept = [(f, 1 if v[cols[0]] > 0 else 0) for f, v in rows]
    else:
        prefix = attr.lower() + "_"
        classes = tuple(header[i].lower().removeprefix(prefix) for i in cols)
        kept = []
        for f, v in rows:
            on = [k for k, i in enumerate(cols) if v[i] > 0]
            if len(on) == 1:
                kept.append((f, on[0]))
    img_dir = root / "images" if (root / "images").is_dir() and not (root / kept[0][0]).exists() else root
    split = None
    if partition is not None:
        table = {}
        for line in partition.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                table[parts[0]] = int(parts[1])
        split = tuple(table.get(f, 0) for f, _ in kept)
    return LabelledImages(tuple(img_dir / f for f, _ in kept), tuple(y for _, y in kept), classes, split)


def load_labelled(data: str | Path, labels: str | Path | None = None, attr: str | None = None,
                  partition: str | Path | None = None) -> LabelledImages:
    """Dispatch on what the user gave: ``--labels`` list_attr + ``--attr``, a CSV, or class folders."""
    root = Path(data).expanduser()
    if not root.exists():
        raise InputError(f"{root}: no such file or directory")
    if labels is not None:
        if not attr:
            raise UsageError("--labels needs --attr (the column, comma list or prefix to learn)")
        lab = Path(labels).expanduser()
        if not lab.is_file():
            raise InputError(f"{lab}: no such file")
        part = Path(partition).expanduser() if partition else None
        data_set = from_list_attr(lab, attr, root if root.is_dir() else root.parent, part)
    elif root.is_file() and root.suffix.lower() == ".csv":
        data_set = from_csv(root)
    elif root.is_dir():
        data_set = from_folders(root)
    else:
        raise UsageError(f"{root}: give class folders, a path,label CSV, or --labels with --attr")
    if len(data_set) == 0:
        raise InputError(f"{root}: no labelled images found")
    return data_set


def check_classes(data_set: LabelledImages, min_per_class: int = 1) -> None:
    """Every class must have at least ``min_per_class`` images."""
    short = {c: n for c, n in data_set.counts().items() if n < min_per_class}
    if short:
        raise InputError("too few images for class " + ", ".join(f"{c!r} ({n})" for c, n in short.items())
                         + f"; need at least {min_per_class} each")


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, validation) with ``fraction`` of each class in validation (at least one each)."""
    import random

    rng = random.Random(seed)
    train, val = [], []
    for k in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == k]
        rng.shuffle(idx)
        n_val = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def image_paths(data: str | Path) -> list[Path]:
    """Training images for ``embed learn``: every image under a folder (recursively), or a CSV's paths."""
    root = Path(data).expanduser()
    if root.is_file() and root.suffix.lower() == ".csv":
        return list(from_csv(root).paths)
    if root.is_dir():
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        return paths
    raise InputError(f"{root}: no such folder or CSV file")


def digest_files(paths: Sequence[Path]) -> str:
    """sha256 over the files' names and contents: identifies a training set (16 hex digits)."""
    import hashlib

    from caso_cli.io.files import file_sha256

    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(bytes.fromhex(file_sha256(p)))  # the file's digest as bytes: the same value as before
    return h.hexdigest()[:16]
