"""Model loading: folders, the local Hugging Face cache, offline errors, frozen components."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from caso_cli.errors import ModelLoadError
from caso_cli.models.build import save_pipeline_folder
from caso_cli.models.loaders import DEFAULT_MODEL, default_model, load_model
from caso_cli.runtime import cpu_runtime
from tests.tiny import fake_hub_cache, offline_model_info, tiny_components


def _assert_frozen(sd) -> None:
    for module in (sd.vae, sd.net, sd.family.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())


def test_folder_loads_frozen_with_facts(tiny_sd, tiny_components) -> None:
    _assert_frozen(tiny_sd)
    facts = tiny_sd.describe()
    assert facts["resolution"] == 32 and facts["token_dim"] == 16 and facts["latent_channels"] == 4
    assert facts["prediction_type"] == "epsilon" and facts["scaling_factor"] == pytest.approx(0.18215)
    assert facts["parameters"]["unet"] == sum(p.numel() for p in tiny_components["unet"].parameters())
    assert tiny_sd.schedule.grid(50)[0] == 981
    ref = tiny_components["unet"].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in tiny_sd.net.state_dict().items())


@pytest.mark.slow
def test_hub_id_resolves_through_local_cache(tiny_model_dir, tmp_path) -> None:
    hf_home = tmp_path / "hf"
    fake_hub_cache(hf_home, "someone/tiny-sd", tiny_model_dir)
    out = offline_model_info(hf_home, "someone/tiny-sd")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["model"] == "someone/tiny-sd" and facts["resolution"] == 32 and facts["token_dim"] == 16


def test_missing_hub_model_offline_names_it_and_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_model("nobody/not-cached", cpu_runtime())
    msg = str(err.value)
    assert "nobody/not-cached" in msg and "hf download nobody/not-cached" in msg and "\n" not in msg
    assert err.value.exit_code == 4


def test_default_model_is_sd15_or_env(monkeypatch) -> None:
    assert default_model() == DEFAULT_MODEL == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    monkeypatch.setenv("CASO_MODEL", "/some/where")
    assert default_model() == "/some/where"


def test_not_a_model_folder_and_missing_path(tmp_path) -> None:
    (tmp_path / "vae").mkdir()
    with pytest.raises(ModelLoadError, match="missing model_index.json"):
        load_model(str(tmp_path), cpu_runtime())
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(ModelLoadError, match="not a diffusers Stable Diffusion 1.x/2.x folder .missing unet, "
                                             "scheduler, text_encoder, tokenizer"):
        load_model(str(tmp_path), cpu_runtime())
    with pytest.raises(ModelLoadError, match="no such model file or folder"):
        load_model(str(tmp_path / "nothing.safetensors"), cpu_runtime())


def test_corrupt_weights_are_a_load_error(tiny_model_dir, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(b"not safetensors at all")
    with pytest.raises(ModelLoadError) as err:
        load_model(str(broken), cpu_runtime())
    assert str(broken) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_v_prediction_model(tmp_path) -> None:
    folder = save_pipeline_folder(tiny_components(prediction_type="v_prediction"), tmp_path / "v")
    sd = load_model(str(folder), cpu_runtime())
    assert sd.prediction_type == "v_prediction"
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    c = torch.zeros(1, 77, 16)
    from caso_cli.diffusion import v_to_eps
    from caso_cli.families import Condition

    with torch.no_grad():
        v = sd.net(z, 500, encoder_hidden_states=c).sample
        assert torch.allclose(sd.eps(z, 500, Condition(c)), v_to_eps(v, z, sd.schedule.level(500)))




# ---- local aliases (register_local_model) ----------------------------------------------------------


@pytest.fixture()
def restore_aliases():
    from caso_cli.models import loaders

    loaders.local_model_names()  # the built-in aliases are registered first
    saved = dict(loaders._LOCAL_MODELS)
    yield
    loaders._LOCAL_MODELS.clear()
    loaders._LOCAL_MODELS.update(saved)


def test_toy_is_a_local_alias_the_toy_world_registers() -> None:
    import caso_cli.toyworld as toy
    from caso_cli.models.loaders import local_model_dir, local_model_names

    assert "toy" in local_model_names()
    assert local_model_dir("toy") == toy.MODEL_DIR
    assert local_model_dir("stable-diffusion-v1-5/stable-diffusion-v1-5") is None
    loaders_src = Path(__file__).resolve().parent.parent / "caso_cli" / "models" / "loaders.py"
    assert '"toyworld"' not in loaders_src.read_text()  # the toy model's folder is the toy world's business


def test_a_registered_alias_loads_and_wins_over_a_folder_of_that_name(tiny_model_dir, tmp_path, monkeypatch,
                                                                       restore_aliases) -> None:
    from caso_cli.models.loaders import local_model_dir, register_local_model

    register_local_model("tiny", tiny_model_dir)
    (tmp_path / "tiny").mkdir()  # an empty folder named like the alias in the working directory
    monkeypatch.chdir(tmp_path)
    sd = load_model("tiny", cpu_runtime())
    assert sd.name == "tiny" and sd.resolution == 32 and sd.token_dim == 16
    register_local_model("later", lambda: tmp_path / "gone")  # resolved at load time
    assert local_model_dir("later") == tmp_path / "gone"
    with pytest.raises(ModelLoadError, match=r"^the later model is missing from this installation"):
        load_model("later", cpu_runtime())
    for bad in ("", "a/b", "two words"):
        with pytest.raises(ValueError, match="one word"):
            register_local_model(bad, tmp_path)


def test_an_uncached_hub_model_with_the_hub_unreachable_fails_at_once_naming_the_offline_model(monkeypatch) -> None:
    """No silent retries: when the model is not cached and the hub does not answer, no download is attempted."""
    from caso_cli.errors import ModelLoadError
    from caso_cli.models import loaders
    from caso_cli.runtime import cpu_runtime

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens, refused at once
    assert loaders.hub_endpoint() == ("127.0.0.1", 9) and not loaders.hub_reachable()
    real = loaders._load_components

    def components(source, runtime, local_only):
        assert local_only, "a download was attempted although the hub is unreachable"
        return real(source, runtime, local_only)

    monkeypatch.setattr(loaders, "_load_components", components)
    with pytest.raises(ModelLoadError) as info:
        loaders.load_model("someone/not-cached", cpu_runtime())
    assert str(info.value) == (
        "model 'someone/not-cached' is not in the local Hugging Face cache and the hub (127.0.0.1:9) is unreachable; "
        "download it with `hf download someone/not-cached` on a machine with network access, or pass a local "
        "diffusers folder or .safetensors file with --model (offline: --model toy)")
