"""Small root commands: ``caso path``."""

from __future__ import annotations

import typer


def path_cmd(
    cache: bool = typer.Option(False, "--cache", help="Print the cache directory instead."),
) -> None:
    """Print the user data directory ($CASO_HOME, else the platform's user data dir).

    Examples:

      caso path

      caso path --cache
    """
    from caso_cli.io.paths import cache_dir, user_dir

    typer.echo(str(cache_dir() if cache else user_dir()))
