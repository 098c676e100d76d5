"""``caso embed list|show|verify|rm|path|export|import``: the local registry of learned embeddings
(``caso_cli.cli.app`` puts these under ``caso embed``, beside ``learn``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caso_cli.cli.help import CasoTyper
from caso_cli.cli.options import JsonOpt, OverwriteOpt
from caso_cli.cli.output import info, print_fields, print_json

app = CasoTyper()

NameArg = Annotated[str, typer.Argument(help="Embedding name in the registry.")]


@app.command("list")
def list_cmd(json_out: JsonOpt = False) -> None:
    """List the embeddings in the registry: name, classes and the model each was learned for.

    Examples:

      caso embed list

      caso embed list --json | jq -r .name
    """
    from caso_cli.registry import list_names, read_meta

    names = list_names()
    if not names:
        info("no embeddings in the registry yet (caso embed learn, or caso demo)")
    elif not json_out:
        typer.echo(f"{'NAME':24} {'CLASSES':32} MODEL")
    for name in names:
        meta = read_meta(name)
        if json_out:
            print_json({"name": name, "classes": meta.get("classes"), "model": meta.get("model"),
                        "created": meta.get("created")})
        else:
            typer.echo(f"{name:24} {', '.join(meta.get('classes', [])):32} {meta.get('model', '')}")


@app.command("show")
def show_cmd(name: NameArg, json_out: JsonOpt = False) -> None:
    """Show an embedding's metadata (classes, model, classifier, hyperparameters, data, metrics).

    Examples:

      caso embed show toy-mustache

      caso embed show toy-mustache --json | jq .metrics
    """
    from caso_cli.registry import read_meta

    meta = read_meta(name)
    if json_out:
        print_json(meta)
    else:
        print_fields(meta)


@app.command("verify")
def verify_cmd(json_out: JsonOpt = False) -> None:
    """Check every registry entry's file hash, shape and metadata; exit 1 if any is broken.

    Example:

      caso embed verify
    """
    import sys

    from caso_cli.errors import EXIT_CHECK_FAILED
    from caso_cli.registry import verify

    results = verify()
    for name, status in results.items():
        if json_out:
            print_json({"name": name, "ok": status == "ok", "problem": None if status == "ok" else status})
        else:
            typer.echo(f"{name:24} {status}")
    bad = [n for n, s in results.items() if s != "ok"]
    info(f"{len(results) - len(bad)} ok, {len(bad)} broken")
    if bad:
        sys.exit(EXIT_CHECK_FAILED)


@app.command("rm")
def rm_cmd(name: NameArg, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Delete an embedding from the registry.

    Examples:

      caso embed rm toy-mustache

      caso embed rm toy-mustache --yes      (no question: for scripts)
    """
    import sys

    from caso_cli.registry import read_meta, remove

    read_meta(name)  # fails clearly when missing
    if not yes:
        if not sys.stdin.isatty():
            from caso_cli.errors import UsageError

            raise UsageError(f"refusing to delete {name!r} without confirmation; pass --yes")
        typer.confirm(f"delete embedding {name!r}?", abort=True, err=True)
    remove(name)
    info(f"deleted {name}")


@app.command("path")
def path_cmd(name: Annotated[str | None, typer.Argument(help="An embedding (default: the registry).")] = None) -> None:
    """Print the registry folder, or one embedding's folder.

    Examples:

      caso embed path

      ls "$(caso embed path toy-mustache)"
    """
    from caso_cli.registry import read_meta, registry_dir

    if name is None:
        typer.echo(str(registry_dir()))
    else:
        read_meta(name)
        typer.echo(str(registry_dir() / name))


@app.command("export")
def export_cmd(
    name: NameArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the files (one per class).")],
    fmt: Annotated[str, typer.Option("--format", help="diffusers ({'<token>': vector}) or a1111 "
                                                      "({'emb_params': ...}, token = file name).")] = "diffusers",
    overwrite: OverwriteOpt = False,
) -> None:
    """Export as textual-inversion files that any Stable Diffusion tool loads.

    One file per class, named by its token: in diffusers, pipe.load_textual_inversion("ti/<mustache>.safetensors")
    and prompt "<mustache>".

    Examples:

      caso embed export mustache --out ti/

      caso embed export mustache --out ti/ --format a1111
    """
    from caso_cli.textual_inversion import export

    for path in export(name, out, fmt, overwrite):
        typer.echo(str(path))


@app.command("import")
def import_cmd(
    files: Annotated[list[Path], typer.Argument(help="One textual-inversion .safetensors per class, in class order.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Registry name.")],
    model: Annotated[str | None, typer.Option("--model", help="Model the vectors were learned for (recorded).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing embedding.")] = False,
) -> None:
    """Import textual-inversion files (diffusers or A1111 safetensors) as one embedding.

    Example:

      caso embed import "ti/<no_mustache>.safetensors" "ti/<mustache>.safetensors" --name mustache2 --model toy
    """
    from caso_cli.textual_inversion import import_files

    typer.echo(str(import_files(list(files), name, {"model": model} if model else None, force=force)))
