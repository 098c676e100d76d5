"""``caso edit``: edit image files with learned embeddings."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from caso_cli.cli.options import (
    AllowPickleOpt,
    DeviceOpt,
    DtypeOpt,
    EmbeddingModelOpt,
    JsonOpt,
    ModelConfigOpt,
    OverwriteOpt,
    SizeOpt,
)
from caso_cli.cli.output import Progress, info, plural, print_json
from caso_cli.config import EditConfig, ModelChoice
from caso_cli.errors import EXIT_CHECK_FAILED, InputError, Interrupted, UsageError

if TYPE_CHECKING:
    from caso_cli.attrs import ResolvedAttr
    from caso_cli.pipelines.batch_edit import EditJob
    from caso_cli.registry import Embedding

AttrOpt = Annotated[list[str], typer.Option("--attr", "-a", help="NAME[:CLASS][=SCALE], repeatable: e.g. mustache, "
                                                                 "hair:blond=5, smile=-3.")]
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


def edit_config(steps: int, start: str, single_step: bool, refine: int = EditConfig.inversion_refine) -> EditConfig:
    """Validate --steps/--start and build the EditConfig; a timestep start is resolved on the loaded model's grid."""
    from caso_cli.attrs import parse_scale

    if steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    value = parse_scale(start, "--start")
    if 0 < value <= 1:
        return EditConfig(steps=steps, start=value, single_step=single_step, inversion_refine=refine)
    if value > 1 and value == int(value):
        return EditConfig(steps=steps, start_timestep=int(value), single_step=single_step, inversion_refine=refine)
    raise UsageError(f"--start must be a fraction in (0, 1] or a whole timestep above 1, got {start}")


def edit_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders, globs, or '-' to read paths from stdin.")],
    attr: AttrOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("edited"),
    scale: Annotated[str, typer.Option("--scale", "-s", help="Guidance scale for --attr without =SCALE; negative "
                                                             "reverses the edit.")] = "5",
    start: StartOpt = "0.6",
    steps: StepsOpt = 50,
    single_step: Annotated[bool, typer.Option("--single-step", help="Guide exactly one step (the first after "
                                                                    "inversion).")] = False,
    inversion_refine: RefineOpt = EditConfig.inversion_refine,
    hold: HoldOpt = None,
    hold_form: HoldFormOpt = "auto",
    context: ContextOpt = None,
    recursive: RecursiveOpt = False,
    size: SizeOpt = None,
    fit: Annotated[str, typer.Option("--fit", help="crop (centre crop), pad (white bars) or stretch.")] = "crop",
    batch_size: BatchSizeOpt = 4,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    quiet: QuietOpt = False,
    cache_inversions: Annotated[bool, typer.Option("--cache-inversions", help="Keep inversions on disk (user cache "
                                                                              "dir) for later runs.")] = False,
    json_out: JsonOpt = False,
    model: EmbeddingModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Edit images towards (or, with a negative scale, away from) learned attribute classes.

    One DDIM inversion per image (null condition), then denoising with classifier-free guidance on the embeddings.

    Several --attr with one scale build one multi-token condition (tokens in a fixed order, so the order of --attr
    does not matter); different scales give one guidance term each.

    Outputs are OUT/<stem>.<attr>.<scale>.png with provenance in PNG text chunks.

    Examples:

      caso edit photo.jpg --attr mustache --scale 5

      caso edit faces/ -r --attr smile=3 --attr hair:blond=5 --out edited/

      caso edit photo.jpg --attr mustache --hold all      # name every other known attribute as read

      find shots -name '*.png' | caso edit - --attr smile --out edited/ --json | jq .
    """
    from caso_cli.attrs import parse_scale, resolve_attrs
    from caso_cli.pipelines.batch_edit import EditJob

    attrs = resolve_attrs(attr, parse_scale(scale, "--scale"))
    warn_scales([a.scale for a in attrs])
    config = edit_config(steps, start, single_step, inversion_refine)
    check_edit_options(size, fit, batch_size, hold_form)
    job = EditJob(attrs=attrs, out_dir=out, config=config, size=size, fit=fit, batch_size=batch_size,
                  overwrite=overwrite, skip_existing=skip_existing, cache_inversions=cache_inversions,
                  hold=tuple(held_hint(hold or [], attrs)), hold_form=hold_form, context=context)
    run_batch(inputs, job, ModelChoice(model, model_config, device, dtype, allow_pickle), recursive=recursive,
              quiet=quiet, json_out=json_out)


def run_batch(inputs: list[str], job: EditJob, model: ModelChoice, *, recursive: bool, quiet: bool,
              json_out: bool) -> None:
    """Shared by edit and reconstruct: expand inputs, load the model, stream records, exit 1 on failures."""
    from caso_cli.io.inputs import expand_inputs
    from caso_cli.pipelines.batch_edit import open_model, run_edit_job, shard_size

    items = list(expand_inputs(inputs, recursive))
    if not items:
        raise UsageError("no input images")
    if all(item.error for item in items):  # nothing to do: say so before the model loads
        for item in items[:-1]:
            info(f"Error: {item.path}: {item.error}")
        last = f"{items[-1].path}: {items[-1].error}"
        raise InputError(last if len(items) == 1 else f"{last} (no input of {len(items)} can be read, so nothing "
                         f"was {'reconstructed' if job.kind else 'edited'})")
    sd = open_model(model, job.attrs)
    rt = sd.runtime
    counts = {"ok": 0, "skipped": 0, "error": 0}
    total = shard_size(len(items), rt.rank, rt.world_size)
    side = job.size or sd.resolution
    shrunk: list[tuple[int, int]] = []
    with Progress(job.kind or "edit", total) as bar, _interrupt_says(counts, total, job.kind):
        for rec in run_edit_job(sd, job, items):
            size_in = rec.info.get("input_size")
            if size_in and min(size_in) >= SHRINK_WARNING * side:
                shrunk.append(size_in)
            counts[rec.status] += 1
            bar.update(sum(counts.values()))
            with bar.paused():  # a path never lands inside the bar's line
                if rec.status == "error":
                    info(f"Error: {rec.error}")
                if json_out:  # one record per input, whatever happened
                    print_json({"input": rec.input, "output": rec.output, "status": rec.status,
                                **({"error": rec.error} if rec.status == "error" else {}),
                                "attr": [a.spec.name for a in job.attrs], "class": [a.cls for a in job.attrs],
                                "scale": [a.scale for a in job.attrs], "seconds": rec.seconds,
                                **({"held": rec.info.get("held", {}), "hold_form": job.hold_form}
                                   if job.hold else {})})
                elif rec.status == "ok" or (quiet and rec.status == "skipped"):
                    typer.echo(rec.output)
    if shrunk:  # e.g. photos through the 32-px toy model: say it once
        w, h = shrunk[0]
        info(f"Warning: {len(shrunk)} input(s) were shrunk {min(w, h) // side}x or more to the model's {side} px "
             f"(e.g. {w}x{h}); model {sd.name!r} works at {sd.resolution} px, so fine detail is lost "
             "(pass --model for a model made for such images, or --size)")
    info((f"process {rt.rank + 1}/{rt.world_size}: " if rt.world_size > 1 else "")
         + f"{counts['ok']} {'reconstructed' if job.kind else 'edited'}, {counts['skipped']} skipped, "
         f"{counts['error']} failed" + (f"; outputs in {job.out_dir}" if counts["ok"] else ""))
    if counts["error"]:
        sys.exit(EXIT_CHECK_FAILED)


@contextmanager
def _interrupt_says(counts: dict[str, int], total: int, kind: str) -> Iterator[None]:
    """Ctrl-C stops the batch with one line: how far it got and how to resume (outputs are written atomically, so
    every output on disk is complete)."""
    try:
        yield
    except KeyboardInterrupt:
        done = "reconstructed" if kind else "edited"
        # from None: where Ctrl-C landed explains nothing
        raise Interrupted(f"interrupted after {counts['ok']} of {plural(total, 'input')} {done} ({counts['skipped']} "
                          f"skipped, {counts['error']} failed); rerun the same command with --skip-existing to resume"
                          ) from None


SHRINK_WARNING = 8  # warn when inputs are this many times the model's side or more
USEFUL_SCALE = 15.0  # beyond it edits stop being images (measured on the toy model: docs/editing.md)


def warn_scales(scales: list[float]) -> None:
    """One warning line when a scale lies beyond the range models can use."""
    far = [s for s in scales if abs(s) > USEFUL_SCALE]
    if far:
        worst = max(far, key=abs)
        info(f"Warning: scale {worst:g} is beyond what a model can use (|scale| <= {USEFUL_SCALE:g}); past it "
             "images break down into noise (docs/editing.md)")


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


def held_hint(hold: list[str], attrs: list[ResolvedAttr]) -> list[Embedding]:
    """The embeddings --hold names (registry only, before any model loads); prints what ``all`` left out."""
    from caso_cli.pipelines.hold import held_embeddings

    held, warnings = held_embeddings(hold, [a.embedding for a in attrs])
    for w in warnings:
        info(f"Warning: {w}")
    if hold and not held:
        info("Warning: --hold found no other embedding to hold; editing without holding")
    return held
