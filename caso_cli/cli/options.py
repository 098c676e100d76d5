"""Option definitions shared by every command, so a flag means the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", envvar="CASO_MODEL", show_envvar=True,
        help="Stable Diffusion to use: 'toy' (shipped), a hub id in the local HF cache, a diffusers folder, "
             "or a single-file .safetensors checkpoint. [default: stable-diffusion-v1-5/stable-diffusion-v1-5]",
    ),
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
