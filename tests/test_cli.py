"""The command line: instant help, one-line errors with exit codes, user dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from caso_cli import __version__
from tests.tiny import run_main


def test_help_imports_neither_torch_nor_diffusers() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "caso_cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    assert "Usage" in out.stdout and "model" in out.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "typer" in imported
    assert not imported & {"torch", "diffusers", "transformers", "numpy", "PIL"}


def test_version(capsys) -> None:
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out.strip() == f"caso {__version__}"


def test_path_is_caso_home(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CASO_HOME", str(tmp_path / "home"))
    code, out, _ = run_main(["path"], capsys)
    assert code == 0 and out.strip() == str(tmp_path / "home")
    assert (tmp_path / "home").is_dir()
    code, out, _ = run_main(["path", "--cache"], capsys)
    assert out.strip() == str(tmp_path / "home" / "cache")


def test_missing_model_is_one_line_exit_4(capsys) -> None:
    code, out, err = run_main(["model", "info", "--model", "nobody/not-here"], capsys)
    assert code == 4 and out == ""
    assert err.count("\n") == 1 and err.startswith("Error: model 'nobody/not-here'")
    assert "Traceback" not in err


@pytest.mark.slow
def test_debug_shows_traceback(monkeypatch) -> None:
    env = {**os.environ, "CASO_DEBUG": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "caso_cli", "model", "info", "--model", "nobody/not-here"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "Traceback" in out.stderr and "ModelLoadError" in out.stderr


def test_bad_option_values_are_usage_errors(capsys) -> None:
    code, _, err = run_main(["model", "info", "--device", "tpu"], capsys)
    assert code == 2 and err.strip() == "Error: unknown device 'tpu' (choose from auto, cuda, cuda:N, mps, cpu)"
    code, _, err = run_main(["model", "nope"], capsys)
    assert code == 2 and "No such command" in err


@pytest.mark.slow
def test_model_info_json(tiny_model_dir, capsys) -> None:
    code, out, _ = run_main(["model", "info", "--model", str(tiny_model_dir), "--json", "--device", "cpu"],
                            capsys)
    facts = json.loads(out)
    assert code == 0 and facts["resolution"] == 32 and facts["dtype"] == "float32"
    assert facts["parameters"]["text_encoder"] > 0
