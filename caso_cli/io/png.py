"""PNG output: images written atomically (a temporary file in the same directory, then a rename) with string metadata
as PNG text chunks; an existing file is never replaced unless asked. Reading those chunks back, and telling caso's own
outputs (their ``caso:*`` provenance chunks) from other images."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from caso_cli.errors import InputError
from caso_cli.io.files import atomic_write
from caso_cli.io.images import one_line, open_image, to_rgb

_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})


def _printable(text: str) -> str:
    """``text`` as valid UTF-8: the bytes of a non-UTF-8 file name (surrogate escapes) become ``\\xNN``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _png_info(metadata: Mapping[str, Any] | None) -> PngInfo:
    info = PngInfo()
    for key, value in (metadata or {}).items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        text = _printable(text)
        # long values go compressed (zTXt / compressed iTXt); add_text picks iTXt for non-Latin-1
        info.add_text(str(key), text, zip=len(text) > 1024)
    return info


def save_png(
    img: Image.Image,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``img`` as PNG with ``metadata`` as text chunks, atomically; refuse to overwrite unless asked."""
    dest = Path(path)
    if dest.is_dir():
        raise InputError(f"{path}: is a directory")
    if not overwrite and (dest.exists() or dest.is_symlink()):
        raise InputError(f"{path}: exists (use --overwrite)")
    info = _png_info(metadata)
    out = img if img.mode in _PNG_MODES else to_rgb(img)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create directory {dest.parent} ({one_line(exc)})") from exc

    try:
        with atomic_write(dest, "wb", overwrite=overwrite) as fh:
            out.save(fh, format="PNG", pnginfo=info)
    except FileExistsError as exc:  # appeared while writing
        raise InputError(f"{path}: exists (use --overwrite)") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({one_line(exc)})") from exc
    return dest


def read_png_metadata(path: str | Path) -> dict[str, str]:
    """Return the text chunks (tEXt, zTXt, iTXt) of a PNG file as a dict."""
    with open_image(path) as img:
        if img.format != "PNG":
            raise InputError(f"{path}: not a PNG file ({img.format or 'unknown format'})")
        text = img.text  # type: ignore[attr-defined]  # reads chunks after the image data too
        return {str(key): str(value) for key, value in text.items()}


def is_caso_output(path: str | Path) -> bool:
    """Whether ``path`` is a PNG that caso wrote (its ``caso:*`` provenance chunks, read from the header only)."""
    if Path(path).suffix.lower() != ".png":
        return False
    try:
        with Image.open(path) as img:
            return any(str(key).startswith("caso:") for key in img.info)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
