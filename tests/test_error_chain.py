"""Errors keep their cause: one line without CASO_DEBUG, the whole chain (the original exception) with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from caso_cli.errors import InputError, UsageError
from tests.tiny import run_main

CHAINED = "The above exception was the direct cause of the following exception"


def _garbage_classifier(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"garbage")
    return path


def _corrupt_entry() -> tuple[str, Path]:
    """A registry entry whose meta.json is not JSON: (its name, that file)."""
    import torch

    from caso_cli import registry as R

    entry = R.save_embedding("broken", torch.randn(2, 16), {"classes": ["no_b", "b"]})
    (entry / R.META_FILE).write_text("{not json")
    return "broken", entry / R.META_FILE


def _debug_run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CASO_DEBUG": "1"}
    return subprocess.run([sys.executable, "-m", "caso_cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("case", ["classifier", "embedding"])
def test_user_error_is_one_line_without_debug(case, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CASO_DEBUG", raising=False)
    if case == "classifier":
        path = _garbage_classifier(tmp_path)
        args, message = ["classifier", "show", str(path)], f"Error: {path}: not a safetensors classifier file ("
    else:
        name, meta = _corrupt_entry()
        args, message = ["embed", "show", name], f"Error: {meta}: corrupt metadata ("
    code, out, err = run_main(args, capsys)
    assert code == 3 and out == ""
    assert err.startswith(message) and err.count("\n") == 1, err
    assert "Traceback" not in err and CHAINED not in err


@pytest.mark.parametrize(("case", "cause"), [("classifier", "SafetensorError"), ("embedding", "JSONDecodeError")])
@pytest.mark.slow
def test_debug_traceback_shows_the_cause(case, cause, tmp_path) -> None:
    args = (["classifier", "show", str(_garbage_classifier(tmp_path))] if case == "classifier"
            else ["embed", "show", _corrupt_entry()[0]])
    proc = _debug_run(args)
    assert proc.returncode != 0 and proc.stdout == ""
    err = proc.stderr
    assert "Traceback" in err and CHAINED in err, err
    assert cause in err, err  # the original exception's type
    assert err.index(cause) < err.index("caso_cli.errors.InputError"), err  # cause first, then the user error


def test_library_errors_carry_their_cause(tmp_path) -> None:
    import json

    from PIL import UnidentifiedImageError

    from caso_cli.attrs import parse_scale
    from caso_cli.io.images import load_image
    from caso_cli.models.classifier import read_classifier_meta
    from caso_cli.registry import read_meta

    with pytest.raises(InputError) as info:
        read_classifier_meta(_garbage_classifier(tmp_path))
    assert type(info.value.__cause__).__name__ == "SafetensorError"
    with pytest.raises(InputError) as info:
        read_meta(_corrupt_entry()[0])
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    with pytest.raises(InputError) as info:
        load_image(text)
    assert isinstance(info.value.__cause__, UnidentifiedImageError)
    with pytest.raises(InputError) as info:
        load_image(tmp_path / "missing.png")
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(UsageError) as info:
        parse_scale("x", "--scale")
    assert isinstance(info.value.__cause__, ValueError)
