"""Write diffusers Stable Diffusion components as an original CompVis/LDM single-file checkpoint.

This is the layout of the ``v1-5-pruned-emaonly.safetensors`` files that A1111/ComfyUI users
download: ``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE),
``cond_stage_model.transformer.text_model.*`` (CLIP text encoder), plus the DDPM schedule
buffers at the top level. The mapping is the reverse of the one diffusers' single-file loader
applies, derived here from each model's config so it works for any SD 1.x-shaped model
(the tiny test shapes as well as the real ones). Test helper only; caso itself never writes these.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

# diffusers ResnetBlock2D names -> LDM ResBlock names (UNet)
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
                "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
# top-level UNet layers
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
# VAE attention (diffusers Attention, linear) -> LDM AttnBlock (1x1 convs)
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# top-level VAE layers (encoder./decoder. prefix kept)
_VAE_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}


def _split(key: str) -> tuple[str, str]:
    """``a.b.c.weight`` -> (``a.b.c``, ``weight``)."""
    module, _, leaf = key.rpartition(".")
    return module, leaf


def _rename_first(name: str, table: dict[str, str]) -> str:
    """Rename the leading module of ``name`` (``norm1`` or ``to_out.0``) with ``table``."""
    for old, new in table.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    raise KeyError(name)


def unet_key(key: str, config: Any) -> str:
    """The LDM name (without ``model.diffusion_model.``) of a diffusers UNet2DConditionModel key."""
    module, leaf = _split(key)
    if module in _UNET_TOP:
        return f"{_UNET_TOP[module]}.{leaf}"
    per = int(config.layers_per_block) + 1  # LDM blocks per level: layers (+ the down/upsampler)
    has_attn = [t.startswith("CrossAttn") for t in config.up_block_types]
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)",
                     key)
    if m:
        side, b, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if side == "down":
            if kind == "downsamplers":  # Downsample2D.conv -> input_blocks.N.0.op
                return f"input_blocks.{1 + b * per + per - 1}.0.op.{rest.removeprefix('conv.')}"
            index = 1 + b * per + j
        else:
            if kind == "upsamplers":  # Upsample2D.conv, after the attention if the level has one
                return f"output_blocks.{b * per + per - 1}.{2 if has_attn[b] else 1}.{rest}"
            index = b * per + j
        group = "input_blocks" if side == "down" else "output_blocks"
        if kind == "resnets":
            return f"{group}.{index}.0.{_rename_first(rest, _UNET_RESNET)}"
        return f"{group}.{index}.1.{rest}"  # SpatialTransformer: same inner names as diffusers
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "resnets":  # middle_block.0 and .2 are the resnets, .1 the transformer
            return f"middle_block.{2 * j}.{_rename_first(rest, _UNET_RESNET)}"
        return f"middle_block.1.{rest}"
    raise KeyError(f"no LDM name for UNet key {key!r}")


def vae_key(key: str, config: Any) -> str:
    """The LDM name (without ``first_stage_model.``) of a diffusers AutoencoderKL key."""
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    part, _, rest = key.partition(".")  # encoder / decoder
    module, leaf = _split(rest)
    if module in _VAE_TOP:
        return f"{part}.{_VAE_TOP[module]}.{leaf}"
    n = len(config.block_out_channels)
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)", rest)
    if m:
        side, b, kind, j, tail = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        level = b if side == "down" else n - 1 - b  # LDM numbers decoder levels from the bottom
        if kind == "resnets":
            return f"{part}.{side}.{level}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        sampler = "downsample" if side == "down" else "upsample"
        return f"{part}.{side}.{level}.{sampler}.{tail}"
    m = re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest)
    if m:
        return f"{part}.mid.block_{int(m.group(1)) + 1}.{m.group(2)}"
    m = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest)
    if m:
        return f"{part}.mid.attn_1.{_rename_first(m.group(1), _VAE_ATTN)}"
    raise KeyError(f"no LDM name for VAE key {key!r}")


def clip_key(key: str) -> str:
    """The LDM name of a transformers CLIPTextModel key (flattened or ``text_model.``-wrapped)."""
    return CLIP_PREFIX + key.removeprefix("text_model.")


def _ddpm_buffers(scheduler_config: Any) -> dict[str, torch.Tensor]:
    """The schedule buffers real LDM checkpoints carry at the top level (ignored by loaders)."""
    n = int(scheduler_config.num_train_timesteps)
    betas = torch.linspace(float(scheduler_config.beta_start) ** 0.5, float(scheduler_config.beta_end) ** 0.5,
                           n, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    return {"betas": betas.float(), "alphas_cumprod": alphas_cumprod.float(),
            "alphas_cumprod_prev": prev.float(), "sqrt_alphas_cumprod": alphas_cumprod.sqrt().float(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt().float()}


def to_ldm_state_dict(components: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The UNet, VAE and CLIP text encoder of ``components`` as one LDM-layout state dict."""
    out: dict[str, torch.Tensor] = {}

    def put(name: str, value: torch.Tensor) -> None:
        if name in out:
            raise KeyError(f"two weights map to LDM key {name!r}")
        out[name] = value.detach().clone().contiguous()

    unet, vae, text_encoder = components["unet"], components["vae"], components["text_encoder"]
    for key, value in unet.state_dict().items():
        put(UNET_PREFIX + unet_key(key, unet.config), value)
    for key, value in vae.state_dict().items():
        name = vae_key(key, vae.config)
        if ".mid.attn_1." in name and value.ndim == 2:  # linear -> 1x1 conv, as in LDM's AttnBlock
            value = value[:, :, None, None]
        put(VAE_PREFIX + name, value)
    for key, value in text_encoder.state_dict().items():
        put(clip_key(key), value)
    # Real SD 1.x files also hold CLIP's position_ids buffer (a non-persistent buffer in recent transformers).
    position_ids = CLIP_PREFIX + "embeddings.position_ids"
    if position_ids not in out:
        n_pos = text_encoder.config.max_position_embeddings
        out[position_ids] = torch.arange(n_pos, dtype=torch.int64)[None]
    if "scheduler" in components:
        out.update(_ddpm_buffers(components["scheduler"].config))
    return out


def save_single_file(components: dict[str, Any], path: str | Path) -> Path:
    """Write ``components`` as an LDM single-file ``.safetensors`` checkpoint at ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file(to_ldm_state_dict(components), str(path), metadata={"format": "pt"})
    return path
