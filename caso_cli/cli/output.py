"""Writing results: data on stdout, messages on stderr."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from caso_cli.errors import InputError, Interrupted

if TYPE_CHECKING:
    from caso_cli.io.inputs import InputItem
    from caso_cli.pipelines.batch_edit import Batch


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


# ---- a batch of edits (caso edit, caso reconstruct) ---------------------------------------------------------------

def refuse_unreadable(items: list[InputItem], kind: str = "") -> None:
    """When no input of a batch can be read, say so, one line per input, before any model loads (exit 3)."""
    if not all(item.error for item in items):
        return
    for item in items[:-1]:
        info(f"Error: {item.path}: {item.error}")
    last = f"{items[-1].path}: {items[-1].error}"
    raise InputError(last if len(items) == 1 else f"{last} (no input of {len(items)} can be read, so nothing was "
                     f"{'reconstructed' if kind else 'edited'})")


def print_batch(batch: Batch, *, quiet: bool, json_out: bool) -> None:
    """Run a batch with a progress bar: each output path (or, with ``json_out``, one record per input) on stdout,
    errors and a summary on stderr; exit 1 when an input failed."""
    import sys

    from caso_cli.errors import EXIT_CHECK_FAILED

    job, sd = batch.job, batch.sd
    counts, done = batch.counts, "reconstructed" if job.kind else "edited"
    with Progress(job.kind or "edit", batch.total) as bar, _interrupt_says(counts, batch.total, done):
        for rec in batch.run():
            bar.update(sum(counts.values()))
            with bar.paused():  # a path never lands inside the bar's line
                if rec.status == "error":
                    info(f"Error: {rec.error}")
                if json_out:  # one record per input, whatever happened
                    print_json({"input": rec.input, "output": rec.output, "status": rec.status,
                                **({"error": rec.error} if rec.status == "error" else {}),
                                "attr": [a.spec.name for a in job.attrs], "class": [a.cls for a in job.attrs],
                                "scale": [a.scale for a in job.attrs], "seconds": rec.seconds,
                                **({"held": rec.info.get("held", {}), "hold_form": job.hold_form}
                                   if job.hold else {})})
                elif rec.status == "ok" or (quiet and rec.status == "skipped"):
                    typer.echo(rec.output)
    if batch.shrunk:  # e.g. photos through the 32-px toy model: say it once
        w, h = batch.shrunk[0]
        info(f"Warning: {len(batch.shrunk)} input(s) were shrunk {min(w, h) // batch.side}x or more to the model's "
             f"{batch.side} px (e.g. {w}x{h}); model {sd.name!r} works at {sd.resolution} px, so fine detail is lost "
             "(pass --model for a model made for such images, or --size)")
    rt = sd.runtime
    info((f"process {rt.rank + 1}/{rt.world_size}: " if rt.world_size > 1 else "")
         + f"{counts['ok']} {done}, {counts['skipped']} skipped, {counts['error']} failed"
         + (f"; outputs in {job.out_dir}" if counts["ok"] else ""))
    if counts["error"]:
        sys.exit(EXIT_CHECK_FAILED)


@contextmanager
def _interrupt_says(counts: dict[str, int], total: int, done: str) -> Iterator[None]:
    """Ctrl-C stops the batch with one line: how far it got and how to resume (outputs are written atomically, so
    every output on disk is complete)."""
    try:
        yield
    except KeyboardInterrupt:
        # from None: where Ctrl-C landed explains nothing
        raise Interrupted(f"interrupted after {counts['ok']} of {plural(total, 'input')} {done} ({counts['skipped']} "
                          f"skipped, {counts['error']} failed); rerun the same command with --skip-existing to resume"
                          ) from None
