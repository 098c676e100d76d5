"""Stable Diffusion 1.x and 2.x: one CLIP text encoder, whose last hidden states are the condition.

The encoding itself (learned vectors entering at the token-embedding layer) is in :mod:`caso_cli.conditioning`,
shared with families that have more CLIP encoders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from caso_cli import conditioning
from caso_cli.errors import UsageError
from caso_cli.families import Condition, Family, register_family

if TYPE_CHECKING:
    import torch


@register_family
class SD(Family):
    """SD 1.x / 2.x (``StableDiffusionPipeline``): vectors of the CLIP token width (768, or 1024 for SD 2.x)."""

    name = "sd"
    title = "Stable Diffusion 1.x/2.x"
    pipelines = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
    text_parts = ("text_encoder", "tokenizer")
    single_file_extras = {"safety_checker": None, "feature_extractor": None, "image_encoder": None,
                          "requires_safety_checker": False}

    @classmethod
    def load_text(cls, source: str, dtype: Any, local_only: bool) -> dict[str, Any]:
        from transformers import CLIPTextModel, CLIPTokenizer

        return {"text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype,
                                                              local_files_only=local_only),
                "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_only)}

    def __init__(self, parts: Mapping[str, Any]) -> None:
        self.text_encoder, self.tokenizer = parts["text_encoder"], parts["tokenizer"]

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.text_encoder}

    @property
    def widths(self) -> list[int]:
        return [int(self.text_encoder.get_input_embeddings().weight.shape[1])]

    def encode_vectors(self, vectors: torch.Tensor) -> Condition:
        return Condition(conditioning.encode_vectors(self.text_encoder, self.tokenizer, vectors))

    def encode_prompts(self, prompts: list[str]) -> Condition:
        return Condition(conditioning.encode_prompts(self.text_encoder, self.tokenizer, prompts))

    def encode_in_context(self, contexts: list[str], vectors: torch.Tensor | None,
                          placement: str = "token") -> Condition:
        return Condition(conditioning.encode_in_context(self.text_encoder, self.tokenizer, contexts, vectors,
                                                        placement))

    def context_width(self, placement: str) -> int:
        return int(self.text_encoder.config.hidden_size) if placement == "output" else self.vector_dim

    def null_condition(self) -> Condition:
        return Condition(conditioning.null_condition(self.text_encoder, self.tokenizer))

    def encoder_hash(self) -> str:
        return conditioning.table_hash(self.text_encoder)

    def token_table(self) -> torch.Tensor:
        return self.text_encoder.get_input_embeddings().weight.detach().float().cpu()

    def word_vector(self, word: str) -> torch.Tensor:
        ids = self.tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise UsageError(f"init word {word!r} is {len(ids)} tokens for this tokenizer; use a single-token word")
        return self.token_table()[ids[0]]

    @classmethod
    def export_tensors(cls, token: str, vector: torch.Tensor, fmt: str, widths: list[int]) -> dict[str, torch.Tensor]:
        # diffusers' load_textual_inversion reads {token: (d,)}; AUTOMATIC1111 and ComfyUI read {"emb_params": (1, d)}
        return {token: vector} if fmt == "diffusers" else {"emb_params": vector.unsqueeze(0)}

    @classmethod
    def read_file_tensors(cls, tensors: dict[str, torch.Tensor]) -> tuple[str | None, torch.Tensor, list[int]] | None:
        if len(tensors) != 1:
            return None
        key, tensor = next(iter(tensors.items()))
        if tensor.dim() == 2 and tensor.shape[0] == 1:
            tensor = tensor[0]
        return (None if key == "emb_params" else key), tensor, [int(tensor.shape[-1])]
