"""Exception types. Each carries the exit code the CLI returns for it (docs/errors.md)."""

from __future__ import annotations

EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MODEL_LOAD = 4
EXIT_OUT_OF_MEMORY = 5  # no exception type: cli/app.py maps torch's out-of-memory errors to it
EXIT_NUMERIC = 6
EXIT_INTERRUPTED = 130


class CasoError(Exception):
    """Base class: a failure the user can act on, reported as one line."""

    exit_code: int = EXIT_USAGE


class CheckFailed(CasoError):
    """A requested check did not pass (e.g. ``eval --fail-under``)."""

    exit_code = EXIT_CHECK_FAILED


class UsageError(CasoError):
    """A bad option value or configuration."""

    exit_code = EXIT_USAGE


class InputError(CasoError):
    """An input file is missing, unreadable or not what it claims to be."""

    exit_code = EXIT_INPUT


class OutputExists(InputError):
    """An output is in the way and replacing it was not asked for; the message speaks of the library's value
    (``overwrite=True``), the CLI says its flag instead."""


class ModelLoadError(CasoError):
    """A model or its weights could not be found or loaded."""

    exit_code = EXIT_MODEL_LOAD


class NumericalError(CasoError):
    """NaN or inf appeared in latents, images or the loss (often fp16 overflow)."""

    exit_code = EXIT_NUMERIC


class Interrupted(CasoError):
    """The user interrupted the run (Ctrl-C)."""

    exit_code = EXIT_INTERRUPTED
