"""Guided generation from noise, VAE encoding and decoding in chunks (docs/method.md §5)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from caso_cli.errors import NumericalError
from caso_cli.pipelines.ddim import denoise
from caso_cli.pipelines.guidance import Contrast
from caso_cli.runtime import generator, randn

if TYPE_CHECKING:
    from caso_cli.attrs import ResolvedAttr
    from caso_cli.families import Condition
    from caso_cli.models.loaders import StableDiffusion

CHUNK = 32  # latents per network batch (the guided call doubles it)


def initial_noise(sd: StableDiffusion, n: int, seed: int, size: int | None = None) -> torch.Tensor:
    """(n, C, h, w) standard normal latents from a CPU generator seeded with ``seed``."""
    return randn((n, *sd.latent_shape(size)), generator(seed), sd.runtime)


def _guided(sd: StableDiffusion, guidance: Contrast, z: torch.Tensor, t: int, _i: int) -> torch.Tensor:
    return guidance.eps(sd, z, t)


@torch.no_grad()
def generate_latents(sd: StableDiffusion, conds: Condition, seed: int, steps: int = 50, scale: float = 5.0,
                     size: int | None = None) -> torch.Tensor:
    """Clean latents sampled from noise with CFG on ``conds``: one latent per condition row."""
    z_all = initial_noise(sd, conds.batch, seed, size)
    c_null = sd.family.null_condition()
    out = []
    for i in range(0, conds.batch, CHUNK):

        guidance = Contrast.cfg(c_null, conds[i:i + CHUNK], scale)
        out.append(denoise(partial(_guided, sd, guidance), z_all[i:i + CHUNK], sd.schedule, steps))
    return torch.cat(out)


@torch.no_grad()
def class_conditions(sd: StableDiffusion, vectors: torch.Tensor, context: str | None = None,
                     placement: str = "token") -> Condition:
    """K rows: one condition per class vector of (K, d), each holding that vector alone, or placed in ``context``'s
    slot (vectors learned in context, docs/method.md §10)."""
    vectors = vectors.to(sd.runtime.device)
    if context is not None:
        return sd.family.encode_in_context([context] * vectors.shape[0], vectors, placement)
    return sd.family.encode_vectors(vectors.unsqueeze(1))


@torch.no_grad()
def samples_per_class(sd: StableDiffusion, vectors: torch.Tensor, n: int, seed: int, steps: int = 50,
                      scale: float = 5.0, context: str | None = None, placement: str = "token") -> list[torch.Tensor]:
    """For each class vector k of (K, d): ``n`` images in [-1, 1] generated from noise (seed ``seed + k``) with
    c_k alone (or in ``context``) as the condition (CFG ``scale``)."""
    conds = class_conditions(sd, vectors, context, placement)
    return [decode_latents(sd, generate_latents(sd, conds[k:k + 1].expand(n), seed + k, steps, scale))
            for k in range(vectors.shape[0])]


@torch.no_grad()
def encode_images(sd: StableDiffusion, images: torch.Tensor) -> torch.Tensor:
    """z0 = (E(x) - shift) s, the posterior mean, for images (N, 3, H, W) in [-1, 1]."""
    return torch.cat([sd.encode_latents(images[i:i + CHUNK]) for i in range(0, images.shape[0], CHUNK)])


@torch.no_grad()
def decode_latents(sd: StableDiffusion, z0: torch.Tensor) -> torch.Tensor:
    """Images D(z0 / s + shift) in [-1, 1], float32 on the CPU.

    A half-precision decode that overflows is redone in fp32 for those images (:meth:`StableDiffusion.vae_fp32`).
    An image whose latent or decoding still holds NaN or inf comes back all NaN (not clamped into a
    plausible picture), so that :func:`require_finite` and callers checking ``isfinite`` see it.
    """
    from caso_cli.runtime import needs_fp32_decode

    out = []
    for i in range(0, z0.shape[0], CHUNK):
        z = z0[i:i + CHUNK]
        x = sd.decode_latents(z)
        z_ok = finite_rows(z)
        redo = needs_fp32_decode(x, sd.vae.dtype) & z_ok
        if redo.any():
            x[redo] = sd.decode_latents(z[redo], sd.vae_fp32())
        bad = ~(z_ok & finite_rows(x))
        x = x.clamp(-1, 1)
        x[bad] = float("nan")
        out.append(x.cpu())
    return torch.cat(out)


def finite_rows(t: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which items of a batch hold only finite values."""
    return torch.isfinite(t).flatten(1).all(1)


def nonfinite_hint(sd: StableDiffusion) -> str:
    """What to try when NaN/inf appeared: fp32 when running in half precision, else the weights."""
    if sd.runtime.dtype != torch.float32:
        return "try --dtype fp32 (half-precision VAEs and UNets can overflow)"
    return "it happened in fp32, so check the model's weights"


def require_finite(images: torch.Tensor, sd: StableDiffusion, what: str) -> torch.Tensor:
    """``images`` unchanged, or :class:`NumericalError` naming how many are NaN/inf and what to try."""
    bad = int((~finite_rows(images)).sum())
    if bad:
        raise NumericalError(f"{what} produced NaN/inf values in {bad} of {images.shape[0]} image(s), so nothing "
                             f"was written; {nonfinite_hint(sd)}")
    return images


@dataclass(frozen=True)
class GenerateJob:
    """Images from noise guided by learned classes alone (no prompt): one multi-token condition."""

    attrs: list[ResolvedAttr]
    out: Path  # grid PNG
    n: int = 8
    scale: float = 5.0
    steps: int = 50
    seed: int = 0
    size: int | None = None  # image side; default the model's resolution
    frames: Path | None = None  # folder for each image as <attrs>.<seed>.<i>.png
    overwrite: bool = False


def run_generate(sd: StableDiffusion, job: GenerateJob) -> list[Path]:
    """Generate ``job.n`` images, write the grid (and frames); the paths written, grid first."""
    from caso_cli.config import EditConfig
    from caso_cli.io.grid import image_grid
    from caso_cli.io.images import to_pil
    from caso_cli.io.png import save_png
    from caso_cli.pipelines.guidance import attribute_guidance, check_model
    from caso_cli.pipelines.provenance import provenance

    check_model(job.attrs, sd)
    EditConfig(steps=job.steps).num_steps(sd.schedule)  # a step count this model's grid cannot take: one line
    cond = attribute_guidance(sd, job.attrs, job.scale).conds[-1]  # one condition naming every attribute
    images = decode_latents(sd, generate_latents(sd, cond.expand(job.n), job.seed, job.steps, job.scale,
                                                 job.size))
    pics = to_pil(require_finite(images, sd, "generation"))
    meta = provenance(sd.name, job.attrs, scales=[job.scale], steps=job.steps, seed=job.seed)
    paths = [save_png(image_grid(pics, ncol=min(8, job.n)), job.out, meta, overwrite=job.overwrite)]
    if job.frames is not None:
        stem = "+".join(a.label for a in job.attrs)
        paths += [save_png(pic, job.frames / f"{stem}.{job.seed}.{i:03d}.png", meta, overwrite=job.overwrite)
                  for i, pic in enumerate(pics)]
    return paths
