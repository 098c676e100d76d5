"""``caso interpolate``: sweep one embedding's guidance scale over an image (docs/method.md §5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.options import (
    AllowPickleOpt,
    ContextOpt,
    DeviceOpt,
    DtypeOpt,
    EmbeddingModelOpt,
    HoldFormOpt,
    HoldOpt,
    JsonOpt,
    ModelConfigOpt,
    OverwriteOpt,
    RefineOpt,
    SizeOpt,
    StartOpt,
    StepsOpt,
    check_edit_options,
    edit_config,
    held_hint,
    parse_scales,
    refuse_existing,
    warn_scales,
)
from caso_cli.cli.output import info, plural, print_json
from caso_cli.config import EditConfig, ModelChoice


def interpolate_cmd(
    input: Annotated[Path, typer.Argument(help="The image to sweep.")],
    attr: Annotated[str, typer.Option("--attr", "-a", help="NAME[:CLASS] of the embedding to sweep.")],
    scales: Annotated[str, typer.Option("--scales", help="START:STOP:COUNT or a list like -4,0,4.")] = "-6:6:7",
    out: Annotated[Path, typer.Option("--out", "-o", help="Grid PNG with each cell's scale under it.")] =
    Path("sweep.png"),
    gif: Annotated[Path | None, typer.Option("--gif", help="Also write an animated GIF of the sweep.")] = None,
    frames: Annotated[Path | None, typer.Option("--frames", help="Also write each frame as a PNG here.")] = None,
    start: StartOpt = "0.6",
    steps: StepsOpt = 50,
    inversion_refine: RefineOpt = EditConfig.inversion_refine,
    hold: HoldOpt = None,
    hold_form: HoldFormOpt = "auto",
    context: ContextOpt = None,
    size: SizeOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    model: EmbeddingModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Sweep one attribute's guidance scale over an image: one inversion, all scales in one batch.

    Examples:

      caso interpolate photo.jpg --attr bushy_eyebrows --scales -6:6:7 --out sweep.png --gif sweep.gif

      caso interpolate photo.jpg --attr mustache --hold all --out sweep.png   # the other attributes named as read
    """
    from caso_cli.attrs import resolve_attrs
    from caso_cli.pipelines.batch_edit import open_model
    from caso_cli.pipelines.interpolate import SweepJob, run_sweep

    values = parse_scales(scales)
    warn_scales(values)
    attrs = resolve_attrs([attr], 1.0)
    config = edit_config(steps, start, False, inversion_refine)
    check_edit_options(size, hold_form=hold_form)
    job = SweepJob(source=input, attr=attrs[0], scales=tuple(values), out=out, config=config, gif=gif, frames=frames,
                   size=size, hold=tuple(held_hint(hold or [], attrs)), hold_form=hold_form, overwrite=overwrite,
                   context=context)
    for path in (out, gif):
        if path is not None:
            refuse_existing(path, overwrite)
    result = run_sweep(open_model(ModelChoice(model, model_config, device, dtype, allow_pickle), attrs), job)
    info(f"{plural(len(values), 'scale')} from one inversion: {', '.join(result.captions)}")
    if json_out:
        print_json({"input": str(input), "grid": str(result.grid), "scales": values,
                    "frames": [str(f) for f in result.frames], "gif": None if result.gif is None else str(result.gif),
                    "held": result.held})
    else:
        typer.echo(str(result.grid))
