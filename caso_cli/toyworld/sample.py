"""Text-to-image sampling, encoding and decoding for the toy model with caso's own DDIM code.

``sd`` is what :func:`caso_cli.models.loaders.load_model` returns (or any object with the
same ``vae``, ``unet``, ``text_encoder``, ``tokenizer``, ``schedule``, ``scaling_factor`` and
``runtime``). Noise comes from a CPU generator (:func:`caso_cli.runtime.generator`), so a seed
gives the same images whatever the batch split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from caso_cli.conditioning import encode_prompts, null_condition
from caso_cli.pipelines.ddim import denoise, invert
from caso_cli.pipelines.guidance import guided_eps, predict_eps
from caso_cli.runtime import generator, randn

if TYPE_CHECKING:
    import torch

CHUNK = 64  # images per UNet batch (the guided UNet call doubles it)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Decoder output (N, 3, H, W) in [-1, 1] to uint8 (N, H, W, 3)."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to("cpu").numpy().astype(np.uint8)
    return arr.transpose(0, 2, 3, 1)


def to_tensor(images: np.ndarray, sd: Any) -> torch.Tensor:
    """uint8 (N, H, W, 3) to (N, 3, H, W) in [-1, 1] on the model's device and dtype."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.to(sd.runtime.device, sd.runtime.dtype)


def encode(sd: Any, images: np.ndarray) -> torch.Tensor:
    """Clean latents z0 = s * E(x) (posterior mean) of uint8 images, in chunks."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), CHUNK):
            x = to_tensor(images[i:i + CHUNK], sd)
            out.append(sd.vae.encode(x).latent_dist.mean * sd.scaling_factor)
    return torch.cat(out)


def decode(sd: Any, z0: torch.Tensor) -> np.ndarray:
    """uint8 images D(z0 / s), in chunks."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, z0.shape[0], CHUNK):
            out.append(to_uint8(sd.vae.decode(z0[i:i + CHUNK] / sd.scaling_factor).sample))
    return np.concatenate(out) if out else np.zeros((0, 32, 32, 3), np.uint8)


def latent_shape(sd: Any) -> tuple[int, int, int]:
    size = sd.unet.config.sample_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    return int(sd.unet.config.in_channels), int(size), int(size)


def initial_noise(sd: Any, n: int, seed: int) -> torch.Tensor:
    """(n, C, h, w) standard normal latents from a CPU generator seeded with ``seed``."""
    return randn((n, *latent_shape(sd)), generator(seed), sd.runtime)


def sample_latents(sd: Any, prompts: Sequence[str], seed: int, steps: int = 50, scale: float = 5.0) -> torch.Tensor:
    """Clean latents for ``prompts``: DDIM (``steps`` steps, eta 0) with classifier-free guidance."""
    import torch

    prompts = list(prompts)
    z_all = initial_noise(sd, len(prompts), seed)
    out = []
    with torch.no_grad():
        c_null = null_condition(sd.text_encoder, sd.tokenizer)
        for i in range(0, len(prompts), CHUNK):
            cond = encode_prompts(sd.text_encoder, sd.tokenizer, prompts[i:i + CHUNK])

            def eps(z: torch.Tensor, t: int, _i: int, cond: torch.Tensor = cond) -> torch.Tensor:
                return guided_eps(sd, z, t, c_null, cond, scale)

            out.append(denoise(eps, z_all[i:i + CHUNK], sd.schedule, steps))
    return torch.cat(out)


def sample(sd: Any, prompts: list[str], seed: int, steps: int = 50, scale: float = 5.0) -> np.ndarray:
    """Text-to-image: uint8 (N, 32, 32, 3) images for ``prompts`` (DDIM + CFG, seeded)."""
    return decode(sd, sample_latents(sd, prompts, seed, steps, scale))


def invert_null(sd: Any, z0: torch.Tensor, steps: int = 50, num_steps: int | None = None) -> torch.Tensor:
    """DDIM inversion of clean latents with the null condition (METHOD §4)."""
    import torch

    out = []
    with torch.no_grad():
        c_null = null_condition(sd.text_encoder, sd.tokenizer)
        for i in range(0, z0.shape[0], CHUNK):
            out.append(invert(lambda z, t, _i: predict_eps(sd, z, t, c_null), z0[i:i + CHUNK], sd.schedule,
                              steps, num_steps))
    return torch.cat(out)


def denoise_prompt(sd: Any, z_t: torch.Tensor, prompt: str | None, steps: int = 50, scale: float = 1.0,
                   num_steps: int | None = None) -> torch.Tensor:
    """Denoise inverted latents: null condition when ``prompt`` is None, else CFG with ``prompt``."""
    import torch

    out = []
    with torch.no_grad():
        c_null = null_condition(sd.text_encoder, sd.tokenizer)
        cond = None if prompt is None else encode_prompts(sd.text_encoder, sd.tokenizer, [prompt])
        for i in range(0, z_t.shape[0], CHUNK):
            if cond is None:
                def eps(z: torch.Tensor, t: int, _i: int) -> torch.Tensor:
                    return predict_eps(sd, z, t, c_null)
            else:
                def eps(z: torch.Tensor, t: int, _i: int) -> torch.Tensor:
                    return guided_eps(sd, z, t, c_null, cond, scale)
            out.append(denoise(eps, z_t[i:i + CHUNK], sd.schedule, steps, num_steps))
    return torch.cat(out)


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
            tile = Image.fromarray(images[i]).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (pad + c * cell_w, y + title))
    return canvas
