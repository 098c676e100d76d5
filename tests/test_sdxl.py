"""SDXL as a model family: conditions equal diffusers' StableDiffusionXLPipeline, and every command works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from caso_cli.families.sdxl import SDXL
from caso_cli.runtime import cpu_runtime


def _reference(folder: Path):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def reference(tiny_xl_dir: Path):
    """diffusers' own pipeline of the tiny SDXL folder, shared by the tests that only read it."""
    return _reference(tiny_xl_dir)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("force_zeros", [True, False])
def test_prompt_and_null_conditions_equal_the_sdxl_pipeline(tiny_xl_dir, reference, tmp_path, force_zeros) -> None:
    from caso_cli.models.loaders import load_model

    folder = tiny_xl_dir
    if not force_zeros:
        folder = shutil.copytree(tiny_xl_dir, tmp_path / "xl")
        index = json.loads((folder / "model_index.json").read_text())
        (folder / "model_index.json").write_text(json.dumps({**index, "force_zeros_for_empty_prompt": False}))
    sd, pipe = load_model(str(folder), cpu_runtime()), reference if force_zeros else _reference(folder)
    assert isinstance(sd.family, SDXL) and sd.family.force_zeros is force_zeros
    with torch.no_grad():
        ours, null = sd.family.encode_prompts(["a face with glasses"]), sd.family.null_condition()
        pe, npe, pooled, npooled = pipe.encode_prompt("a face with glasses", device="cpu", num_images_per_prompt=1,
                                                      do_classifier_free_guidance=True)
    assert ours.hidden.shape == (1, 77, 40) and ours.extra["text_embeds"].shape == (1, 24)
    assert _max_diff(ours.hidden, pe) <= 1e-5 and _max_diff(ours.extra["text_embeds"], pooled) <= 1e-5
    assert _max_diff(null.hidden, npe) <= 1e-5 and _max_diff(null.extra["text_embeds"], npooled) <= 1e-5
    assert (null.hidden.abs().max().item() == 0.0) is force_zeros


def test_exported_tokens_loaded_into_the_sdxl_pipeline_give_the_same_condition(tiny_xl, tiny_xl_dir, tmp_path) -> None:
    from safetensors.torch import load_file

    from caso_cli.registry import load_embedding, save_embedding
    from caso_cli.textual_inversion import export, import_files

    v = torch.randn(2, tiny_xl.token_dim, generator=torch.Generator().manual_seed(0))
    save_embedding("xl", v, {"classes": ["no_glasses", "glasses"], "family": "sdxl", "widths": [16, 24]})
    files = export("xl", tmp_path / "ti", "a1111")
    state = load_file(str(files[1]))
    assert {k: tuple(t.shape) for k, t in state.items()} == {"clip_l": (1, 16), "clip_g": (1, 24)}
    pipe = _reference(tiny_xl_dir)
    pipe.load_textual_inversion(state["clip_l"], token="<glasses>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(state["clip_g"], token="<glasses>", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    with torch.no_grad():
        ours = tiny_xl.family.encode_vectors(v[1:2])
        pe, _, pooled, _ = pipe.encode_prompt("<glasses>", device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    assert _max_diff(ours.hidden, pe) <= 1e-5 and _max_diff(ours.extra["text_embeds"], pooled) <= 1e-5
    # and back: the clip_l/clip_g files import as an SDXL embedding with the same vectors
    import_files(files, "xl2")
    back = load_embedding("xl2")
    assert back.meta.family == "sdxl" and back.meta.widths == [16, 24] and torch.equal(back.vectors, v)
    assert back.classes == ["no_glasses", "glasses"]


def test_a_unet_call_carries_the_time_ids_of_the_working_resolution(tiny_xl, reference) -> None:

    pipe = reference
    z = torch.randn(2, 4, 12, 16, generator=torch.Generator().manual_seed(1))  # 24 x 32 pixels
    with torch.no_grad():
        cond = tiny_xl.family.encode_prompts(["a face"])
        ours = tiny_xl.eps(z, 500, cond)
        ids = pipe._get_add_time_ids((24, 32), (0, 0), (24, 32), dtype=torch.float32,
                                     text_encoder_projection_dim=24).expand(2, -1)
        ref = pipe.unet(z, 500, encoder_hidden_states=cond.hidden.expand(2, -1, -1),
                        added_cond_kwargs={"text_embeds": cond.extra["text_embeds"].expand(2, -1),
                                           "time_ids": ids}).sample
    assert torch.equal(ours, ref)


def test_sd_embeddings_are_refused_by_sdxl_with_one_line(tiny_xl, tiny_sd) -> None:
    from caso_cli.attrs import AttrSpec, ResolvedAttr
    from caso_cli.errors import UsageError
    from caso_cli.pipelines.guidance import check_model
    from caso_cli.registry import load_embedding, save_embedding

    save_embedding("sd1", torch.randn(2, tiny_sd.token_dim), {"classes": ["no_x", "x"], "model": "tiny"})
    attrs = [ResolvedAttr(spec=AttrSpec("sd1", None, 2.0), embedding=load_embedding("sd1"), index=1, scale=2.0)]
    with pytest.raises(UsageError, match="family 'sd', but .* is of family 'sdxl'; use --model tiny"):
        check_model(attrs, tiny_xl)


@pytest.mark.slow
def test_every_command_works_on_a_tiny_sdxl_folder(tiny_xl_dir, tiny_model_dir, tmp_path, capsys) -> None:
    from PIL import Image

    from tests.tiny import learn_inputs, run_main

    imgs, clf = learn_inputs(tmp_path)
    model = str(tiny_xl_dir)
    for name in ("xl-x", "xl-y"):  # two embeddings whose classifiers are recorded, for --hold all
        code, out, err = run_main(["embed", "learn", str(imgs), "--classifier", str(clf), "--name", name, "--model",
                                   model, "--steps", "2", "--batch-size", "2", "--check-samples", "1", "--json"],
                                  capsys)
        assert code == 0, err
    code, out, _ = run_main(["embed", "show", "xl-x", "--json"], capsys)
    meta = json.loads(out)
    assert (meta["family"], meta["token_dim"], meta["widths"]) == ("sdxl", 40, [16, 24])

    photo = next(imgs.iterdir())
    fast = ["--steps", "4", "--device", "cpu"]
    code, out, err = run_main(["edit", str(photo), "--attr", "xl-x", "--scale", "3", "--hold", "all", "--out",
                               str(tmp_path / "ed"), "--json", *fast], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["status"] == "ok" and set(record["held"]) == {"xl-y"}
    assert Image.open(record["output"]).size == (32, 32)

    code, out, err = run_main(["interpolate", str(photo), "--attr", "xl-x", "--scales", "-2:2:3", "--out",
                               str(tmp_path / "sweep.png"), *fast], capsys)
    assert code == 0 and (tmp_path / "sweep.png").is_file(), err
    code, out, err = run_main(["reconstruct", str(photo), "--model", model, "--out", str(tmp_path / "rec"), "-q",
                               *fast], capsys)
    assert code == 0 and Path(out.strip()).is_file(), err
    code, out, err = run_main(["generate", "--attr", "xl-x", "--n", "2", "--out", str(tmp_path / "gen.png"), *fast],
                              capsys)
    assert code == 0 and (tmp_path / "gen.png").is_file(), err

    code, out, _ = run_main(["model", "info", "--model", model, "--json"], capsys)
    info = json.loads(out)
    assert info["family"] == "sdxl" and info["text_encoders"] == "CLIPTextModel (16), CLIPTextModelWithProjection (24)"

    code, out, err = run_main(["embed", "export", "xl-x", "--out", str(tmp_path / "ti")], capsys)
    assert code == 0, err
    code, out, err = run_main(["embed", "import", *out.split(), "--name", "xl-back"], capsys)
    assert code == 0, err
    code, out, _ = run_main(["embed", "show", "xl-back", "--json"], capsys)
    assert json.loads(out)["family"] == "sdxl"

    code, out, err = run_main(["edit", str(photo), "--attr", "xl-x", "--model", str(tiny_model_dir), "--out",
                               str(tmp_path / "no"), *fast], capsys)
    assert code == 2 and "of family 'sdxl'" in err and "of family 'sd'" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_cached_hub_id_loads_as_sdxl_offline(tiny_xl_dir, tmp_path) -> None:
    from tests.tiny import fake_hub_cache, offline_model_info

    hf_home = tmp_path / "hf"
    fake_hub_cache(hf_home, "someone/tiny-xl", tiny_xl_dir)
    out = offline_model_info(hf_home, "someone/tiny-xl")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["family"] == "sdxl" and facts["model"] == "someone/tiny-xl" and facts["token_dim"] == 40
    missing = offline_model_info(hf_home, "someone/not-cached-xl")
    assert missing.returncode == 4 and len(missing.stderr.strip().splitlines()) == 1
    assert "someone/not-cached-xl" in missing.stderr and "hf download someone/not-cached-xl" in missing.stderr


@pytest.mark.slow
def test_learning_on_sdxl_with_checkpointing_and_in_half_precision(tiny_xl, tiny_xl_dir) -> None:
    import dataclasses

    from caso_cli.config import LearnConfig
    from caso_cli.models.loaders import enable_grad_checkpointing, load_model
    from caso_cli.pipelines.learn import learn_embedding
    from tests.tiny import random_images, tiny_classifier

    clf, images = tiny_classifier(), random_images()
    cfg = LearnConfig(steps=4, batch_size=4, checkpoint_every=0, seed=2, check_samples=0)
    plain = learn_embedding(tiny_xl, clf, images, cfg).vectors
    enable_grad_checkpointing(tiny_xl)
    try:
        checkpointed = learn_embedding(tiny_xl, clf, images, cfg).vectors
    finally:
        enable_grad_checkpointing(tiny_xl, False)
    assert plain.shape == (2, 40) and torch.allclose(plain, checkpointed, atol=1e-6)
    # bf16 on the CPU stands in for fp16 on CUDA: both encoders, the pooled embedding and the time ids in half
    half = load_model(str(tiny_xl_dir), dataclasses.replace(cpu_runtime(), dtype=torch.bfloat16))
    vectors = learn_embedding(half, clf, images, cfg).vectors
    assert vectors.dtype == torch.float32 and torch.isfinite(vectors).all()
    assert (vectors - plain).abs().max() < 0.5  # the same run, in less precise arithmetic
