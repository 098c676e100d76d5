"""A tiny seeded Stable Diffusion 3 (random weights): the layout of diffusers' StableDiffusion3Pipeline, offline.

Two CLIP text encoders with projections, a T5 encoder with a small Unigram tokenizer, an SD3 transformer, a VAE
with SD3's latent scale and shift, and the flow-matching scheduler with SD3's shift.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

WORDS = ("a", "face", "with", "mustache", "glasses", "smile")
CLIP_WIDTHS = (16, 24)  # CLIP-L and CLIP-G hidden sizes (SD3: 768, 1280)
T5_WIDTH = 48  # T5's d_model = the transformer's joint attention width (SD3: 4096)
PROJECTION = 32  # each CLIP encoder's projection (SD3: 768, 1280)


def t5_tokenizer(words: tuple[str, ...] = WORDS) -> Any:
    """A T5 tokenizer (Unigram, ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2) that knows ``words`` whole and spells the rest."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *((f"\u2581{w}", -1.0) for w in words),
              ("\u2581", -3.0), *((c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz")]
    return T5TokenizerFast(vocab=pieces, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def tiny_sd3_components(seed: int = 0) -> dict[str, Any]:
    """The components of a StableDiffusion3Pipeline, seeded."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from caso_cli.models.tokenizer import VOCAB_SIZE, load_tokenizer, write_tokenizer_files

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=T5_WIDTH,
                                        caption_projection_dim=16, pooled_projection_dim=2 * PROJECTION,
                                        pos_embed_max_size=16)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, sample_size=32,
                        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)

    def clip(width: int) -> Any:
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=VOCAB_SIZE, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
            pad_token_id=49407, projection_dim=PROJECTION, hidden_act="gelu"))

    torch.manual_seed(seed + 2)
    text_encoder = clip(CLIP_WIDTHS[0])
    torch.manual_seed(seed + 3)
    text_encoder_2 = clip(CLIP_WIDTHS[1])
    tokenizer_3 = t5_tokenizer()
    torch.manual_seed(seed + 4)
    text_encoder_3 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_3), d_model=T5_WIDTH, d_kv=8, d_ff=64,
                                             num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                                             pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    with tempfile.TemporaryDirectory(prefix="caso-tok-") as tmp:
        write_tokenizer_files(Path(tmp), WORDS)
        tokenizer = load_tokenizer(Path(tmp))
    return {"transformer": transformer.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": tokenizer, "text_encoder_2": text_encoder_2.eval(), "tokenizer_2": copy.deepcopy(tokenizer),
            "text_encoder_3": text_encoder_3.eval(), "tokenizer_3": tokenizer_3,
            "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0)}


def save_sd3_folder(components: dict[str, Any], out_dir: str | Path) -> Path:
    """The components saved as a diffusers StableDiffusion3Pipeline folder."""
    from diffusers import StableDiffusion3Pipeline

    StableDiffusion3Pipeline(**components).save_pretrained(str(out_dir), safe_serialization=True)
    return Path(out_dir)
