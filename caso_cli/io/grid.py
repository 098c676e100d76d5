"""Contact sheets: images in a grid with a caption under each cell."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

CAPTION_H = 14


def image_grid(images: Sequence[Image.Image], captions: Sequence[str] | None = None, ncol: int | None = None,
               min_cell: int = 96, pad: int = 4) -> Image.Image:
    """A white sheet with ``images`` in rows of ``ncol``; small images are enlarged (nearest) to ``min_cell``."""
    if not images:
        raise ValueError("no images")
    ncol = ncol or len(images)
    w, h = images[0].size
    zoom = max(1, -(-min_cell // max(w, h)))
    cw, ch = w * zoom, h * zoom
    cap = CAPTION_H if captions else 0
    rows = -(-len(images) // ncol)
    sheet = Image.new("RGB", (pad + ncol * (cw + pad), pad + rows * (ch + cap + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        x, y = pad + c * (cw + pad), pad + r * (ch + cap + pad)
        tile = img.convert("RGB")
        if tile.size != (cw, ch):
            tile = tile.resize((cw, ch), Image.Resampling.NEAREST if zoom > 1 else Image.Resampling.LANCZOS)
        sheet.paste(tile, (x, y))
        if captions:
            text = captions[i]
            tw = draw.textlength(text)
            draw.text((x + max(0, (cw - tw) / 2), y + ch + 1), text, fill="black")
    return sheet
