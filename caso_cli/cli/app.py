"""Root of the ``caso`` command: wires the built-in command groups, then the plug-ins' commands (the
``caso_cli.commands`` entry points), and maps errors to exit codes."""

from __future__ import annotations

import contextlib
import io
import os
import sys

import typer

from caso_cli import __version__
from caso_cli.cli.help import CasoTyper
from caso_cli.errors import EXIT_INTERRUPTED, EXIT_OUT_OF_MEMORY, CasoError
from caso_cli.plugins import COMMANDS, load_entry_points, warn_plugin

HELP = (
    "Edit images with Stable Diffusion through embeddings learned from a frozen attribute "
    "classifier (CASO, IJCAI 2025).\n\n"
    "Errors are one line on stderr; set CASO_DEBUG=1 for the traceback. "
    "Exit codes: 0 ok, 1 check failed, 2 usage, 3 input, 4 model load, 5 out of memory, "
    "6 NaN/inf, 130 interrupted (docs/errors.md).\n\n"
    "Examples:\n\n"
    "  caso demo      (the whole method on the toy world, offline on the CPU)\n\n"
    "  caso edit caso-demo/data/images/000000.png --attr toy-mustache --out caso-demo/edited\n\n"
    "  caso edit --help"
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"caso {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """caso root options."""


def make_app() -> CasoTyper:
    """The ``caso`` command: the built-in commands, then those of every ``caso_cli.commands`` entry point (a
    function that receives the app; one that fails is skipped with a warning line on stderr)."""
    root = CasoTyper(name="caso", help=HELP, no_args_is_help=True, add_completion=False,
                     pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})
    root.callback()(_root)
    _register_builtins(root)
    for ep, register in load_entry_points(COMMANDS):
        try:
            register(root)
        except Exception as exc:  # noqa: BLE001 - a plug-in's own bug must not take caso down
            warn_plugin(ep, COMMANDS, exc)
    return root


def _register_builtins(root: CasoTyper) -> None:
    # Each module defines its commands; none imports torch. Registration order is --help's order.
    from caso_cli.cli import (
        classifier,
        edit,
        embed,
        evaluate,
        generate,
        interpolate,
        misc,
        model,
        reconstruct,
        registry,
    )

    root.add_typer(classifier.app, name="classifier")
    embed_group = CasoTyper(help=embed.HELP, no_args_is_help=True)  # learn, then the registry commands
    embed_group.add_typer(embed.app)
    embed_group.add_typer(registry.app)
    root.add_typer(embed_group, name="embed")
    root.command("edit")(edit.edit_cmd)
    root.command("interpolate")(interpolate.interpolate_cmd)
    root.command("reconstruct")(reconstruct.reconstruct_cmd)
    root.command("generate")(generate.generate_cmd)
    root.command("eval")(evaluate.eval_cmd)
    root.add_typer(model.app, name="model")
    root.command("path")(misc.path_cmd)


app = make_app()


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _raw_paths_on_stdout() -> None:
    """Print file names that are not valid UTF-8 as their original bytes instead of failing."""
    stdout = sys.stdout
    if stdout is sys.__stdout__ and isinstance(stdout, io.TextIOWrapper) and stdout.errors == "strict":
        with contextlib.suppress(ValueError, OSError):
            stdout.reconfigure(errors="surrogateescape")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: run the app, turn known failures into one line."""
    debug = os.environ.get("CASO_DEBUG", "") not in ("", "0")
    _raw_paths_on_stdout()
    try:
        code = app(args=argv, standalone_mode=False)
    except CasoError as exc:
        if debug:
            raise
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("Error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except RuntimeError as exc:
        if not _is_oom(exc) or debug:
            raise
        typer.echo(f"Error: out of memory: {str(exc).splitlines()[0]} (try a smaller --batch-size or --size)",
                   err=True)
        sys.exit(EXIT_OUT_OF_MEMORY)
    except typer.Abort:
        typer.echo("Error: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as exc:  # usage errors found by the parser
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(exc, "exit_code", 2))
    if code == EXIT_INTERRUPTED:  # typer turns a Ctrl-C that no command caught into a silent exit code
        typer.echo("Error: interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)
