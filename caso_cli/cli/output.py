"""Writing results: data on stdout, messages on stderr."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import typer


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout."""
    typer.echo(json.dumps(obj, ensure_ascii=False, default=str))


def print_fields(facts: Mapping[str, Any]) -> None:
    """``key value`` lines on stdout, no Python reprs: nested mappings as dotted keys, lists joined by commas."""
    flat = _flat(facts)
    width = max(map(len, flat), default=0)
    for key, value in flat.items():
        typer.echo(f"{key:{width}}  {value}")


def _flat(facts: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in facts.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):  # rows: one key each
            out.update(_flat({str(i): v for i, v in enumerate(value)}, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            out[prefix + key] = ", ".join(_plain(v) for v in value)
        else:
            out[prefix + key] = _plain(value)
    return out


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def info(message: str) -> None:
    """A human message on stderr."""
    typer.echo(message, err=True)


def plural(n: int, word: str) -> str:
    """``1 scale``, ``2 scales``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


class Progress:
    """A rich progress bar on stderr, shown only when stderr is a terminal (main process); a no-op otherwise.

    Lines printed while it runs go through :meth:`paused` (or :meth:`info`), so that they never mix with the bar on a
    terminal; the bar is cleared when it ends.
    """

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
                                     console=Console(stderr=True), transient=True, redirect_stdout=False,
                                     redirect_stderr=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, info="")
        return self

    def update(self, completed: int, info: str = "", total: int | None = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, info=info,
                             **({"total": total} if total is not None else {}))

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Clear the bar while lines are printed (on stdout or stderr), then draw it again below them."""
        if self._bar is None:
            yield
            return
        self._bar.stop()
        try:
            yield
        finally:
            self._bar.start()

    def info(self, message: str) -> None:
        """A human message on stderr while the bar runs."""
        with self.paused():
            info(message)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
