"""Sweep one attribute's guidance scale over an image: one inversion, every scale in one batch (docs/method.md §5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from caso_cli.attrs import ResolvedAttr, format_scale
from caso_cli.config import EditConfig
from caso_cli.pipelines.batch_edit import edit_guidance, prepare_holding
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import decode_latents, encode_images, require_finite
from caso_cli.pipelines.provenance import provenance

if TYPE_CHECKING:
    from caso_cli.models.loaders import StableDiffusion
    from caso_cli.registry import Embedding


@dataclass(frozen=True)
class SweepJob:
    """One image, one attribute, a list of scales; where the grid (and optionally frames and a GIF) go."""

    source: Path
    attr: ResolvedAttr
    scales: tuple[float, ...]
    out: Path  # grid PNG, each cell's scale under it
    config: EditConfig = field(default_factory=EditConfig)
    gif: Path | None = None
    frames: Path | None = None  # folder for <stem>.<attr>.<scale>.png
    size: int | None = None  # image side; default the model's resolution
    hold: tuple[Embedding, ...] = ()  # the edit mode, as for caso edit (caso_cli.pipelines.batch_edit.EditJob)
    hold_form: str = "auto"
    context: str | None = None  # the word context of entries learned in context (None: the entry's own)
    overwrite: bool = False


@dataclass
class SweepResult:
    grid: Path
    captions: list[str]  # each cell's scale as written
    frames: list[Path]
    gif: Path | None
    held: dict[str, str]  # the held classes read in the image (empty without holding)


def run_sweep(sd: StableDiffusion, job: SweepJob) -> SweepResult:
    """Invert the image once, edit it at every scale in one batch, write the grid (and frames, GIF)."""
    from caso_cli.io.grid import image_grid
    from caso_cli.io.images import fit_image, load_image, to_pil, to_tensor
    from caso_cli.io.png import save_png

    attrs = [job.attr]
    holding = prepare_holding(sd, attrs, job.hold, job.hold_form)
    x = to_tensor([fit_image(load_image(job.source), job.size or sd.resolution)])
    z_t = invert_latents(sd, encode_images(sd, x), job.config)
    values = torch.tensor(job.scales)
    per_latent = holding is not None or any(a.embedding.meta.contexts for a in attrs)  # a Contrast takes (B, 1, 1, 1)
    guidance, held = edit_guidance(sd, attrs, holding, x, values.view(-1, 1, 1, 1) if per_latent else values,
                                   context=job.context)
    edited = decode_latents(sd, edit_latents(sd, z_t.expand(len(values), -1, -1, -1), guidance, job.config))
    pics = to_pil(require_finite(edited, sd, "the sweep"))
    captions = [format_scale(round(v, 2)) for v in job.scales]
    meta = provenance(sd.name, attrs, scales=",".join(captions), config=job.config, source=job.source,
                      held=held[0] if held else None, hold_form=job.hold_form, context=job.context)
    grid = save_png(image_grid(pics, captions), job.out, meta, overwrite=job.overwrite)
    frames = []
    if job.frames is not None:
        for v, pic in zip(captions, pics, strict=True):
            frames.append(save_png(pic, job.frames / f"{job.source.stem}.{job.attr.label}.{v}.png",
                                   {**meta, "caso:scales": v}, overwrite=job.overwrite))
    if job.gif is not None:
        big = [p.resize((max(128, p.width), max(128, p.height))) for p in pics]
        big[0].save(job.gif, save_all=True, append_images=big[1:] + big[-2:0:-1], duration=250, loop=0)
    return SweepResult(grid, captions, frames, job.gif, held[0] if held else {})
