"""Image input: reading any image Pillow can open, resizing, tensors.

Reading (:func:`load_image`)
    Accepts whatever Pillow opens (JPEG, PNG, WebP, BMP, TIFF, GIF, ...; EPS is refused because
    Pillow would hand it to Ghostscript). The EXIF orientation is applied, animated images give
    their first frame, and every colour mode becomes 8-bit RGB: alpha (RGBA, LA, PA, palette or
    grey/RGB with a transparency key) is composited on white, 16-bit and 32-bit data
    (``I;16*``, ``I``, ``F``) is scaled down to 8 bit rather than clipped, CMYK and grey are
    converted. Images over :data:`MAX_PIXELS` are refused from their header, before any pixel is
    decoded. Every failure is an :class:`~caso_cli.errors.InputError` whose message is one line,
    ``"<path>: <reason>"``.

Resize policy (:func:`fit_image`)
    The model works at a fixed resolution whose width and height are multiples of 8 (the VAE
    downsamples by 8). An input of another shape is brought to that size in one of three ways:

    ``crop`` (default)
        scale, keeping the aspect ratio, until the image covers the target, then cut the
        overflow equally from both sides (centre crop). Nothing is distorted; edges may be lost.
    ``pad``
        scale, keeping the aspect ratio, until the image fits inside the target, then centre it
        on a white canvas. Nothing is lost or distorted; white bars are added.
    ``stretch``
        resize to the target directly. Nothing is lost; the aspect ratio may change.

    Resampling is Lanczos throughout.

Tensors (:func:`to_tensor`, :func:`to_pil`)
    Images map to ``float32`` tensors of shape ``(N, 3, H, W)`` in ``[-1, 1]``
    (``v / 127.5 - 1``); the inverse clamps and rounds, so uint8 images round-trip exactly.
    torch and numpy are imported only inside the functions that need them.

Writing PNGs with their metadata: :mod:`caso_cli.io.png`.
"""

from __future__ import annotations

import errno
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from caso_cli.errors import InputError, UsageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "FIT_MODES",
    "MAX_PIXELS",
    "fit_image",
    "load_image",
    "parse_size",
    "to_pil",
    "to_tensor",
]

#: Largest image (width * height) that is read; larger ones are refused from their header.
#: Pillow's own bomb check (``PIL.Image.MAX_IMAGE_PIXELS``, twice its value) still applies on top.
MAX_PIXELS = 64_000_000

#: The resize modes :func:`fit_image` accepts.
FIT_MODES = ("crop", "pad", "stretch")

WHITE = (255, 255, 255)

# Formats never opened: Pillow renders EPS by running Ghostscript on the file.
_REFUSED_FORMATS = frozenset({"EPS"})

_RESAMPLE = Image.Resampling.LANCZOS
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[x×*]\s*(\d+)\s*)?$", re.IGNORECASE)
_BOMB_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


# ----------------------------------------------------------------------------------------------
# reading


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].strip()


def _limit_message(path: str | Path, width: int | None = None, height: int | None = None) -> str:
    limit = f"over the {MAX_PIXELS // 1_000_000} megapixel limit"
    if width is None or height is None:
        return f"{path}: image is {limit}"
    return f"{path}: image is {width}x{height}, {limit}"


def _open_formats() -> list[str]:
    Image.init()
    return [fmt for fmt in Image.ID if fmt not in _REFUSED_FORMATS]


def _check_file(path: Path, shown: str | Path) -> None:
    """Raise InputError unless ``path`` is a non-empty regular file."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise InputError(f"{shown}: no such file") from exc
    except PermissionError as exc:
        raise InputError(f"{shown}: permission denied") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{shown}: symbolic link loop") from exc
        raise InputError(f"{shown}: cannot access file ({one_line(exc)})") from exc
    except RuntimeError as exc:  # pathlib before Python 3.13 reports a symlink loop this way
        raise InputError(f"{shown}: symbolic link loop") from exc
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{shown}: is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{shown}: not a regular file")
    if st.st_size == 0:
        raise InputError(f"{shown}: file is empty (0 bytes)")


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """Open ``path`` lazily, check its header size, and map every failure to InputError.

    Errors raised while the body runs (decoding happens there) are mapped too.
    """
    file = Path(path)
    _check_file(file, path)
    try:
        fh = open(file, "rb")  # closed in the finally below
    except PermissionError as exc:
        raise InputError(f"{path}: permission denied") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory, not an image file") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot open file ({one_line(exc)})") from exc
    try:
        with warnings.catch_warnings():
            # Our own limit below decides; Pillow's warning would only leak to stderr.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(fh, formats=_open_formats())
            except UnidentifiedImageError as exc:
                raise InputError(f"{path}: not an image file (or a format Pillow cannot read)") from exc
            except Image.DecompressionBombError as exc:
                match = _BOMB_PIXELS_RE.search(str(exc))
                detail = f" ({int(match.group(1)) / 1e6:.0f} megapixels)" if match else ""
                raise InputError(_limit_message(path) + detail) from exc
            except InputError:
                raise
            except Exception as exc:  # Pillow plugins raise many types on bad headers
                raise InputError(f"{path}: not a readable image ({one_line(exc)})") from exc
            with img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise InputError(f"{path}: image has no pixels ({width}x{height})")
                if width * height > MAX_PIXELS:
                    raise InputError(_limit_message(path, width, height))
                try:
                    yield img
                except (InputError, UsageError):
                    raise
                except Image.DecompressionBombError as exc:
                    raise InputError(_limit_message(path, width, height)) from exc
                except MemoryError as exc:
                    raise InputError(f"{path}: out of memory while decoding the image") from exc
                except Exception as exc:
                    raise InputError(f"{path}: corrupt or truncated image ({one_line(exc)})") from exc
    finally:
        fh.close()


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """Convert a 16/32-bit integer or float single-channel image to ``L``, scaling, not clipping.

    ``I;16*`` is 0..65535 -> 0..255. ``I`` and ``F`` are read by their largest value: up to 1.0
    (``F`` only) as 0..1, up to 255 as 8-bit, up to 65535 as 16-bit, else scaled by the maximum.
    Negative values become 0.
    """
    import numpy as np

    arr = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16"):
        scale = 255.0 / 65535.0
    else:
        finite = arr[np.isfinite(arr)]
        peak = float(finite.max()) if finite.size else 0.0
        if img.mode == "F" and peak <= 1.0:
            scale = 255.0
        elif peak <= 255.0:
            scale = 1.0
        elif peak <= 65535.0:
            scale = 255.0 / 65535.0
        else:
            scale = 255.0 / peak
    out = np.nan_to_num(arr * scale, nan=0.0, posinf=255.0, neginf=0.0)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, compositing transparency on white. Always returns a new image."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img.copy()
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return _scale_to_8bit(img).convert("RGB")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as a fully loaded RGB image (orientation applied, file closed)."""
    with open_image(path) as img:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
        try:
            oriented = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block is not worth refusing the image for
            oriented = img
        try:
            rgb = to_rgb(oriented)
        except ValueError as exc:  # e.g. a colour mode Pillow cannot convert
            raise InputError(f"{path}: unsupported colour mode {img.mode} ({one_line(exc)})") from exc
    rgb.info.pop("transparency", None)
    return rgb


# ----------------------------------------------------------------------------------------------
# sizes and resizing


def _size_error(width: int, height: int) -> str | None:
    if width <= 0 or height <= 0:
        return "width and height must be positive multiples of 8"
    if width % 8 or height % 8:
        near_w, near_h = max(8, round(width / 8) * 8), max(8, round(height / 8) * 8)
        return f"width and height must be multiples of 8 (e.g. {near_w}x{near_h})"
    return None


def _target_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        width, height = size, size
    else:
        try:
            width, height = (int(v) for v in size)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"invalid target size {size!r}: expected N or (width, height)") from exc
    problem = _size_error(width, height)
    if problem:
        raise UsageError(f"invalid target size {width}x{height}: {problem}")
    return width, height


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"512"`` or ``"512x768"`` (width x height) into ``(width, height)``, multiples of 8."""
    match = _SIZE_RE.match(text or "")
    if not match:
        raise UsageError(f"invalid size {text!r}: expected N or WxH, e.g. 512 or 512x768")
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) is not None else width
    problem = _size_error(width, height)
    if problem:
        raise UsageError(f"invalid size {text!r}: {problem}")
    return width, height


def fit_image(img: Image.Image, size: int | tuple[int, int], mode: str = "crop") -> Image.Image:
    """Resize to ``size`` (int or ``(width, height)``) by ``crop``, ``pad`` or ``stretch``; returns RGB."""
    target = _target_size(size)
    if mode not in FIT_MODES:
        raise UsageError(f"unknown resize mode {mode!r}: choose one of {', '.join(FIT_MODES)}")
    rgb = img if img.mode == "RGB" and "transparency" not in img.info else to_rgb(img)
    if rgb.size == target:
        return rgb.copy()
    if mode == "crop":
        return ImageOps.fit(rgb, target, method=_RESAMPLE, centering=(0.5, 0.5))
    if mode == "pad":
        return ImageOps.pad(rgb, target, method=_RESAMPLE, color=WHITE, centering=(0.5, 0.5))
    return rgb.resize(target, _RESAMPLE)


# ----------------------------------------------------------------------------------------------
# tensors


def to_tensor(images: Image.Image | list[Image.Image]) -> torch.Tensor:
    """Images (one or a list, all the same size) -> float32 tensor ``(N, 3, H, W)`` in ``[-1, 1]``."""
    import numpy as np
    import torch

    batch = [images] if isinstance(images, Image.Image) else list(images)
    if not batch:
        raise ValueError("to_tensor: no images given")
    sizes = {im.size for im in batch}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
        raise ValueError(f"to_tensor: images differ in size ({shown}); resize them with fit_image first")
    arrays = [np.asarray(im if im.mode == "RGB" else to_rgb(im), dtype=np.uint8) for im in batch]
    stacked = torch.from_numpy(np.stack(arrays))  # (N, H, W, 3) uint8
    tensor = stacked.permute(0, 3, 1, 2).to(torch.float32).contiguous()
    return tensor / 127.5 - 1.0


def to_pil(tensor: torch.Tensor) -> list[Image.Image]:
    """Tensor ``(N, 3, H, W)`` or ``(3, H, W)`` in ``[-1, 1]`` -> RGB images (clamped, rounded)."""
    import torch

    t = torch.as_tensor(tensor).detach().to(device="cpu", dtype=torch.float32)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[1] != 3:
        raise ValueError(f"to_pil: expected a (N, 3, H, W) or (3, H, W) tensor, got {tuple(t.shape)}")
    t = torch.nan_to_num(t, nan=0.0, posinf=1.0, neginf=-1.0)
    pixels = ((t + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    arrays = pixels.permute(0, 2, 3, 1).contiguous().numpy()
    return [Image.fromarray(arr) for arr in arrays]
