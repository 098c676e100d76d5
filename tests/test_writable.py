"""An output that cannot be written is one line (exit 3) before any work, never a traceback after it."""

from __future__ import annotations

import os
import time

import pytest
import torch

from caso_cli.errors import InputError
from caso_cli.io.files import check_writable
from tests.tiny import run_main


def test_check_writable(tmp_path, monkeypatch) -> None:
    check_writable(tmp_path / "new" / "deeper" / "x.safetensors")  # folders to be made under a writable one
    check_writable(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"file/x: cannot write the classifier here \(.*file is not a folder\)"):
        check_writable(tmp_path / "file" / "x", "classifier")
    monkeypatch.setattr(os, "access", lambda *_a: False)  # a read-only folder (root ignores mode bits)
    with pytest.raises(InputError, match="is not writable"):
        check_writable(tmp_path / "ro" / "t", "faces")


def test_commands_refuse_unwritable_outputs_before_work(tmp_path, capsys) -> None:
    from caso_cli.registry import save_embedding

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    data = tmp_path / "data"
    code, _, err = run_main(["toyworld", "render", str(data), "--n", "12", "--seed", "1"], capsys)
    assert code == 0, err
    t0 = time.monotonic()
    code, out, err = run_main(["classifier", "fit", str(data), "--labels", str(data / "list_attr_toy.txt"), "--attr",
                               "Mustache", "--out", str(blocker / "m.safetensors")], capsys)
    assert code == InputError.exit_code and out == "" and err.count("\n") == 1 and "is not a folder" in err
    assert time.monotonic() - t0 < 10  # refused before fitting
    code, _, err = run_main(["toyworld", "render", str(blocker / "t"), "--n", "2"], capsys)
    assert code == InputError.exit_code and err.count("\n") == 1 and "cannot write the faces here" in err
    save_embedding("m", torch.randn(2, 16), {"classes": ["no_m", "m"]})
    code, _, err = run_main(["embed", "export", "m", "--out", str(blocker / "ti")], capsys)
    assert code == InputError.exit_code and err.count("\n") == 1 and "cannot write the textual-inversion" in err
