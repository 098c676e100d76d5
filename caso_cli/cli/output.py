"""Writing results: data on stdout, messages on stderr."""

from __future__ import annotations

import json
from typing import Any

import typer


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout."""
    typer.echo(json.dumps(obj, ensure_ascii=False, default=str))


def info(message: str) -> None:
    """A human message on stderr."""
    typer.echo(message, err=True)
