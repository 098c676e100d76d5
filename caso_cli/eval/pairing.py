"""Pair original images with their edits, by file name or from a CSV (``caso eval``).

By name, an edit ``<name>.<ext>`` belongs to the original whose stem equals ``<name>`` or is a
prefix of it up to a dot: ``000.mustache.5.png`` and ``000.recon.png`` (what ``caso edit`` and
``caso reconstruct`` write) both pair with ``000.jpg``. When several stems fit, the longest
wins. One original may have many edits; each edit is one pair.

Each edit also belongs to an :class:`EditGroup`, the edit it comes from (embeddings, classes, scales), read
from the ``caso:*`` PNG text chunks caso writes (:mod:`caso_cli.pipelines.provenance`) and, where those are
missing, from the file name ``<stem>[.recon].<attr[+attr]>.<scale[,scale]>.png``: ``caso eval`` reports per
group, so that ``x.mustache.5.png`` and ``x.mustache.-5.png`` are not mixed into one success rate.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from caso_cli.errors import InputError, UsageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


@dataclass
class Pairing:
    """Pairs found, and the files left without a partner."""

    pairs: list[tuple[Path, Path]]  # (original, edit), sorted by edit path
    unpaired_originals: list[Path] = field(default_factory=list)
    unpaired_edits: list[Path] = field(default_factory=list)


def list_images(path: Path) -> list[Path]:
    """The image files directly in folder ``path`` (sorted), or ``[path]`` for a file."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _original_for(edit: Path, by_stem: dict[str, Path]) -> Path | None:
    name = edit.stem
    while True:
        if name in by_stem and by_stem[name].resolve() != edit.resolve():
            return by_stem[name]
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]


def pair_by_name(orig: Path, edit: Path) -> Pairing:
    """Pair the images of ``orig`` and ``edit`` (folders or single files) by file name."""
    originals, edits = list_images(orig), list_images(edit)
    if orig.is_file() and edit.is_file():
        return Pairing([(orig, edit)])
    by_stem: dict[str, Path] = {}
    for p in originals:
        if p.stem in by_stem:
            raise InputError(f"{orig}: two originals share the stem {p.stem!r} ({by_stem[p.stem].name}, {p.name}); "
                             "use --pairs")
        by_stem[p.stem] = p
    pairs, lonely = [], []
    for e in edits:
        o = _original_for(e, by_stem)
        if o is None:
            lonely.append(e)
        else:
            pairs.append((o, e))
    used = {o for o, _ in pairs} | {e for _, e in pairs}
    result = Pairing(pairs, [p for p in originals if p not in used], [e for e in lonely if e not in by_stem.values()])
    if not pairs:
        raise InputError(f"no edit in {edit} pairs with an original in {orig} by file name "
                         f"({len(edits)} edits, {len(originals)} originals; an edit <stem>[.<anything>].<ext> "
                         "pairs with the original <stem>.<ext>); give --pairs CSV")
    return result


def pair_from_csv(csv_path: Path, orig: Path, edit: Path) -> Pairing:
    """Pairs from a CSV with ``orig`` and ``edit`` columns; relative paths start at the folders ORIG and EDIT."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
            columns = set(rows[0]) if rows else set()
    except FileNotFoundError as exc:
        raise InputError(f"{csv_path}: no such file") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{csv_path}: cannot read CSV ({exc})") from exc
    if not rows:
        raise InputError(f"{csv_path}: no pairs (the CSV needs a header 'orig,edit' and one row per pair)")
    if not {"orig", "edit"} <= columns:
        raise UsageError(f"{csv_path}: needs columns 'orig' and 'edit', found {', '.join(sorted(columns))}")
    o_root = orig if orig.is_dir() else orig.parent
    e_root = edit if edit.is_dir() else edit.parent
    pairs = []
    for n, row in enumerate(rows, start=2):
        o, e = (row.get("orig") or "").strip(), (row.get("edit") or "").strip()
        if not o or not e:
            raise InputError(f"{csv_path}:{n}: empty 'orig' or 'edit'")
        pairs.append((o_root / o, e_root / e))
    return Pairing(pairs)


# ---- edit groups -----------------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_EDIT_NAME_RE = re.compile(rf"^(?:(?P<kind>recon)(?:\.|$))?"
                           rf"(?:(?P<attrs>[^.]+)\.(?P<scales>{_NUMBER}(?:,{_NUMBER})*))?$")


@dataclass(frozen=True)
class EditGroup:
    """The edit a file comes from: the embeddings (from a file name: the ``--attr`` labels), the class of each
    (``None`` where not recorded) and the scale of each as written (``()`` where there is none)."""

    names: tuple[str, ...] = ()
    classes: tuple[str | None, ...] = ()
    scales: tuple[str, ...] = ()
    kind: str = ""  # "recon" for caso reconstruct's outputs
    source: str = "none"  # where it was read: "provenance" (caso:* PNG chunks), "file name", or "none"

    @property
    def label(self) -> str:
        """``toy-mustache:mustache=5``, ``smile=-2.5+glasses=3``, ``recon``; ``ungrouped`` when nothing is known."""
        scales: tuple[str | None, ...] = self.scales or (None,) * len(self.names)
        parts = [n + (f":{c}" if c else "") + (f"={s}" if s is not None else "")
                 for n, c, s in zip(self.names, self.classes, scales, strict=True)]
        text = " ".join([self.kind] * bool(self.kind) + ["+".join(parts)] * bool(parts))
        return text or "ungrouped"

    def scale_values(self) -> tuple[float, ...] | None:
        """The scales as numbers, one per name; ``None`` when they are not known."""
        try:
            return tuple(float(s) for s in self.scales) if self.scales else None
        except ValueError:
            return None


def _split(text: str | None, n: int) -> tuple[str, ...] | None:
    parts = tuple(p.strip() for p in (text or "").split(","))
    return parts if text and len(parts) == n and all(parts) else None


def edit_group(orig: Path, edit: Path) -> EditGroup:
    """The :class:`EditGroup` of ``edit`` (paired with ``orig``): its ``caso:embeddings``, ``caso:classes`` and
    ``caso:scales`` PNG chunks where it has them, the rest from its file name after ``orig``'s stem."""
    names: tuple[str, ...] = ()
    classes: tuple[str | None, ...] = ()
    scales: tuple[str, ...] = ()
    kind, source = "", "none"
    rest = edit.stem[len(orig.stem) + 1:] if edit.stem.startswith(orig.stem + ".") else ""
    m = _EDIT_NAME_RE.match(rest) if rest else None
    if m and (m["kind"] or m["attrs"]):
        kind, source = m["kind"] or "", "file name"
        if m["attrs"]:
            names = tuple(m["attrs"].split("+"))
            classes = (None,) * len(names)
            written = tuple(m["scales"].split(","))
            scales = written * len(names) if len(written) == 1 else written if len(written) == len(names) else ()
    elif rest:
        names, classes, source = (rest,), (None,), "file name"
    meta = _png_text(edit)
    found = tuple(p.strip() for p in (meta.get("caso:embeddings") or "").split(","))
    if all(found):
        source = "provenance"
        if found != names:
            names, classes, scales = found, (None,) * len(found), scales if len(scales) == len(found) else ()
        classes = _split(meta.get("caso:classes"), len(names)) or classes
        scales = _split(meta.get("caso:scales"), len(names)) or scales
    return EditGroup(names, classes, scales, kind, source)


def _png_text(path: Path) -> dict[str, str]:
    """The text chunks before the image data of PNG ``path`` (where caso writes them), without decoding the pixels;
    ``{}`` for another format or a file that cannot be read (eval reads the image itself later and reports that)."""
    if path.suffix.lower() != ".png":
        return {}
    from PIL import Image

    try:
        with Image.open(path) as im:
            return {str(k): v for k, v in im.info.items() if isinstance(v, str)} if im.format == "PNG" else {}
    except Exception:  # noqa: BLE001  # any unreadable file: no provenance here, eval's own read reports it
        return {}
