"""Plug-ins come from entry points: the toy world's model, oracle and commands through ``caso_cli.plugins`` and
``caso_cli.commands`` (pyproject.toml), as a third-party package's would; a broken plug-in is skipped with one
warning line and never breaks caso."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from caso_cli import plugins
from caso_cli.cli.app import app, make_app
from caso_cli.plugins import COMMANDS, PLUGINS, Lookup, load_entry_points


@dataclass
class FakeEntryPoint:
    """What caso reads of an entry point: its name, value and group, and load() (which fails with ``target`` when that
    is an exception)."""

    name: str
    value: str
    group: str
    target: Any = None

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> list[FakeEntryPoint]:
    """Entry points as the list this returns says (empty: none at all), loaded afresh."""
    found: list[FakeEntryPoint] = []
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [e for e in found if e.group == group])
    monkeypatch.setattr(plugins, "_LOADED", {})
    return found


def _commands(root: typer.Typer) -> set[str]:
    return set(typer.main.get_command(root).commands)  # type: ignore[attr-defined]


def test_the_toy_world_is_declared_as_a_plugin() -> None:
    declared = {(e.group, e.name): e.value for group in (PLUGINS, COMMANDS)
                for e in importlib.metadata.entry_points(group=group)}
    assert declared[PLUGINS, "toy"] == "caso_cli.toyworld"
    assert declared[COMMANDS, "toyworld"] == "caso_cli.toyworld.cli:register"
    assert {"demo", "toyworld"} <= _commands(app)


def test_without_its_entry_points_there_is_no_toy_world() -> None:
    """With the entry points gone, ``toy`` is no model, oracle, phrasebook or caption language, and ``caso demo`` /
    ``caso toyworld`` no command; the toy world is not even imported (a fresh interpreter: the lookups fill once per
    process)."""
    code = ("import importlib.metadata as md, sys\n"
            "md.entry_points = lambda group=None: []\n"
            "import typer\n"
            "from caso_cli.cli.app import app\n"
            "from caso_cli.eval.oracles import oracle_names\n"
            "from caso_cli.models.loaders import local_model_names\n"
            "from caso_cli.contexts import CAPTION_CONTEXTS, PHRASEBOOKS\n"
            "print(local_model_names(), oracle_names(), dict(PHRASEBOOKS.load()), dict(CAPTION_CONTEXTS.load()),\n"
            "      sorted({'demo', 'toyworld'} & set(typer.main.get_command(app).commands)),\n"
            "      [m for m in sys.modules if m.startswith('caso_cli.toyworld')])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.strip() == "[] [] {} {} [] []" and out.stderr == ""


def test_a_plugin_that_fails_to_import_is_skipped_with_one_warning(fake_entry_points: list[FakeEntryPoint],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    registered = Lookup[str]()
    fake_entry_points += [
        FakeEntryPoint("broken", "no_such_module", PLUGINS, ModuleNotFoundError("No module named 'no_such_module'")),
        FakeEntryPoint("good", "good_module", PLUGINS, "the module"),
    ]
    assert registered.load() == {}
    assert load_entry_points(PLUGINS) == [(fake_entry_points[1], "the module")]  # loaded once, the failure left out
    assert capsys.readouterr().err.splitlines() == [
        "Warning: plug-in 'broken' (no_such_module, entry point group caso_cli.plugins) failed and is skipped: "
        "ModuleNotFoundError: No module named 'no_such_module'"]


def test_command_plugins_add_commands_and_a_broken_one_breaks_nothing(fake_entry_points: list[FakeEntryPoint],
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def hello() -> None:
        """Say hello.

        Example:

          caso hello
        """
        typer.echo("hello")

    def register(root: typer.Typer) -> None:
        root.command("hello")(hello)

    def bug(root: typer.Typer) -> None:
        raise RuntimeError("a bug in the plug-in\nand its second line")

    assert {"demo", "toyworld"} & _commands(make_app()) == set()  # no entry points: no toy world
    fake_entry_points += [FakeEntryPoint("hello", "hello_pkg:register", COMMANDS, register),
                          FakeEntryPoint("bug", "bug_pkg:register", COMMANDS, bug),
                          FakeEntryPoint("gone", "gone_pkg:register", COMMANDS, ImportError("cannot import gone"))]
    plugins._LOADED.clear()
    commands = _commands(make_app())
    assert {"hello", "edit", "embed", "eval"} <= commands and not {"demo", "toyworld"} & commands
    assert capsys.readouterr().err.splitlines() == [  # the one that cannot load, then the one whose register fails
        "Warning: plug-in 'gone' (gone_pkg:register, entry point group caso_cli.commands) failed and is skipped: "
        "ImportError: cannot import gone",
        "Warning: plug-in 'bug' (bug_pkg:register, entry point group caso_cli.commands) failed and is skipped: "
        "RuntimeError: a bug in the plug-in"]


def test_a_broken_installed_distribution_does_not_break_caso(tmp_path: Path) -> None:
    """A real (fake) distribution on the path whose entry points name a module that is not there: ``caso --help``
    still works, the toy world still registers, and each broken entry point costs one line on stderr."""
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[caso_cli.plugins]\nbroken = broken_plugin_missing\n\n"
                                           "[caso_cli.commands]\nbroken = broken_plugin_missing.cli:register\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    code = ("from caso_cli.models.loaders import local_model_names\n"
            "print('toy' in local_model_names())\n"
            "from caso_cli.cli.app import main\n"
            "main(['--help'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True\n") and "toyworld" in out.stdout
    assert out.stderr.splitlines() == [
        f"Warning: plug-in 'broken' ({value}, entry point group {group}) failed and is skipped: "
        "ModuleNotFoundError: No module named 'broken_plugin_missing'"
        for value, group in (("broken_plugin_missing", PLUGINS), ("broken_plugin_missing.cli:register", COMMANDS))]
