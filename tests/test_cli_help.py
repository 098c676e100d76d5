"""Every command's --help reads plainly: an example, no odd metavars, brackets and defaults kept, no stray breaks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer

from caso_cli import __version__
from caso_cli.cli.app import app
from tests.tiny import run_main


def _walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, [*path, name])


COMMANDS = dict((" ".join(path), command) for path, command in _walk(typer.main.get_command(app), []))


_HELPS: dict[str, str] = {}  # `caso NAME --help`, rendered once per session (the same text each time)


def _help(name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    if name not in _HELPS:
        monkeypatch.setenv("COLUMNS", "1000")  # wide enough for any paragraph: a line break in the output is a real one
        code, out, err = run_main([*name.split(), "--help"], capsys)
        assert code == 0, err
        _HELPS[name] = out
    return _HELPS[name]


@pytest.mark.parametrize("name", list(COMMANDS), ids=lambda n: n or "caso")
def test_help_reads_plainly(name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = _help(name, capsys, monkeypatch)
    lines = [line.strip(" │") for line in out.splitlines()]
    # an example section: a heading, then a command line
    heading = next((i for i, line in enumerate(lines) if re.fullmatch(r"Examples?:", line)), None)
    assert heading is not None, f"no Example section in `caso {name} --help`"
    assert any("caso " in line for line in lines[heading + 1:heading + 4]), lines[heading:heading + 4]
    # flags take no value, so they show no type; arguments are written as click does (DATA, INPUTS...)
    assert "<bool>" not in out
    assert "<list[" not in out  # a repeatable option or a list argument shows the type of one value
    usage = next(line for line in lines if line.startswith("Usage:"))
    assert not re.search(r"\{\w+\}", usage), usage
    for word in usage.split("[OPTIONS]", 1)[1].split():
        assert word.strip("[].") == word.strip("[].").upper(), usage
    # the method is cited as docs/method.md, not a METHOD file the repository does not have
    assert not re.search(r"\bMETHOD\b", out)
    # every paragraph of the description is one line (no line breaks where the source wrapped), brackets kept
    command = COMMANDS[name]
    for paragraph in (command.help or "").replace("\\[", "[").split("\n\n"):
        if paragraph.strip():
            assert any(paragraph.strip() in line for line in lines), paragraph


def test_every_option_and_argument_is_documented() -> None:
    undocumented = [f"caso {name} {param.opts[0]}" for name, command in COMMANDS.items() for param in command.params
                    if not (getattr(param, "help", None) or "").strip()]
    assert not undocumented


def test_rich_markup_does_not_eat_brackets(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert "needs caso[vgg]" in _help("classifier fit", capsys, monkeypatch)
    for name, command in COMMANDS.items():
        if any(param.name == "size" for param in command.params):  # --size shows its default
            assert "Image side [default: the model's resolution]" in _help(name, capsys, monkeypatch), name
    assert "[default: stable-diffusion-v1-5/stable-diffusion-v1-5]" in _help("embed learn", capsys, monkeypatch)
    # commands that edit with embeddings use the model those record unless told (issue 27 item 9)
    for name in ("edit", "interpolate", "generate", "reconstruct"):
        assert "[default: the model the --attr embeddings record, else" in _help(name, capsys, monkeypatch), name


def test_demo_force_is_an_on_off_pair(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    force = next(p for p in COMMANDS["demo"].params if p.name == "force")
    assert force.opts == ["--force"] and force.secondary_opts == ["--no-force"] and force.default is True
    assert "--no-force" in _help("demo", capsys, monkeypatch)


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_short_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main([flag], capsys)
    assert code == 0 and out.strip() == f"caso {__version__}"


def test_every_command_that_loads_a_model_takes_allow_pickle() -> None:
    """--allow-pickle exists wherever --model names a model that is loaded, and nowhere else."""
    taking = {name for name, command in COMMANDS.items() if any("--allow-pickle" in p.opts for p in command.params)}
    assert taking == {"edit", "interpolate", "reconstruct", "generate", "embed learn", "model info"}
