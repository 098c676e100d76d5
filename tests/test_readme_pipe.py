"""The README's pipe and interpolate examples run as printed, on the shipped toy model."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from caso_cli.toyworld import MODEL_DIR
from tests.tiny import readme_pipe_examples, tiny_classifier_file


@pytest.mark.slow
def test_readme_pipe_example_runs_as_printed(tmp_path) -> None:
    """Prepare what `caso demo` leaves behind (toy data, a toy-mustache embedding), then run the lines verbatim."""
    from caso_cli.conditioning import table_hash
    from caso_cli.registry import save_embedding
    from caso_cli.toyworld.render import write_dataset

    assert (MODEL_DIR / "model_index.json").is_file(), "the toy model must ship with caso"
    write_dataset(tmp_path / "caso-demo" / "data", 12, seed=0)
    from transformers import CLIPTextModel

    te = CLIPTextModel.from_pretrained(str(MODEL_DIR), subfolder="text_encoder")
    d = te.get_input_embeddings().weight.shape[1]
    save_embedding("toy-mustache", torch.randn(2, d, generator=torch.Generator().manual_seed(0)),
                   {"classes": ["no_mustache", "mustache"], "model": "toy", "text_encoder_hash": table_hash(te)})
    # a second attribute with its classifier, for --hold all (the demo saves every toy attribute this way)
    from caso_cli.io.files import file_sha256

    clf = tiny_classifier_file(tmp_path / "smile.safetensors", ("no_smile", "smile"))
    save_embedding("toy-smile", torch.randn(2, d, generator=torch.Generator().manual_seed(1)),
                   {"classes": ["no_smile", "smile"], "model": "toy", "text_encoder_hash": table_hash(te),
                    "classifier": {"path": str(clf), "sha256": file_sha256(clf)}})
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    lines = readme_pipe_examples()
    assert any("| caso edit -" in line for line in lines)
    for line in lines:
        out = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (line, out.stderr)
        assert "not holding" not in out.stderr and "no other embedding" not in out.stderr, out.stderr
    edited = sorted(p.name for p in (tmp_path / "caso-demo" / "edited").iterdir())
    assert edited == [f"{i:06d}.toy-mustache.5.png" for i in range(10)]
    assert (tmp_path / "caso-demo" / "sweep.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caso-demo", "smile.safetensors"], "wrote outside caso-demo/"
