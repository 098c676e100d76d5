"""Data-parallel learning through accelerate on the CPU (two processes, gloo): the same embedding as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from caso_cli.models.classifier import AttributeClassifier, ClassifierMeta, SmallCNN, save_classifier

# Each process computes its half of the same global batch; the gradients are summed. Only the order of
# floating-point sums differs from one process, so the vectors agree to rounding (measured: 1.5e-7).
ATOL = 1e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    from PIL import Image

    from caso_cli.toyworld.render import render_faces

    tmp = tmp_path_factory.mktemp("dist")
    images, _ = render_faces(8, seed=3)
    folder = tmp / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i}.png")
    torch.manual_seed(0)
    meta = ClassifierMeta(classes=["no_x", "x"], backbone="small-cnn", input_size=32, mean=[0.5] * 3, std=[0.5] * 3,
                          backbone_config={"widths": [8, 8]})
    clf = save_classifier(AttributeClassifier(SmallCNN(2, (8, 8)), meta), tmp / "c.safetensors")
    return folder, clf, tiny_model_dir


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _run(cmd: list[str], home) -> subprocess.CompletedProcess:
    env = {**os.environ, "CASO_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def _learned(home):
    entry = home / "embeddings" / "x"
    return load_file(str(entry / "embedding.safetensors"))["embedding"], json.loads((entry / "meta.json").read_text())


def test_two_processes_learn_what_one_learns(setup, tmp_path) -> None:
    folder, clf, model = setup
    args = ["embed", "learn", str(folder), "--classifier", str(clf), "--model", str(model), "--name", "x",
            "--steps", "6", "--batch-size", "4", "--checkpoint-every", "2", "--device", "cpu", "--seed", "1",
            "--json"]
    one = _run([sys.executable, "-m", "caso_cli", *args], tmp_path / "one")
    launched = _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                     "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                     "--main_process_port", _free_port(), "-m", "caso_cli", *args], tmp_path / "two")
    handed = _run([sys.executable, "-m", "caso_cli", *args, "--num-processes", "2"], tmp_path / "handoff")
    a, meta_a = _learned(tmp_path / "one")
    for home, proc in ((tmp_path / "two", launched), (tmp_path / "handoff", handed)):
        b, meta_b = _learned(home)
        assert torch.allclose(a, b, atol=ATOL), (a - b).abs().max()
        assert meta_b["metrics"]["processes"] == 2 and meta_a["metrics"]["processes"] == 1
        # the logged loss and accuracy are those of the global batch, as in one process
        assert meta_b["metrics"]["loss"] == pytest.approx(meta_a["metrics"]["loss"], abs=1e-5)
        assert meta_b["metrics"]["accuracy"] == pytest.approx(meta_a["metrics"]["accuracy"])
        # only the main process printed the result and wrote the entry; the checkpoint was removed
        assert len(proc.stdout.strip().splitlines()) == 1, proc.stdout
        assert json.loads(proc.stdout)["name"] == "x"
        assert sorted(p.name for p in (home / "embeddings").iterdir() if not p.name.startswith(".")) == ["x"]
        assert not (home / "checkpoints" / "x").exists()
    assert not torch.equal(a, torch.zeros_like(a))


def test_batch_smaller_than_processes_is_refused(setup, capsys) -> None:
    from caso_cli.cli.app import main

    folder, clf, model = setup
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "learn", str(folder), "-c", str(clf), "--model", str(model), "-n", "x", "--batch-size", "1",
              "--num-processes", "2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "Error: --batch-size 1 is smaller than --num-processes 2"
