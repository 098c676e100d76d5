"""``caso model``: find and inspect Stable Diffusion models."""

from __future__ import annotations

import typer

from caso_cli.cli.help import CasoTyper
from caso_cli.cli.options import AllowPickleOpt, DeviceOpt, DtypeOpt, JsonOpt, ModelConfigOpt, ModelOpt
from caso_cli.cli.output import print_json

app = CasoTyper(help="Find and inspect Stable Diffusion models.\n\nExample:\n\n  caso model info --model toy",
                no_args_is_help=True)


@app.command("info")
def info_cmd(
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    allow_pickle: AllowPickleOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Load a model and print what caso needs to know about it.

    Examples:

      caso model info --model toy

      caso model info --model ./my-sd-folder --json

      caso model info --model v1-5-pruned.safetensors --model-config ./sd15-configs
    """
    from caso_cli.models.loaders import load_model
    from caso_cli.runtime import make_runtime

    sd = load_model(model, make_runtime(device, dtype), config=model_config, allow_pickle=allow_pickle)
    facts = sd.describe()
    if json_out:
        print_json(facts)
        return
    for key, value in facts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:,}" for k, v in value.items())
        typer.echo(f"{key:20} {value}")
