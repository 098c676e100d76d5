"""``caso generate``: images from noise guided by learned class embeddings alone (docs/method.md §5)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.options import (
    AllowPickleOpt,
    DeviceOpt,
    DtypeOpt,
    EmbeddingModelOpt,
    JsonOpt,
    ModelConfigOpt,
    OverwriteOpt,
    SeedOpt,
    SizeOpt,
    StepsOpt,
    check_edit_options,
    edit_config,
    refuse_existing,
    warn_scales,
)
from caso_cli.cli.output import print_json
from caso_cli.config import ModelChoice


def generate_cmd(
    attr: Annotated[list[str], typer.Option("--attr", "-a", help="NAME[:CLASS], repeatable (one multi-token "
                                                                 "condition).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Grid PNG, or a folder (DIR/) for one PNG per image and "
                                                          "the grid.")] = "generated.png",
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=256, help="Number of images.")] = 8,
    scale: Annotated[str, typer.Option("--scale", "-s", help="Classifier-free guidance scale.")] = "5",
    steps: StepsOpt = 50,
    size: SizeOpt = None,
    frames: Annotated[Path | None, typer.Option("--frames", help="Also write each image as a PNG here.")] = None,
    overwrite: OverwriteOpt = False,
    model: EmbeddingModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Generate images from noise guided by learned class embeddings alone (no prompt).

    Examples:

      caso generate --attr species:cat --n 8 --seed 1 --out cats.png

      caso generate --attr toy-mustache --attr toy-glasses --n 16 --out both.png

      caso generate --attr toy-mustache --n 4 --out samples/      (samples/toy-mustache.0.000.png ... and a grid)
    """
    from caso_cli.attrs import parse_scale, resolve_attrs
    from caso_cli.pipelines.batch_edit import open_model
    from caso_cli.pipelines.generate import GenerateJob, run_generate

    w = parse_scale(scale, "--scale")
    warn_scales([w])
    attrs = resolve_attrs(attr, w)
    edit_config(steps, "1", False)  # the --steps check
    check_edit_options(size)
    grid = Path(out)
    if out.endswith(("/", os.sep)) or grid.is_dir():  # a folder: every image, and the grid beside them
        frames = grid
        grid = grid / f"{'+'.join(a.label for a in attrs)}.{seed}.grid.png"
    refuse_existing(grid, overwrite)
    job = GenerateJob(attrs=attrs, out=grid, n=n, scale=w, steps=steps, seed=seed, size=size, frames=frames,
                      overwrite=overwrite)
    paths = run_generate(open_model(ModelChoice(model, model_config, device, dtype, allow_pickle), attrs), job)
    if json_out:
        print_json({"output": str(grid), "images": [str(p) for p in paths[1:]], "n": n, "seed": seed,
                    "class": [a.cls for a in attrs], "scale": w})
    else:
        typer.echo(str(grid))
