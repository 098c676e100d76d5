"""GPU speed and memory paths checked for correctness on the CPU: gradient checkpointing, SDPA, channels_last,
the fp32 VAE fallback of half-precision decoding, torch.compile's opt-in, peak memory in the metrics."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from caso_cli.config import LearnConfig
from caso_cli.models.classifier import AttributeClassifier
from caso_cli.models.loaders import compile_net, enable_grad_checkpointing, load_model
from caso_cli.pipelines.learn import learn_embedding
from caso_cli.runtime import cpu_runtime
from tests.tiny import random_images, tiny_classifier, tiny_classifier_file


@pytest.fixture(scope="module")
def classifier() -> AttributeClassifier:
    return tiny_classifier()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return random_images()


@pytest.mark.slow
def test_grad_checkpointing_recomputes_and_learns_the_same_vectors(tiny_sd, classifier, images) -> None:
    cfg = LearnConfig(steps=5, batch_size=4, checkpoint_every=0, seed=2)
    plain = learn_embedding(tiny_sd, classifier, images, cfg).vectors
    convs = [m for m in tiny_sd.net.modules() if isinstance(m, torch.nn.Conv2d)]
    calls = {"n": 0}
    hooks = [m.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1)) for m in convs]
    try:
        learn_embedding(tiny_sd, classifier, images, dataclasses.replace(cfg, steps=1))
        plain_calls = calls["n"]
        assert plain_calls == 2 * len(convs)  # null branch + class branch, nothing recomputed
        enable_grad_checkpointing(tiny_sd)
        calls["n"] = 0
        learn_embedding(tiny_sd, classifier, images, dataclasses.replace(cfg, steps=1))
        assert calls["n"] > plain_calls  # layers of the class branch ran again in the backward pass
        checkpointed = learn_embedding(tiny_sd, classifier, images, cfg).vectors
    finally:
        for hook in hooks:
            hook.remove()
        enable_grad_checkpointing(tiny_sd, False)
    # the same arithmetic, recomputed: equal up to rounding
    assert torch.allclose(plain, checkpointed, atol=1e-6), (plain - checkpointed).abs().max()


def test_attention_uses_pytorch_sdpa(tiny_sd) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs = tiny_sd.net.attn_processors
    assert procs and all(isinstance(p, AttnProcessor2_0) for p in procs.values())


def test_channels_last_gives_the_same_noise_prediction(tiny_model_dir, tiny_sd) -> None:

    sd_cl = load_model(str(tiny_model_dir), dataclasses.replace(cpu_runtime(), channels_last=True))
    assert sd_cl.net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not tiny_sd.net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        c = tiny_sd.family.null_condition()
        assert torch.allclose(sd_cl.eps(z, 401, c), tiny_sd.eps(z, 401, c), atol=1e-5)


def test_half_precision_decode_falls_back_to_fp32_on_nan(tiny_model_dir, tiny_sd, monkeypatch) -> None:
    """bf16 on the CPU stands in for fp16 on CUDA: a decode that overflows is redone by an fp32 copy of the VAE."""
    from caso_cli.pipelines.generate import decode_latents

    sd16 = load_model(str(tiny_model_dir), dataclasses.replace(cpu_runtime(), dtype=torch.bfloat16))
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    vae32 = sd16.vae_fp32()  # made before the patch below (a deep copy would copy the patched method too)
    assert vae32.dtype == torch.float32 and sd16.vae.dtype == torch.bfloat16
    decode = sd16.vae.decode

    def overflowing(latents, *a, **k):  # image 1 overflows in half precision
        out = decode(latents, *a, **k)
        out.sample[1] = float("nan")
        return out

    monkeypatch.setattr(sd16.vae, "decode", overflowing)
    x = decode_latents(sd16, z)
    assert torch.isfinite(x).all()
    # the redone image is the fp32 decode (the fp32 copy holds the bf16 weights, so compare with those)
    ref = decode_latents(dataclasses.replace(sd16, vae=vae32), z[1:2])
    assert torch.allclose(x[1], ref[0], atol=1e-5)
    # in fp32 there is nothing to fall back to: the NaN image stays NaN
    fp32_decode = tiny_sd.vae.decode

    def nan32(latents, *a, **k):
        out = fp32_decode(latents, *a, **k)
        out.sample[1] = float("nan")
        return out

    monkeypatch.setattr(tiny_sd.vae, "decode", nan32)
    x32 = decode_latents(tiny_sd, z)
    assert torch.isnan(x32[1]).all() and torch.isfinite(x32[[0, 2]]).all()


def test_compile_is_opt_in_and_compiles_the_unet_in_place(tiny_model_dir, monkeypatch) -> None:
    sd = load_model(str(tiny_model_dir), cpu_runtime())
    called = []
    monkeypatch.setattr(sd.net, "compile", lambda *a, **k: called.append(True))
    compile_net(sd)
    assert called == [True]


@pytest.mark.slow
def test_learn_reports_peak_memory(tiny_model_dir, tmp_path, capsys) -> None:
    import json

    from PIL import Image

    from caso_cli.cli.app import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(folder / f"{i}.png")
    clf = tiny_classifier_file(tmp_path / "c.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "learn", str(folder), "-c", str(clf), "--model", str(tiny_model_dir), "-n", "m",
              "--steps", "1", "--batch-size", "2", "--device", "cpu", "--grad-checkpointing", "--check-samples", "0",
              "--json"])
    assert exit_info.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert out["peak_memory_of"] == "rss"  # max_memory_allocated on CUDA
    assert 50 < out["peak_memory_mb"] < 16_000  # a python process with torch loaded: RSS in MiB, not KiB or bytes
