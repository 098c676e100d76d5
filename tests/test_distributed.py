"""Data-parallel learning through accelerate on the CPU (two processes, gloo): the same embedding as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny import learn_inputs

# Each process computes its half of the same global batch; the gradients are summed. Only the order of
# floating-point sums differs from one process, so the vectors agree to rounding (measured: 1.5e-7).
ATOL = 1e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    folder, clf = learn_inputs(tmp_path_factory.mktemp("dist"))
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


@pytest.mark.slow
def test_two_processes_learn_what_one_learns(setup, tmp_path) -> None:
    folder, clf, model = setup
    args = ["embed", "learn", str(folder), "--classifier", str(clf), "--model", str(model), "--name", "x",
            "--steps", "6", "--batch-size", "4", "--checkpoint-every", "2", "--device", "cpu", "--seed", "1",
            "--check-samples", "0", "--json"]
    _run([sys.executable, "-m", "caso_cli", *args], tmp_path / "one")
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


def test_folder_edits_are_sharded_without_collisions(tiny_sd, tmp_path) -> None:
    """Process r of N edits inputs r, r+N, ...: the shares are disjoint and together cover every input once."""
    import dataclasses

    from PIL import Image

    from caso_cli.attrs import resolve_attrs
    from caso_cli.config import EditConfig
    from caso_cli.io.inputs import expand_inputs
    from caso_cli.pipelines.batch_edit import EditJob, run_edit_job, shard
    from caso_cli.registry import save_embedding

    assert [*shard(range(7), 1, 3)] == [1, 4] and [*shard(range(3), 0, 1)] == [0, 1, 2]
    save_embedding("m", torch.randn(2, 16, generator=torch.Generator().manual_seed(0)),
                   {"classes": ["no_m", "m"], "text_encoder_hash": tiny_sd.family.encoder_hash()})
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (32, 32), (50 * i, 80, 120)).save(folder / f"p{i}.png")
    attrs = resolve_attrs(["m"], 3.0)
    outputs = []
    for rank in range(2):
        sd = dataclasses.replace(tiny_sd, runtime=dataclasses.replace(tiny_sd.runtime, rank=rank, world_size=2))
        job = EditJob(attrs=attrs, out_dir=tmp_path / "out", config=EditConfig(steps=2), batch_size=2)
        records = list(run_edit_job(sd, job, expand_inputs([str(folder)])))
        assert all(r.status == "ok" for r in records)
        outputs.append([Path(r.output).name for r in records])
    assert outputs == [["p0.m.3.png", "p2.m.3.png", "p4.m.3.png"], ["p1.m.3.png", "p3.m.3.png"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(outputs[0] + outputs[1])
