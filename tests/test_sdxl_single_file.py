"""SDXL single-file checkpoints in the original (Stability sgm) layout (``sd_xl_base_1.0.safetensors``).

The tiny SDXL is written in that layout by :func:`tests.ldm_checkpoint.write_sdxl_checkpoint`; diffusers'
``StableDiffusionXLPipeline.from_single_file`` must read back every weight exactly (so the writer is the exact
inverse of diffusers' conversion), and caso's loader must load it as the SDXL family, with or without configs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from caso_cli.errors import ModelLoadError
from caso_cli.models.loaders import load_model
from caso_cli.runtime import cpu_runtime
from tests.ldm_checkpoint import OPEN_CLIP_PREFIX, SDXL_CLIP_PREFIX, UNET_PREFIX, write_sdxl_checkpoint

MODELS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def xl(tiny_xl_components: dict, tiny_xl_dir: Path,
       tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    """The tiny SDXL components, their diffusers folder (both conftest.py's) and their single-file checkpoint."""
    root = tmp_path_factory.mktemp("sdxl_single_file")
    return tiny_xl_components, tiny_xl_dir, write_sdxl_checkpoint(tiny_xl_components, root / "tiny_xl_base.safetensors")


@pytest.fixture(scope="module")
def loaded(xl):
    """The checkpoint (with the folder's configs) and the folder, both through caso's loader."""
    _, folder, ckpt = xl
    # Module fixtures run before the autouse env fixture: keep these loads offline and isolated too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(ckpt.parent / "hf_home"))
        return load_model(str(ckpt), cpu_runtime(), config=str(folder)), load_model(str(folder), cpu_runtime())


def test_file_has_the_original_sdxl_layout(xl) -> None:
    components, _, ckpt = xl
    with safe_open(str(ckpt), "pt") as fh:
        keys = set(fh.keys())
        projection = fh.get_tensor(OPEN_CLIP_PREFIX + "text_projection")
        in_proj = fh.get_tensor(OPEN_CLIP_PREFIX + "transformer.resblocks.0.attn.in_proj_weight")
    assert sum(k.startswith(UNET_PREFIX) for k in keys) == len(components["unet"].state_dict())
    assert sum(k.startswith("first_stage_model.") for k in keys) == len(components["vae"].state_dict())
    assert sum(k.startswith(SDXL_CLIP_PREFIX) for k in keys) == len(components["text_encoder"].state_dict()) + 1
    te2 = components["text_encoder_2"].state_dict()
    n_layers = components["text_encoder_2"].config.num_hidden_layers
    # OpenCLIP: 4 fewer tensors per layer (q/k/v weights and biases fused into in_proj_weight, in_proj_bias)
    assert sum(k.startswith(OPEN_CLIP_PREFIX) for k in keys) == len(te2) - 4 * n_layers
    for key in (UNET_PREFIX + "label_emb.0.0.weight", UNET_PREFIX + "label_emb.0.2.bias",
                UNET_PREFIX + "input_blocks.3.0.op.weight",  # the first level (no attention) downsamples
                UNET_PREFIX + "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",  # 2 blocks deep
                UNET_PREFIX + "output_blocks.2.2.conv.weight",  # upsampler after the attention
                UNET_PREFIX + "middle_block.1.transformer_blocks.1.ff.net.2.weight",
                SDXL_CLIP_PREFIX + "embeddings.position_embedding.weight", SDXL_CLIP_PREFIX + "embeddings.position_ids",
                OPEN_CLIP_PREFIX + "positional_embedding", OPEN_CLIP_PREFIX + "token_embedding.weight",
                OPEN_CLIP_PREFIX + "ln_final.weight", OPEN_CLIP_PREFIX + "transformer.resblocks.1.mlp.c_proj.bias",
                OPEN_CLIP_PREFIX + "transformer.resblocks.1.attn.in_proj_bias"):
        assert key in keys, key
    assert not any(".input_blocks.1.1." in k or ".output_blocks.3.1." in k for k in keys)  # no attention there
    assert torch.equal(projection, te2["text_projection.weight"].T)
    assert torch.equal(in_proj, torch.cat([te2[f"text_model.encoder.layers.0.self_attn.{p}_proj.weight"]
                                           for p in "qkv"]))


def test_diffusers_reads_back_every_weight(xl, monkeypatch) -> None:
    """The writer is the exact inverse of diffusers' SDXL single-file conversion."""
    from diffusers import StableDiffusionXLPipeline

    components, folder, ckpt = xl
    pipe = StableDiffusionXLPipeline.from_single_file(str(ckpt), config=str(folder), local_files_only=True)
    for name in MODELS:
        ours, ref = getattr(pipe, name).state_dict(), components[name].state_dict()
        assert set(ours) == set(ref), name
        for key, value in ref.items():
            assert ours[key].shape == value.shape and ours[key].dtype == value.dtype, (name, key)
            assert (ours[key] - value).abs().max().item() == 0, (name, key)


def test_caso_loads_it_as_sdxl_with_the_folders_outputs(loaded) -> None:

    sd, ref = loaded
    assert sd.family.name == "sdxl" and ref.family.name == "sdxl"
    assert sd.family.force_zeros == ref.family.force_zeros
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = sd.family.encode_prompts(["a face"]), ref.family.encode_prompts(["a face"])
        torch.testing.assert_close(ours.hidden, theirs.hidden, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.extra["text_embeds"], theirs.extra["text_embeds"], rtol=0, atol=1e-6)
        torch.testing.assert_close(sd.eps(z, 500, ours), ref.eps(z, 500, theirs),
                                   rtol=0, atol=1e-6)


def test_without_config_offline_is_a_clear_error(xl, tmp_path: Path, monkeypatch) -> None:
    """Without --model-config caso picks the SDXL family from the keys; diffusers' configs are not cached."""
    import huggingface_hub.constants as hub

    from caso_cli.families.sdxl import SDXL
    from caso_cli.models.loaders import _family_of_checkpoint

    _, _, ckpt = xl
    assert _family_of_checkpoint(ckpt) is SDXL
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE and its cache path at import: pin both for this test
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(ModelLoadError) as err:
        load_model(str(ckpt), cpu_runtime())
    msg = str(err.value)
    assert str(ckpt) in msg and "not in the local Hugging Face cache" in msg and "--model-config" in msg, msg
    assert "\n" not in msg and "Traceback" not in msg and err.value.exit_code == 4


@pytest.mark.slow
def test_commands_run_on_the_single_file(xl, tmp_path, capsys) -> None:
    """`model info` and an edit with a learned SDXL embedding, the model given as the .safetensors file."""
    import json

    from tests.tiny import learn_inputs, run_main

    _, folder, ckpt = xl
    spec = ["--model", str(ckpt), "--model-config", str(folder)]
    code, out, err = run_main(["model", "info", *spec, "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["family"] == "sdxl" and info["model"] == str(ckpt) and info["token_dim"] == 40
    imgs, clf = learn_inputs(tmp_path)
    code, out, err = run_main(["embed", "learn", str(imgs), "--classifier", str(clf), "--name", "xl-file", *spec,
                               "--steps", "2", "--batch-size", "2", "--check-samples", "0"], capsys)
    assert code == 0, err
    photo = next(imgs.iterdir())
    code, out, err = run_main(["edit", str(photo), "--attr", "xl-file", "--scale", "3", *spec, "--out",
                               str(tmp_path / "ed"), "--steps", "4", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["status"] == "ok"
