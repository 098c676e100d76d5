"""interpolate, generate and reconstruct as library calls: typed jobs, no typer, one provenance builder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from caso_cli.attrs import resolve_attrs
from caso_cli.config import EditConfig
from caso_cli.io.png import read_png_metadata
from caso_cli.registry import save_embedding


def _embedding(tiny_sd) -> None:
    save_embedding("m", torch.randn(2, 16, generator=torch.Generator().manual_seed(0)),
                   {"classes": ["no_m", "m"], "text_encoder_hash": tiny_sd.family.encoder_hash()})


def test_sweep_edits_every_scale_from_one_inversion_and_matches_single_edits(tiny_sd, tmp_path) -> None:
    from caso_cli.io.images import fit_image, load_image, to_tensor
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.generate import decode_latents, encode_images
    from caso_cli.pipelines.guidance import attribute_guidance
    from caso_cli.pipelines.interpolate import SweepJob, run_sweep

    _embedding(tiny_sd)
    src = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (200, 60, 20)).save(src)
    attr = resolve_attrs(["m"], 1.0)[0]
    config = EditConfig(steps=3, start=1.0)
    job = SweepJob(source=src, attr=attr, scales=(-2.0, 0.0, 2.0), out=tmp_path / "sweep.png", config=config,
                   frames=tmp_path / "frames")
    result = run_sweep(tiny_sd, job)
    assert result.captions == ["-2", "0", "2"] and result.held == {}
    assert [p.name for p in result.frames] == ["p.m.-2.png", "p.m.0.png", "p.m.2.png"]
    meta = read_png_metadata(result.grid)
    assert meta["caso:scales"] == "-2,0,2" and meta["caso:embeddings"] == "m" and meta["caso:start"] == "1"
    assert meta["caso:model"] == tiny_sd.name and "caso:version" in meta
    # frame at +2 equals a single edit at +2 (the batch of scales changes nothing per image)
    x = to_tensor([fit_image(load_image(src), tiny_sd.resolution)])
    guidance = attribute_guidance(tiny_sd, [attr], 2.0)
    z_t = invert_latents(tiny_sd, encode_images(tiny_sd, x), config)
    single = decode_latents(tiny_sd, edit_latents(tiny_sd, z_t, guidance, config))
    frame = torch.from_numpy(__import__("numpy").asarray(Image.open(result.frames[2]), dtype="float32"))
    expected = ((single[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round()
    assert (frame - expected).abs().max() <= 1


def test_generate_writes_grid_and_frames_with_provenance(tiny_sd, tmp_path) -> None:
    from caso_cli.pipelines.generate import GenerateJob, run_generate

    _embedding(tiny_sd)
    attrs = resolve_attrs(["m"], 3.0)
    paths = run_generate(tiny_sd, GenerateJob(attrs=attrs, out=tmp_path / "g.png", n=2, scale=3.0, steps=2, seed=4,
                                              frames=tmp_path / "f"))
    assert [p.name for p in paths] == ["g.png", "m.4.000.png", "m.4.001.png"]
    meta = read_png_metadata(paths[0])
    assert meta["caso:scales"] == "3" and meta["caso:steps"] == "2" and meta["caso:seed"] == "4"
    assert "caso:start" not in meta  # a generation has no edit start


@pytest.mark.slow
def test_pipelines_import_without_typer() -> None:
    code = ("import sys; import caso_cli.pipelines.interpolate, caso_cli.pipelines.generate, "
            "caso_cli.pipelines.batch_edit; assert 'typer' not in sys.modules, 'typer imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
