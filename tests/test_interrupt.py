"""Ctrl-C during `caso embed learn`: a checkpoint, exit 130, and --resume ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.tiny import learn_inputs


@pytest.fixture()
def setup(tmp_path, tiny_model_dir):
    folder, clf = learn_inputs(tmp_path)
    return folder, clf, tiny_model_dir


def _learn(args: list[str], home, **kw) -> subprocess.Popen:
    env = {**os.environ, "CASO_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # The child starts with SIGINT at its default whatever this process inherited (an ignored SIGINT is
    # inherited through exec, and Python then installs no KeyboardInterrupt handler).
    return subprocess.Popen([sys.executable, "-m", "caso_cli", "embed", "learn", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_resume_matches(setup, tmp_path) -> None:
    folder, clf, model = setup
    common = [str(folder), "--classifier", str(clf), "--model", str(model), "--steps", "150", "--batch-size", "2",
              "--checkpoint-every", "10", "--device", "cpu",
              "--check-samples", "0"]
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    full = _learn([*common, "--name", "x"], home_a)
    part = _learn([*common, "--name", "x"], home_b)
    ckpt = home_b / "checkpoints" / "x"
    # wait until learning is under way (the first periodic checkpoint), then press Ctrl-C
    deadline = time.monotonic() + 120
    while not (ckpt / "state.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    part.send_signal(signal.SIGINT)
    _, err = part.communicate(timeout=120)
    assert part.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("Error: interrupted after step ") and "--resume" in err
    assert (ckpt / "state.json").is_file()
    out_full, err_full = full.communicate(timeout=300)
    assert full.returncode == 0, err_full
    resumed = _learn([*common, "--name", "x", "--resume"], home_b)
    _, err_resumed = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err_resumed
    from safetensors.torch import load_file

    a = load_file(str(home_a / "embeddings" / "x" / "embedding.safetensors"))["embedding"]
    b = load_file(str(home_b / "embeddings" / "x" / "embedding.safetensors"))["embedding"]
    assert torch.allclose(a, b, atol=1e-6)
    assert not ckpt.exists()  # removed once the embedding is saved


def _caso(args: list[str], home) -> subprocess.Popen:
    env = {**os.environ, "CASO_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "caso_cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.slow
def test_ctrl_c_during_edit_says_how_far_it_got_and_skip_existing_resumes(tiny_sd, tiny_model_dir, tmp_path,
                                                                          monkeypatch) -> None:
    from PIL import Image

    from caso_cli.registry import save_embedding

    home = tmp_path / "home"
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(16):
        Image.new("RGB", (32, 32), (6 * i, 90, 160)).save(folder / f"p{i:02d}.png")
    monkeypatch.setenv("CASO_HOME", str(home))
    save_embedding("m", torch.randn(2, 16), {"classes": ["no_m", "m"], "model": str(tiny_model_dir),
                                             "text_encoder_hash": tiny_sd.family.encoder_hash()})
    out = tmp_path / "out"
    cmd = ["edit", str(folder), "--attr", "m", "--out", str(out), "--steps", "10", "-b", "1", "--device", "cpu"]
    part = _caso(cmd, home)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.is_dir() and any(p.suffix == ".png" and not p.name.startswith(".")
                                                                    for p in out.iterdir())):
        time.sleep(0.05)
    part.send_signal(signal.SIGINT)
    stdout, err = part.communicate(timeout=120)
    assert part.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: interrupted after ") and last.endswith(
        "of 16 inputs edited (0 skipped, 0 failed); rerun the same command with --skip-existing to resume"), err
    done = int(last.split("after ")[1].split(" of")[0])
    written = sorted(p.name for p in out.iterdir())
    assert 1 <= done == len(written) < 16 and all(not n.startswith(".") for n in written)  # no partial files
    assert len(stdout.split()) == done  # every finished output was printed
    resumed = _caso([*cmd, "--skip-existing"], home)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and f"{16 - done} edited, {done} skipped, 0 failed" in err, err
