"""``caso reconstruct``: invert images and denoise them back, unguided or guided by their own class (paper §4.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.options import (
    AllowPickleOpt,
    BatchSizeOpt,
    DeviceOpt,
    DtypeOpt,
    EmbeddingModelOpt,
    JsonOpt,
    ModelConfigOpt,
    OverwriteOpt,
    QuietOpt,
    RecursiveOpt,
    RefineOpt,
    SizeOpt,
    SkipExistingOpt,
    StartOpt,
    StepsOpt,
    check_edit_options,
    edit_config,
    warn_scales,
)
from caso_cli.cli.output import print_batch, refuse_unreadable
from caso_cli.config import EditConfig, ModelChoice


def reconstruct_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders, globs, or '-' for stdin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("reconstructed"),
    attr: Annotated[str | None, typer.Option("--attr", "-a", help="NAME:CLASS of the class the images already "
                                                                  "have: guides the reconstruction.")] = None,
    scale: Annotated[str, typer.Option("--scale", "-s", help="Guidance scale with --attr.")] = "2",
    start: StartOpt = "1",
    steps: StepsOpt = 50,
    inversion_refine: RefineOpt = EditConfig.inversion_refine,
    recursive: RecursiveOpt = False,
    size: SizeOpt = None,
    batch_size: BatchSizeOpt = 4,
    overwrite: OverwriteOpt = False,
    skip_existing: SkipExistingOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    model: EmbeddingModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Invert images and denoise them back: unguided, or guided by the embedding of their own class (paper §4.3).

    Examples:

      caso reconstruct cats/ --out rec/

      caso reconstruct cats/ --attr species:cat --scale 2 --out rec/
    """
    from caso_cli.attrs import parse_scale, resolve_attrs
    from caso_cli.pipelines.batch_edit import EditJob, batch_inputs, open_batch

    attrs = resolve_attrs([attr], parse_scale(scale, "--scale")) if attr else []
    warn_scales([a.scale for a in attrs])
    config = edit_config(steps, start, False, inversion_refine)
    check_edit_options(size, batch_size=batch_size)
    job = EditJob(attrs=attrs, out_dir=out, config=config, size=size, batch_size=batch_size, overwrite=overwrite,
                  skip_existing=skip_existing, kind="recon")
    items = batch_inputs(inputs, recursive)
    refuse_unreadable(items, job.kind)  # before the model loads
    print_batch(open_batch(job, items, ModelChoice(model, model_config, device, dtype, allow_pickle)), quiet=quiet,
                json_out=json_out)
