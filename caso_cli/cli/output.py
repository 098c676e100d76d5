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


class Progress:
    """A rich progress bar on stderr, shown only when stderr is a terminal (main process); a no-op otherwise."""

    def __init__(self, description: str, total: int | None) -> None:
        import sys

        from caso_cli.runtime import is_main_process

        self.enabled = sys.stderr.isatty() and is_main_process()  # one bar under accelerate launch
        self.description = description
        self.total = total
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                     console=Console(stderr=True), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, info="")
        return self

    def update(self, completed: int, info: str = "", total: int | None = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, info=info,
                             **({"total": total} if total is not None else {}))

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
