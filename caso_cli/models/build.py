"""Build Stable Diffusion-shaped components from configs with random (seeded) weights.

Used by the tests (``TINY``), the toy world (``TOY``, then trained) and the benchmarks
(``SD15``, the real SD 1.5 shapes). Everything is offline: the tokenizer is the small
one of :mod:`caso_cli.models.tokenizer`, whose special ids match Stable Diffusion's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caso_cli.models.tokenizer import VOCAB_SIZE, load_tokenizer, write_tokenizer_files


@dataclass(frozen=True)
class SDShape:
    """Architecture of a Stable Diffusion-style model."""

    sample_size: int = 16  # latent side; image side = sample_size * 2 ** (len(vae_channels) - 1)
    vae_channels: tuple[int, ...] = (8, 16)  # AutoencoderKL block_out_channels
    vae_layers: int = 1  # layers per VAE block
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (8, 16)  # UNet2DConditionModel block_out_channels
    unet_layers: int = 1  # layers per UNet block
    attention_head_dim: int | tuple[int, ...] = 2
    norm_groups: int = 4  # GroupNorm groups (must divide every channel count)
    text_width: int = 16  # CLIP hidden size = token embedding size = cross-attention dim
    text_layers: int = 1
    text_heads: int = 2
    text_intermediate: int = 32
    prediction_type: str = "epsilon"
    words: Sequence[str] = field(default_factory=tuple)  # whole words in the offline vocabulary

    @property
    def resolution(self) -> int:
        return self.sample_size * 2 ** (len(self.vae_channels) - 1)


TINY = SDShape()
SD15 = SDShape(sample_size=64, vae_channels=(128, 256, 512, 512), vae_layers=2, unet_channels=(320, 640, 1280, 1280),
               unet_layers=2, attention_head_dim=8, norm_groups=32, text_width=768, text_layers=12, text_heads=12,
               text_intermediate=3072)


def scheduler_config(prediction_type: str = "epsilon") -> dict[str, Any]:
    """Stable Diffusion 1.x's scheduler settings."""
    return {
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": prediction_type,
        "timestep_spacing": "leading",
    }


def _tokenizer(words: Sequence[str], folder: str | Path | None) -> Any:
    """The offline tokenizer of ``words``, its files written to ``folder`` (None: a temporary folder, removed once
    the tokenizer has read them)."""
    import tempfile

    if folder is not None:
        write_tokenizer_files(Path(folder), words)
        return load_tokenizer(Path(folder))
    with tempfile.TemporaryDirectory(prefix="caso-tok-") as tmp:
        write_tokenizer_files(Path(tmp), words)
        return load_tokenizer(Path(tmp))


def build_components(shape: SDShape, seed: int = 0, tokenizer_dir: str | Path | None = None) -> dict[str, Any]:
    """Randomly initialised vae, unet, text_encoder, tokenizer and DDIM scheduler of ``shape``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    n = len(shape.unet_channels)
    torch.manual_seed(seed)
    unet: Any = UNet2DConditionModel(
        sample_size=shape.sample_size, in_channels=shape.latent_channels, out_channels=shape.latent_channels,
        block_out_channels=shape.unet_channels, layers_per_block=shape.unet_layers,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=shape.text_width, attention_head_dim=shape.attention_head_dim,
        norm_num_groups=shape.norm_groups,
    )
    torch.manual_seed(seed + 1)
    m = len(shape.vae_channels)
    vae: Any = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=shape.latent_channels,
        block_out_channels=shape.vae_channels, layers_per_block=shape.vae_layers,
        down_block_types=("DownEncoderBlock2D",) * m, up_block_types=("UpDecoderBlock2D",) * m,
        norm_num_groups=shape.norm_groups, sample_size=shape.resolution,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=shape.text_width, intermediate_size=shape.text_intermediate,
        num_hidden_layers=shape.text_layers, num_attention_heads=shape.text_heads, max_position_embeddings=77,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=shape.text_width,
    ))
    return {
        "vae": vae.eval(), "unet": unet.eval(), "text_encoder": text_encoder.eval(),
        "tokenizer": _tokenizer(shape.words, tokenizer_dir),
        "scheduler": DDIMScheduler(**scheduler_config(shape.prediction_type)),
    }


@dataclass(frozen=True)
class SDXLShape:
    """Architecture of an SDXL-style model: two text encoders of different widths, pooled text and time ids."""

    sample_size: int = 16
    vae_channels: tuple[int, ...] = (8, 16)
    unet_channels: tuple[int, ...] = (8, 16)
    transformer_layers: tuple[int, ...] = (1, 2)  # transformer blocks per UNet level (SDXL: 1, 2, 10)
    attention_head_dim: tuple[int, ...] = (2, 4)
    norm_groups: int = 4
    text_widths: tuple[int, int] = (16, 24)  # CLIP-L and OpenCLIP-G hidden sizes (SDXL: 768, 1280)
    projection_dim: int = 24  # the second encoder's pooled projection (SDXL: 1280)
    time_embed_dim: int = 4  # per time id (SDXL: 256)
    text_layers: int = 2
    words: Sequence[str] = field(default_factory=tuple)

    @property
    def resolution(self) -> int:
        return self.sample_size * 2 ** (len(self.vae_channels) - 1)


TINY_XL = SDXLShape()
SDXL = SDXLShape(sample_size=128, vae_channels=(128, 256, 512, 512), unet_channels=(320, 640, 1280),
                 transformer_layers=(0, 2, 10), attention_head_dim=(5, 10, 20), norm_groups=32,
                 text_widths=(768, 1280), projection_dim=1280, time_embed_dim=256, text_layers=12)


def build_sdxl_components(shape: SDXLShape, seed: int = 0, tokenizer_dir: str | Path | None = None) -> dict[str, Any]:
    """Randomly initialised vae, unet, both text encoders and tokenizers and a DDIM scheduler of an SDXL ``shape``
    (the layout of diffusers' StableDiffusionXLPipeline)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    n = len(shape.unet_channels)
    torch.manual_seed(seed)
    unet: Any = UNet2DConditionModel(
        sample_size=shape.sample_size, in_channels=4, out_channels=4, block_out_channels=shape.unet_channels,
        layers_per_block=2, down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        transformer_layers_per_block=shape.transformer_layers, attention_head_dim=shape.attention_head_dim,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=shape.time_embed_dim,
        projection_class_embeddings_input_dim=6 * shape.time_embed_dim + shape.projection_dim,
        cross_attention_dim=sum(shape.text_widths), norm_num_groups=shape.norm_groups,
    )
    torch.manual_seed(seed + 1)
    m = len(shape.vae_channels)
    vae: Any = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=shape.vae_channels, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * m, up_block_types=("UpDecoderBlock2D",) * m,
        norm_num_groups=shape.norm_groups, sample_size=shape.resolution, scaling_factor=0.13025,
    )

    def clip(width: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=VOCAB_SIZE, hidden_size=width, intermediate_size=2 * width,
                              num_hidden_layers=shape.text_layers, num_attention_heads=2, max_position_embeddings=77,
                              bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                              projection_dim=shape.projection_dim, hidden_act="gelu")

    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(clip(shape.text_widths[0]))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(clip(shape.text_widths[1]))
    tokenizer = _tokenizer(shape.words, tokenizer_dir)  # both encoders use the same vocabulary
    return {
        "vae": vae.eval(), "unet": unet.eval(), "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(), "tokenizer": tokenizer,
        "tokenizer_2": copy.deepcopy(tokenizer), "scheduler": DDIMScheduler(**scheduler_config()),
    }


def save_pipeline_folder(components: dict[str, Any], out_dir: str | Path, force_zeros: bool = True) -> Path:
    """Save components as a standard diffusers folder (``model_index.json`` + safetensors): an SD 1.x/2.x pipeline,
    or an SDXL one when they hold a second text encoder (``force_zeros`` is its force_zeros_for_empty_prompt)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if "text_encoder_2" in components:
        pipe: Any = StableDiffusionXLPipeline(**components, force_zeros_for_empty_prompt=force_zeros)
    else:
        pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    return Path(out_dir)
