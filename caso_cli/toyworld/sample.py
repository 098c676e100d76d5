"""Text-to-image sampling, encoding and decoding for the toy model, on caso's pipelines (uint8 in and out).

``sd`` is what :func:`caso_cli.models.loaders.load_model` returns (or any object with the
same ``vae``, ``unet``, ``text_encoder``, ``tokenizer``, ``schedule``, ``scaling_factor`` and
``runtime``). Noise comes from a CPU generator (:func:`caso_cli.runtime.generator`), so a seed
gives the same images whatever the batch split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from caso_cli.config import EditConfig
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import decode_latents, encode_images, generate_latents
from caso_cli.pipelines.guidance import cfg_guidance

if TYPE_CHECKING:
    import torch


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def to_unit(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def encode(sd: Any, images: np.ndarray) -> torch.Tensor:
    """Clean latents z0 = s * E(x) (posterior mean) of uint8 images (N, H, W, 3)."""
    return encode_images(sd, to_unit(images))


def decode(sd: Any, z0: torch.Tensor) -> np.ndarray:
    """uint8 images (N, H, W, 3) D(z0 / s)."""
    return to_uint8(decode_latents(sd, z0))


def sample_latents(sd: Any, prompts: Sequence[str], seed: int, steps: int = 50, scale: float = 5.0) -> torch.Tensor:
    """Clean latents for ``prompts``: DDIM (``steps`` steps, eta 0) with classifier-free guidance."""
    import torch

    with torch.no_grad():
        conds = sd.family.encode_prompts(list(prompts))
    return generate_latents(sd, conds, seed, steps, scale)


def sample(sd: Any, prompts: list[str], seed: int, steps: int = 50, scale: float = 5.0) -> np.ndarray:
    """Text-to-image: uint8 (N, 32, 32, 3) images for ``prompts`` (DDIM + CFG, seeded)."""
    return decode(sd, sample_latents(sd, prompts, seed, steps, scale))


def _config(steps: int, num_steps: int | None, refine: int = EditConfig.inversion_refine) -> EditConfig:
    return EditConfig(steps=steps, start=(num_steps or steps) / steps, inversion_refine=refine)


def invert_null(sd: Any, z0: torch.Tensor, steps: int = 50, num_steps: int | None = None,
                refine: int = EditConfig.inversion_refine) -> torch.Tensor:
    """DDIM inversion of clean latents with the null condition (docs/method.md §4), ``refine`` fixed-point refinements
    per step (0: plain DDIM inversion)."""
    return invert_latents(sd, z0, _config(steps, num_steps, refine))


def denoise_prompt(sd: Any, z_t: torch.Tensor, prompt: str | None, steps: int = 50, scale: float = 1.0,
                   num_steps: int | None = None) -> torch.Tensor:
    """Denoise inverted latents: null condition when ``prompt`` is None, else CFG with ``prompt``."""
    import torch

    with torch.no_grad():
        prompts = [prompt if prompt is not None else ""]
        cond = sd.family.encode_prompts(prompts)
    guidance = cfg_guidance(sd, cond, scale if prompt is not None else 0.0)
    return edit_latents(sd, z_t, guidance, _config(steps, num_steps))


def labelled_grid(images: np.ndarray, labels: Sequence[str], ncol: int, scale: int = 3) -> Any:
    """A PIL image: rows of ``ncol`` images, each row titled by its label (one label per row)."""
    from PIL import Image, ImageDraw

    n, h, w, _ = images.shape
    rows = -(-n // ncol)
    pad, title = 2, 12
    cell_w, cell_h = w * scale + pad, h * scale + pad
    canvas = Image.new("RGB", (ncol * cell_w + pad, rows * (cell_h + title) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        y = pad + r * (cell_h + title)
        if r < len(labels):
            draw.text((pad, y), labels[r], fill="black")
        for c in range(ncol):
            i = r * ncol + c
            if i >= n:
                break
            tile = Image.fromarray(images[i]).resize((w * scale, h * scale), Image.Resampling.NEAREST)
            canvas.paste(tile, (pad + c * cell_w, y + title))
    return canvas
