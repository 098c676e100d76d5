"""The README's set-up commands and CI stay in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands() -> None:
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "torch==2.13.0" in cmds[0] and "caso " in cmds[0]
    assert cmds[1].endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command() -> None:
    test_cmd = _readme_commands()[1].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci
    assert ci.index("torch==2.13.0") < ci.index("pip install -q -e '.[test]'")
    assert ci.rstrip().splitlines()[-1] == test_cmd
    assert "\nruff check .\n" in ci and "\nmypy caso_cli\n" in ci  # lint and type-check before the suite
    assert ci.index('\npython -m pytest -q -m "not slow"\n') < ci.rindex("\npython -m pytest -q\n")  # fast tier first


def test_console_script_and_typed_marker() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'caso = "caso_cli.cli.app:main"' in pyproject
    assert (ROOT / "caso_cli" / "py.typed").is_file()


@pytest.mark.slow
def test_library_api_is_lazy_and_complete() -> None:
    import subprocess
    import sys

    code = ("import sys, caso_cli; assert 'torch' not in sys.modules; "
            "missing = [n for n in caso_cli.__all__ if not hasattr(caso_cli, n)]; print(missing)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _imports_of_test_modules(source: str) -> list[str]:
    """The modules that imports in ``source`` take from a ``test_*`` module, in any spelling (``from tests.test_x
    import y``, ``import tests.test_x``, ``from tests import test_x``, ``from .test_x import y``, ``from . import
    test_x``), at the top or inside a function."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if any(p.startswith("test_") for p in a.name.split("."))]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if any(p.startswith("test_") for p in (node.module or "").split(".")):
                found.append(module)
            elif node.module in (None, "tests"):  # from tests import test_x; from . import test_x
                found += [f"{module}.{a.name}".replace("..", ".") for a in node.names if a.name.startswith("test_")]
    return found


def test_test_modules_import_helpers_only_from_shared_modules() -> None:
    """Helpers that several test modules use live in tests/tiny.py (or are conftest.py fixtures, or in the reference
    modules): no module under tests/ imports from a test_* module, so each one stands on its own."""
    spellings = ("from tests.test_cli import run_main\nimport tests.test_eval\nfrom tests import test_eval as t\n"
                 "from .test_eval import clf_file\nfrom . import test_x\nfrom tests.tiny import run_main\n"
                 "def f():\n    from tests.test_y import g\n")
    assert _imports_of_test_modules(spellings) == ["tests.test_cli", "tests.test_eval", "tests.test_eval",
                                                   ".test_eval", ".test_x", "tests.test_y"]
    # parse only the files with an import line that names a test_ module or opens a parenthesis (a few of them)
    maybe = re.compile(r"(?m)^[ \t]*(?:from|import)[ \t][^\n]*(?:test_|\()")
    sources = {path: path.read_text(encoding="utf-8") for path in sorted((ROOT / "tests").rglob("*.py"))}
    offenders = {str(path.relative_to(ROOT)): found for path, source in sources.items()
                 if maybe.search(source) and (found := _imports_of_test_modules(source))}
    assert offenders == {}, f"import shared helpers from tests/tiny.py, not from test modules: {offenders}"
