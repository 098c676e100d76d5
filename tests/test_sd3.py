"""SD3 as a model family (one module, caso_cli/families/sd3.py): conditions equal diffusers' StableDiffusion3Pipeline,
the flow-matching sampler equals the pipeline's, and every command works on a tiny SD3 folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from caso_cli.runtime import cpu_runtime
from tests.tiny_sd3 import CLIP_WIDTHS, T5_WIDTH, save_sd3_folder, tiny_sd3_components

PROMPTS = ["a face with glasses", "smile"]


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_sd3_folder(tiny_sd3_components(), tmp_path_factory.mktemp("tiny_sd3"))


@pytest.fixture(scope="module")
def sd3(sd3_dir: Path):
    from caso_cli.models.loaders import load_model

    return load_model(str(sd3_dir), cpu_runtime())


@pytest.fixture(scope="module")
def pipe(sd3_dir: Path):
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(str(sd3_dir))


def test_the_folder_loads_as_sd3_with_a_flow_schedule(sd3) -> None:
    from caso_cli.diffusion import FlowSchedule
    from caso_cli.families.sd3 import SD3

    facts = sd3.describe()
    assert isinstance(sd3.family, SD3) and isinstance(sd3.schedule, FlowSchedule)
    assert (facts["family"], facts["network"], facts["prediction_type"]) == \
        ("sd3", "SD3Transformer2DModel", "flow_prediction")
    assert sd3.token_dim == sum(CLIP_WIDTHS) + T5_WIDTH and sd3.shift_factor == pytest.approx(0.0609)
    assert sd3.schedule.level(999).sigma == pytest.approx(3 * 0.999 / (1 + 2 * 0.999))  # SD3's shift, 3
    assert sd3.schedule.model_time(600) == pytest.approx(1000 * 1.8 / 2.2)


def test_prompt_and_null_conditions_equal_the_sd3_pipeline(sd3, pipe) -> None:
    with torch.no_grad():
        ours, null = sd3.family.encode_prompts(PROMPTS), sd3.family.null_condition()
        pe, npe, pooled, npooled = pipe.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=True)
    assert ours.hidden.shape == pe.shape == (2, 77 + 256, T5_WIDTH)
    assert (ours.hidden - pe).abs().max().item() < 1e-5
    assert (ours.extra["pooled_projections"] - pooled).abs().max().item() < 1e-5
    assert (null.hidden - npe[:1]).abs().max().item() < 1e-5
    assert (null.extra["pooled_projections"] - npooled[:1]).abs().max().item() < 1e-5


def test_a_learned_vector_is_a_textual_inversion_token_of_all_three_encoders(sd3, tmp_path) -> None:
    from safetensors.torch import save_file

    from caso_cli.textual_inversion import read_textual_inversion

    word = sd3.family.word_vector("glasses")
    with torch.no_grad():
        as_vector, as_word = sd3.family.encode_vectors(word.unsqueeze(0)), sd3.family.encode_prompts(["glasses"])
    assert torch.equal(as_vector.hidden, as_word.hidden)
    assert torch.equal(as_vector.extra["pooled_projections"], as_word.extra["pooled_projections"])
    tensors = sd3.family.export_tensors("<x>", word, "a1111", sd3.family.widths)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == \
        {"clip_l": (1, CLIP_WIDTHS[0]), "clip_g": (1, CLIP_WIDTHS[1]), "t5xxl": (1, T5_WIDTH)}
    save_file(tensors, str(tmp_path / "glasses.safetensors"))
    back = read_textual_inversion(tmp_path / "glasses.safetensors")
    assert (back.family, back.widths, back.label) == ("sd3", sd3.family.widths, "glasses")
    assert torch.equal(back.vector, word)


def test_flow_matching_sampling_equals_the_sd3_pipeline(sd3, pipe) -> None:
    from caso_cli.pipelines.ddim import denoise
    from caso_cli.pipelines.guidance import Contrast

    steps = 7  # a grid whose steps are not all the same length
    grid = sd3.schedule.grid(steps)
    z = torch.randn(1, *sd3.latent_shape(), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        guided = Contrast([sd3.family.null_condition(), sd3.family.encode_prompts(PROMPTS[:1])], 0, [(4.0, 1, 0)])
        ours = denoise(lambda zz, t, _i: guided.eps(sd3, zz, t), z, sd3.schedule, steps)
        # the pipeline shifts the sigmas it is given: the unshifted t / T of caso's grid give the same steps
        ref = pipe(PROMPTS[0], sigmas=[t / 1000 for t in grid], guidance_scale=4.0, latents=z.clone(), height=32,
                   width=32, output_type="latent").images
    assert ref.abs().max().item() > 1
    assert (ours - ref).abs().max().item() < 1e-3  # the first step, at sigma 0.9997, divides by alpha = 3e-4


def test_flow_inversion_returns_to_the_image_it_inverted(sd3) -> None:
    from caso_cli.config import EditConfig
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.guidance import cfg_guidance

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    errors = {}
    with torch.no_grad():
        z0 = sd3.encode_latents(x)
        for refine in (0, 2, 4):  # each refinement of the inversion's steps brings the round trip closer
            config = EditConfig(steps=20, start=0.6, inversion_refine=refine)
            z_t = invert_latents(sd3, z0, config)
            back = edit_latents(sd3, z_t, cfg_guidance(sd3, sd3.family.null_condition(), 0.0), config)
            errors[refine] = (back - z0).abs().max().item()
    assert errors[0] > 10 * errors[2] > 100 * errors[4] and errors[4] < 1e-3, errors


def test_latents_carry_the_vae_shift_and_scale(sd3) -> None:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    s, shift = sd3.scaling_factor, sd3.shift_factor
    with torch.no_grad():
        z = sd3.encode_latents(x)
        assert torch.equal(z, (sd3.vae.encode(x).latent_dist.mean - shift) * s)
        assert torch.equal(sd3.decode_latents(z), sd3.vae.decode(z / s + shift).sample)


@pytest.mark.slow
def test_every_command_works_on_a_tiny_sd3_folder(sd3_dir, tmp_path, capsys) -> None:
    from PIL import Image

    from tests.tiny import learn_inputs, run_main

    imgs, clf = learn_inputs(tmp_path)
    model = str(sd3_dir)
    for name in ("sd3-x", "sd3-y"):  # two embeddings whose classifiers are recorded, for --hold all
        code, out, err = run_main(["embed", "learn", str(imgs), "--classifier", str(clf), "--name", name, "--model",
                                   model, "--steps", "2", "--batch-size", "2", "--check-samples", "1", "--t-train",
                                   "601", "--json"], capsys)
        assert code == 0, err
    code, out, _ = run_main(["embed", "show", "sd3-x", "--json"], capsys)
    meta = json.loads(out)
    assert (meta["family"], meta["widths"]) == ("sd3", [*CLIP_WIDTHS, T5_WIDTH])

    photo = next(imgs.iterdir())
    fast = ["--steps", "4", "--device", "cpu"]
    code, out, err = run_main(["edit", str(photo), "--attr", "sd3-x", "--scale", "3", "--out", str(tmp_path / "ed"),
                               "--json", *fast], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["status"] == "ok" and Image.open(record["output"]).size == (32, 32)
    code, out, err = run_main(["edit", str(photo), "--attr", "sd3-x", "--scale", "3", "--hold", "all", "--out",
                               str(tmp_path / "held"), "--json", *fast], capsys)
    assert code == 0 and set(json.loads(out)["held"]) == {"sd3-y"}, err
    code, out, err = run_main(["interpolate", str(photo), "--attr", "sd3-x", "--scales", "-2:2:3", "--out",
                               str(tmp_path / "sweep.png"), *fast], capsys)
    assert code == 0 and (tmp_path / "sweep.png").is_file(), err
    code, out, err = run_main(["reconstruct", str(photo), "--model", model, "--out", str(tmp_path / "rec"), "-q",
                               *fast], capsys)
    assert code == 0 and Path(out.strip()).is_file(), err
    code, out, err = run_main(["generate", "--attr", "sd3-x", "--n", "2", "--out", str(tmp_path / "gen.png"), *fast],
                              capsys)
    assert code == 0 and (tmp_path / "gen.png").is_file(), err
    code, out, err = run_main(["embed", "export", "sd3-x", "--out", str(tmp_path / "ti")], capsys)
    assert code == 0, err
    files = out.split()
    assert len(files) == 2 and all(Path(f).is_file() for f in files)
    code, out, err = run_main(["embed", "import", *files, "--name", "sd3-back"], capsys)
    assert code == 0, err
    code, out, _ = run_main(["embed", "show", "sd3-back", "--json"], capsys)
    assert json.loads(out)["family"] == "sd3"
