"""Single-file checkpoints in the original CompVis/LDM layout (``v1-5-pruned-emaonly.safetensors``).

The tiny model is written in that layout by :mod:`tests.ldm_checkpoint` and loaded back through
caso's loader (diffusers' ``from_single_file``) with a configs-only diffusers folder, so every
weight must come from the single file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from caso_cli.errors import ModelLoadError, UsageError
from caso_cli.models.loaders import load_model
from caso_cli.runtime import cpu_runtime
from tests.ldm_checkpoint import CLIP_PREFIX, clip_key, save_single_file, unet_key, vae_key

MODELS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def config_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's configs only (json/txt), as ``hf download --include '*.json' '*.txt'`` gives."""
    out = tmp_path_factory.mktemp("configs") / "tiny-configs"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    assert not list(out.rglob("*.safetensors"))
    return out


@pytest.fixture(scope="module")
def ldm_file(tiny_components, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_single_file(tiny_components, tmp_path_factory.mktemp("ckpt") / "tiny-v1-emaonly.safetensors")


@pytest.fixture(scope="module")
def loaded(ldm_file: Path, config_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    # Module fixtures run before the autouse env fixture: keep this load offline and isolated too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home_single_file")))
        return load_model(str(ldm_file), cpu_runtime(), config=str(config_dir))


def _offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE and its cache path at import: pin both for this test."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def test_file_has_the_original_sd1_layout(ldm_file: Path, tiny_components) -> None:
    keys = set(load_file(str(ldm_file)))
    n = {name: len(tiny_components[name].state_dict()) for name in MODELS}
    assert sum(k.startswith("model.diffusion_model.") for k in keys) == n["unet"]
    assert sum(k.startswith("first_stage_model.") for k in keys) == n["vae"]
    # + CLIP's position_ids buffer, which real SD 1.x files carry
    assert sum(k.startswith(CLIP_PREFIX) for k in keys) == n["text_encoder"] + 1
    unet, vae = "model.diffusion_model.", "first_stage_model."
    for key in (CLIP_PREFIX + "embeddings.position_embedding.weight",  # diffusers' CLIP-L detection key
                CLIP_PREFIX + "embeddings.position_ids",
                unet + "input_blocks.0.0.weight", unet + "input_blocks.2.0.op.weight",
                unet + "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
                unet + "output_blocks.1.1.conv.weight", unet + "out.2.weight",
                vae + "encoder.mid.attn_1.q.weight", vae + "decoder.up.1.upsample.conv.weight",
                vae + "encoder.down.1.block.0.nin_shortcut.weight", "alphas_cumprod"):
        assert key in keys, key
    # LDM's VAE attention uses 1x1 convolutions where diffusers has linear layers
    assert load_file(str(ldm_file))[vae + "decoder.mid.attn_1.proj_out.weight"].shape == (16, 16, 1, 1)


def test_mapping_gives_the_real_sd15_key_names() -> None:
    """At the SD 1.5 shapes (built on the meta device) the names match v1-5-pruned-emaonly's."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4)
        clip = CLIPTextModel(CLIPTextConfig())
    u = {unet_key(k, unet.config) for k in unet.state_dict()}
    v = {vae_key(k, vae.config) for k in vae.state_dict()}
    t = {clip_key(k) for k in clip.state_dict()}
    assert (len(u), len(v), len(t)) == (686, 248, 196)  # SD 1.5: 686 UNet, 248 VAE, 196 (+position_ids) CLIP
    assert {"output_blocks.11.0.skip_connection.weight", "output_blocks.2.1.conv.weight",
            "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.weight", "input_blocks.9.0.op.weight",
            "input_blocks.4.0.skip_connection.weight", "middle_block.2.emb_layers.1.weight",
            "input_blocks.1.1.proj_in.weight"} <= u
    assert {"decoder.up.3.upsample.conv.weight", "encoder.down.2.downsample.conv.weight",
            "decoder.up.0.block.0.nin_shortcut.weight", "encoder.norm_out.weight",
            "decoder.mid.block_2.conv2.bias", "encoder.mid.attn_1.proj_out.weight"} <= v
    assert CLIP_PREFIX + "encoder.layers.11.self_attn.q_proj.weight" in t


def _module(sd, name: str):
    """A component of a loaded model by its folder name."""
    return {"vae": sd.vae, "unet": sd.net, **sd.family.modules()}[name]


def test_single_file_weights_equal_the_originals(loaded, tiny_components) -> None:
    for name in MODELS:
        ours, ref = _module(loaded, name).state_dict(), tiny_components[name].state_dict()
        assert set(ours) == set(ref), name
        for key, value in ref.items():
            assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, (name, key)
            assert (ours[key] - value).abs().max().item() == 0, (name, key)


def test_single_file_outputs_match(loaded, tiny_components) -> None:
    ref = tiny_components
    g = torch.Generator().manual_seed(0)

    def tokens(tokenizer) -> torch.Tensor:
        prompt = ["a face with glasses"]
        return tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids

    ids = tokens(ref["tokenizer"])
    assert torch.equal(tokens(loaded.family.tokenizer), ids)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    z = torch.randn(1, 4, 16, 16, generator=g)
    with torch.no_grad():
        c_ours, c_ref = loaded.family.text_encoder(ids)[0], ref["text_encoder"](ids)[0]
        torch.testing.assert_close(c_ours, c_ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(loaded.net(z, 500, encoder_hidden_states=c_ref).sample,
                                   ref["unet"](z, 500, encoder_hidden_states=c_ref).sample, rtol=0, atol=1e-6)
        torch.testing.assert_close(loaded.vae.encode(image).latent_dist.mean,
                                   ref["vae"].encode(image).latent_dist.mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(loaded.vae.decode(z).sample, ref["vae"].decode(z).sample,
                                   rtol=0, atol=1e-6)


def test_single_file_loads_frozen_with_facts(loaded, ldm_file: Path) -> None:
    for name in MODELS:
        module = _module(loaded, name)
        assert not module.training and not any(m.training for m in module.modules())
        assert not any(p.requires_grad for p in module.parameters())
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in module.parameters())
    facts = loaded.describe()
    assert facts["model"] == str(ldm_file)
    assert facts["resolution"] == 32 and facts["token_dim"] == 16 and facts["prediction_type"] == "epsilon"
    assert facts["scaling_factor"] == pytest.approx(0.18215)
    assert loaded.schedule.num_train_timesteps == 1000 and type(loaded.scheduler).__name__ == "DDIMScheduler"


def test_pickle_checkpoint_needs_allow_pickle(tmp_path: Path) -> None:
    ckpt = tmp_path / "v1-5-pruned-emaonly.ckpt"
    ckpt.write_bytes(b"never read: refused before loading")
    with pytest.raises(UsageError) as err:
        load_model(str(ckpt), cpu_runtime(), config=str(tmp_path))
    assert "--allow-pickle" in str(err.value) and str(ckpt) in str(err.value)
    assert err.value.exit_code == 2


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def ckpt_file(ldm_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny single file as a legacy pickle checkpoint (plain tensors only)."""
    good = tmp_path_factory.mktemp("pickle") / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(ldm_file))}, good)
    return good


def test_allow_pickle_loads_with_weights_only(ckpt_file: Path, config_dir: Path, tmp_path: Path,
                                              tiny_components) -> None:
    """--allow-pickle loads plain tensors from a .ckpt; code in a pickle never runs (torch.load weights_only)."""
    sd = load_model(str(ckpt_file), cpu_runtime(), config=str(config_dir), allow_pickle=True)
    assert torch.equal(sd.net.state_dict()["conv_in.weight"], tiny_components["unet"].state_dict()["conv_in.weight"])
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": _Payload(marker)}}, evil)
    with pytest.raises(ModelLoadError) as err:
        load_model(str(evil), cpu_runtime(), config=str(config_dir), allow_pickle=True)
    assert str(evil) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_garbage_keys_are_a_one_line_load_error(config_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "not-stable-diffusion.safetensors"
    save_file({"hello.world": torch.zeros(3), "model.weight": torch.ones(2, 2)}, str(bad))
    with pytest.raises(ModelLoadError) as err:
        load_model(str(bad), cpu_runtime(), config=str(config_dir))
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg
    assert err.value.exit_code == 4


def test_checkpoint_missing_weights_is_a_load_error(ldm_file: Path, config_dir: Path, tmp_path: Path) -> None:
    # diffusers only leaves absent weights detectable (on the meta device) when accelerate is installed;
    # without it, it fills them randomly and silently (load_state_dict(strict=False)).
    pytest.importorskip("accelerate")
    partial = tmp_path / "partial.safetensors"
    kept = {k: v for k, v in load_file(str(ldm_file)).items() if ".output_blocks.3." not in k}
    save_file(kept, str(partial))
    with pytest.raises(ModelLoadError) as err:
        load_model(str(partial), cpu_runtime(), config=str(config_dir))
    assert str(partial) in str(err.value) and "lacks" in str(err.value) and "\n" not in str(err.value)


def test_missing_config_folder_offline(ldm_file: Path, tmp_path: Path, monkeypatch) -> None:
    _offline_hub(monkeypatch, tmp_path)
    missing = tmp_path / "no-such-configs"
    with pytest.raises(ModelLoadError) as err:
        load_model(str(ldm_file), cpu_runtime(), config=str(missing))
    assert str(missing) in str(err.value) and "\n" not in str(err.value) and err.value.exit_code == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_model(str(ldm_file), cpu_runtime(), config=str(tmp_path / "empty"))


def test_no_config_offline_and_uncached(ldm_file: Path, tmp_path: Path, monkeypatch) -> None:
    """Without --model-config diffusers looks up SD 1.5's configs: offline and uncached, a clear error."""
    _offline_hub(monkeypatch, tmp_path)
    for config in (None, "someone/not-cached"):
        with pytest.raises(ModelLoadError) as err:
            load_model(str(ldm_file), cpu_runtime(), config=config)
        msg = str(err.value)
        assert str(ldm_file) in msg and "--model-config" in msg and "\n" not in msg, msg


@pytest.mark.slow
def test_reconstruct_loads_a_ckpt_only_with_allow_pickle(ckpt_file: Path, config_dir: Path, tmp_path: Path,
                                                         capsys) -> None:
    from PIL import Image

    from tests.tiny import run_main

    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(photo)
    args = ["reconstruct", str(photo), "--model", str(ckpt_file), "--model-config", str(config_dir), "--out",
            str(tmp_path / "rec"), "-q", "--steps", "2", "--device", "cpu"]
    code, out, err = run_main(args, capsys)
    assert code == 2 and "--allow-pickle" in err and not (tmp_path / "rec").exists()
    code, out, err = run_main([*args, "--allow-pickle"], capsys)
    assert code == 0 and Path(out.strip()).is_file(), err
