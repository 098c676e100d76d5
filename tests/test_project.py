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
    assert "\nruff check .\n" in ci  # lint before the suite


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
