"""Write diffusers Stable Diffusion components as an original (CompVis/LDM or Stability sgm) single-file checkpoint.

SD 1.x (:func:`save_single_file`): the layout of the ``v1-5-pruned-emaonly.safetensors`` files that
A1111/ComfyUI users download: ``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE),
``cond_stage_model.transformer.text_model.*`` (CLIP text encoder), plus the DDPM schedule
buffers at the top level.

SDXL (:func:`write_sdxl_checkpoint`): the layout of ``sd_xl_base_1.0.safetensors``: the same UNet
(with the add-embedding as ``label_emb.0.*``) and VAE prefixes, the first text encoder (CLIP-L) under
``conditioner.embedders.0.transformer.text_model.*`` and the second (OpenCLIP-G, a
CLIPTextModelWithProjection in diffusers) under ``conditioner.embedders.1.model.*`` in OpenCLIP's own
names: fused ``attn.in_proj_weight``/``in_proj_bias``, ``ln_final``, ``positional_embedding``,
``token_embedding.weight`` and a transposed ``text_projection``.

The mapping is the reverse of the one diffusers' single-file loader applies
(``diffusers/loaders/single_file_utils.py``: ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``,
``convert_ldm_clip_checkpoint``, ``convert_open_clip_checkpoint``), derived here from each model's config
so it works for any SD 1.x/SDXL-shaped model (the tiny test shapes as well as the real ones).
Test helper only; caso itself never writes these.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."  # SDXL's first text encoder (CLIP-L)
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."  # SDXL's second text encoder (OpenCLIP-G)

# diffusers ResnetBlock2D names -> LDM ResBlock names (UNet)
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
                "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
# top-level UNet layers
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             # SDXL's pooled-text + time-ids embedding (addition_embed_type="text_time")
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
# VAE attention (diffusers Attention, linear) -> LDM AttnBlock (1x1 convs)
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# top-level VAE layers (encoder./decoder. prefix kept)
_VAE_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}
# transformers CLIP text model (``text_model.`` stripped) -> OpenCLIP text tower, outside the layers
_OPEN_CLIP_TOP = {"embeddings.token_embedding.weight": "token_embedding.weight",
                  "embeddings.position_embedding.weight": "positional_embedding",
                  "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
# ... and inside layer N (``encoder.layers.N.`` -> ``transformer.resblocks.N.``); q/k/v are fused (in_proj)
_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}
_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")  # in_proj's thirds, in this order


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
    # levels without attention (SDXL's first) have the upsampler right after the resnet
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


def clip_key(key: str, prefix: str = CLIP_PREFIX) -> str:
    """The LDM name of a transformers CLIPTextModel key (flattened or ``text_model.``-wrapped)."""
    return prefix + key.removeprefix("text_model.")


def open_clip_key(key: str) -> str:
    """The OpenCLIP name (without ``conditioner.embedders.1.model.``) of a CLIPTextModelWithProjection key.

    The q/k/v projections of a layer all name that layer's fused ``attn.in_proj_weight`` (or ``_bias``),
    of which each is a third (q, k, v from the top: diffusers splits it at the hidden size).
    """
    key = key.removeprefix("text_model.")
    if key == "text_projection.weight":
        return "text_projection"  # stored transposed: (hidden, projection)
    if key in _OPEN_CLIP_TOP:
        return _OPEN_CLIP_TOP[key]
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if m:
        layer, module, leaf = m.groups()
        if module in _QKV:
            return f"transformer.resblocks.{layer}.attn.in_proj_{leaf}"
        if module in _OPEN_CLIP_LAYER:
            return f"transformer.resblocks.{layer}.{_OPEN_CLIP_LAYER[module]}.{leaf}"
    raise KeyError(f"no OpenCLIP name for text encoder key {key!r}")


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


class _StateDict(dict):
    """The checkpoint being written: every name once, every tensor a contiguous copy."""

    def put(self, name: str, value: torch.Tensor) -> None:
        if name in self:
            raise KeyError(f"two weights map to LDM key {name!r}")
        self[name] = value.detach().clone().contiguous()


def _put_unet_vae(out: _StateDict, components: dict[str, Any]) -> None:
    unet, vae = components["unet"], components["vae"]
    for key, value in unet.state_dict().items():
        out.put(UNET_PREFIX + unet_key(key, unet.config), value)
    for key, value in vae.state_dict().items():
        name = vae_key(key, vae.config)
        if ".mid.attn_1." in name and value.ndim == 2:  # linear -> 1x1 conv, as in LDM's AttnBlock
            value = value[:, :, None, None]
        out.put(VAE_PREFIX + name, value)


def _put_clip(out: _StateDict, text_encoder: Any, prefix: str) -> None:
    for key, value in text_encoder.state_dict().items():
        out.put(clip_key(key, prefix), value)
    # Real SD 1.x/SDXL files also hold CLIP's position_ids buffer (a non-persistent buffer in recent transformers).
    position_ids = prefix + "embeddings.position_ids"
    if position_ids not in out:
        n_pos = text_encoder.config.max_position_embeddings
        out[position_ids] = torch.arange(n_pos, dtype=torch.int64)[None]


def _put_open_clip(out: _StateDict, text_encoder: Any, prefix: str = OPEN_CLIP_PREFIX) -> None:
    fused: dict[str, dict[str, torch.Tensor]] = {}  # in_proj name -> {q/k/v module: weight}
    for key, value in text_encoder.state_dict().items():
        if key.endswith("position_ids"):  # OpenCLIP has no such buffer
            continue
        name = open_clip_key(key)
        if name == "text_projection":
            value = value.T
        if ".attn.in_proj_" in name:
            fused.setdefault(name, {})[next(m for m in _QKV if f".{m}." in key)] = value
            continue
        out.put(prefix + name, value)
    for name, parts in fused.items():  # one (3 * hidden, ...) tensor: q, k, v from the top
        out.put(prefix + name, torch.cat([parts[module] for module in _QKV]))


def to_ldm_state_dict(components: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The UNet, VAE and CLIP text encoder of SD 1.x ``components`` as one LDM-layout state dict."""
    out = _StateDict()
    _put_unet_vae(out, components)
    _put_clip(out, components["text_encoder"], CLIP_PREFIX)
    if "scheduler" in components:
        out.update(_ddpm_buffers(components["scheduler"].config))
    return dict(out)


def to_sdxl_state_dict(components: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The UNet, VAE and both text encoders of SDXL ``components`` as one sgm-layout state dict
    (no schedule buffers: SDXL's files carry none that loaders read)."""
    out = _StateDict()
    _put_unet_vae(out, components)
    _put_clip(out, components["text_encoder"], SDXL_CLIP_PREFIX)
    _put_open_clip(out, components["text_encoder_2"])
    return dict(out)


def _save(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def save_single_file(components: dict[str, Any], path: str | Path) -> Path:
    """Write ``components`` as a single-file ``.safetensors`` checkpoint at ``path``: the SDXL (sgm) layout when
    they hold a second text encoder, else the SD 1.x (LDM) one."""
    if "text_encoder_2" in components:
        return write_sdxl_checkpoint(components, path)
    return _save(to_ldm_state_dict(components), path)


def write_sdxl_checkpoint(components: dict[str, Any], path: str | Path) -> Path:
    """Write SDXL ``components`` as an original SDXL single-file ``.safetensors`` checkpoint at ``path``."""
    return _save(to_sdxl_state_dict(components), path)
