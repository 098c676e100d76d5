"""Option definitions and option parsing shared by the commands, so a flag means the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from caso_cli.cli.output import info
from caso_cli.config import EditConfig
from caso_cli.errors import CasoError, InputError, UsageError

if TYPE_CHECKING:
    from caso_cli.attrs import ResolvedAttr
    from caso_cli.registry import Embedding


def is_classifier_file(value: str) -> bool:
    """Whether ``value`` names a caso classifier file: ``*.clf``, ``*.clf.safetensors``, or a safetensors file that
    holds classifier metadata."""
    path = Path(value).expanduser()
    if path.name.endswith((".clf", ".clf.safetensors")):
        return True
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from caso_cli.models.classifier import read_classifier_meta

    try:
        read_classifier_meta(path)
    except CasoError:  # not a classifier: a model checkpoint, or something the loader will judge
        return False
    return True


def _model_callback(value: str | None) -> str | None:
    """--model takes a Stable Diffusion model: a classifier file there is a usage error, said before any loading."""
    if value and is_classifier_file(value):
        raise UsageError(f"{value}: that is a classifier file; --model takes a Stable Diffusion model ('toy', a hub "
                         "id, a diffusers folder or a single-file checkpoint), classifiers go to --classifier")
    return value


_MODEL_HELP = ("Stable Diffusion to use: 'toy' (shipped), a hub id in the local HF cache, a diffusers folder, "
               "or a single-file .safetensors checkpoint.")
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", envvar="CASO_MODEL", show_envvar=True, callback=_model_callback,
                 help=f"{_MODEL_HELP} [default: stable-diffusion-v1-5/stable-diffusion-v1-5]"),
]
#: --model of the commands that use embeddings: by default the model the embeddings were learned for
EmbeddingModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", envvar="CASO_MODEL", show_envvar=True, callback=_model_callback,
                 help=f"{_MODEL_HELP} [default: the model the --attr embeddings record, else "
                      "stable-diffusion-v1-5/stable-diffusion-v1-5]"),
]
ModelConfigOpt = Annotated[
    str | None,
    typer.Option("--model-config", help="Diffusers folder (or cached hub id) holding the configs of a "
                                        "single-file --model checkpoint."),
]
AllowPickleOpt = Annotated[
    bool,
    typer.Option("--allow-pickle", help="Allow legacy .ckpt/.pt files, which can run code when loaded. "
                                        "Only for files you trust."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cuda, cuda:N, mps or cpu.")
]
DtypeOpt = Annotated[
    str, typer.Option("--dtype", help="auto (fp16 on CUDA, fp32 elsewhere), fp32, fp16 or bf16.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (one seed, same result on any device).")]
SizeOpt = Annotated[int | None, typer.Option("--size", help="Image side [default: the model's resolution]")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]

# ---- the image commands' options (edit, interpolate, reconstruct, generate) -------------------------------------

StepsOpt = Annotated[int, typer.Option("--steps", help="DDIM steps of the full trajectory.")]
StartOpt = Annotated[str, typer.Option("--start", help=(
    "Where guidance starts: a fraction of the trajectory (0 < f <= 1; 1 = from pure noise) or a timestep (a whole "
    "number > 1: the largest timestep <= it on the loaded model's own DDIM grid)."))]
HoldOpt = Annotated[list[str] | None, typer.Option(
    "--hold", help="Name this attribute at the class its classifier reads in each input (repeatable), or 'all': "
                   "one embedding per other attribute learned for the same model. The condition then names the "
                   "edited class with the held ones; on the toy world that keeps the others on 23-86% of faces, "
                   "not all (docs/results-2026-12-05.md).")]
HoldFormOpt = Annotated[str, typer.Option(
    "--hold-form", help="Guidance with --hold: delta = null + w (target - source), source = source + w (target - "
                        "source), null = null + w (target - null); auto = source for w >= 0, delta for w < 0 (the "
                        "best measured on the toy world: docs/results-2026-12-05.md).")]
ContextOpt = Annotated[str | None, typer.Option(
    "--context", help="Word context for entries learned in context, with {} where the token goes (default: the "
                      "entry's own, e.g. 'a photo of a face with {}'); the edit is the difference from it. With "
                      "--hold, the held classes are named in it.")]
RefineOpt = Annotated[int, typer.Option("--inversion-refine", min=0, max=10,
                                        help="Fixed-point refinements per inversion step (0: plain DDIM inversion; "
                                             "each costs one more UNet call per step).")]
# the batch options of edit and reconstruct
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Images per device batch.")]
SkipExistingOpt = Annotated[bool, typer.Option("--skip-existing", help="Leave existing outputs (resume a stopped "
                                                                       "run).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only output paths.")]

USEFUL_SCALE = 15.0  # beyond it edits stop being images (measured on the toy model: docs/editing.md)


def edit_config(steps: int, start: str, single_step: bool, refine: int = EditConfig.inversion_refine) -> EditConfig:
    """--steps/--start as an EditConfig (:meth:`EditConfig.starting_at`: a timestep start is resolved on the loaded
    model's grid)."""
    from caso_cli.attrs import parse_scale

    return EditConfig.starting_at(parse_scale(start, "--start"), steps=steps, single_step=single_step,
                                  inversion_refine=refine)


def check_edit_options(size: int | None, fit: str = "crop", batch_size: int = 1, hold_form: str = "auto") -> None:
    """The option checks of the image commands (each passes those it has), before anything is read or loaded."""
    from caso_cli.io.images import FIT_MODES
    from caso_cli.pipelines.hold import FORMS

    if fit not in FIT_MODES:
        raise UsageError(f"--fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if size is not None and (size < 8 or size % 8):
        raise UsageError(f"--size must be a positive multiple of 8, got {size}")
    if hold_form not in FORMS:
        raise UsageError(f"--hold-form must be one of {', '.join(FORMS)}, got {hold_form!r}")


def warn_scales(scales: list[float]) -> None:
    """One warning line when a scale lies beyond the range models can use."""
    far = [s for s in scales if abs(s) > USEFUL_SCALE]
    if far:
        worst = max(far, key=abs)
        info(f"Warning: scale {worst:g} is beyond what a model can use (|scale| <= {USEFUL_SCALE:g}); past it "
             "images break down into noise (docs/editing.md)")


def held_hint(hold: list[str], attrs: list[ResolvedAttr]) -> list[Embedding]:
    """The embeddings --hold names (registry only, before any model loads); prints what ``all`` left out."""
    from caso_cli.pipelines.hold import held_embeddings

    held, warnings = held_embeddings(hold, [a.embedding for a in attrs])
    for w in warnings:
        info(f"Warning: {w}")
    if hold and not held:
        info("Warning: --hold found no other embedding to hold; editing without holding")
    return held


def parse_scales(text: str) -> list[float]:
    """``-6:6:7`` (start:stop:count, ends included) or a list ``-4,0,4``."""
    from caso_cli.attrs import parse_scale

    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise UsageError(f"--scales range must be START:STOP:COUNT, got {text!r}")
        a, b = parse_scale(parts[0], "--scales start"), parse_scale(parts[1], "--scales stop")
        try:
            n = int(parts[2])
        except ValueError as exc:
            raise UsageError(f"--scales count must be an integer, got {parts[2]!r}") from exc
        if not 2 <= n <= 64:
            raise UsageError(f"--scales count must be between 2 and 64, got {n}")
        return [a + (b - a) * i / (n - 1) for i in range(n)]
    values = [parse_scale(p, "--scales value") for p in text.split(",") if p.strip()]
    if not values:
        raise UsageError("--scales is empty")
    return values


def parse_t_train(text: str) -> tuple[int, int | None]:
    """``201`` -> (201, None); ``201:401`` -> (201, 401); ``auto`` -> (-1, None)."""
    if text == "auto":
        return -1, None
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 2 and parts[0] <= parts[1]:
        return parts[0], parts[1]
    raise UsageError(f"--t-train {text!r}: use auto, a timestep (201) or a range LOW:HIGH (201:401)")


def refuse_existing(path: Path, overwrite: bool) -> None:
    """An output file that exists is an input error unless --overwrite."""
    if path.exists() and not overwrite:
        raise InputError(f"{path}: exists (use --overwrite)")
