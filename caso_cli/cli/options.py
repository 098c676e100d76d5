"""Option definitions shared by every command, so a flag means the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caso_cli.errors import CasoError, UsageError


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
