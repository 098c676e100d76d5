"""Stable Diffusion XL: two CLIP text encoders, pooled text embeddings and size/crop time ids.

The condition is built exactly as diffusers' ``StableDiffusionXLPipeline.encode_prompt`` builds it: the
penultimate hidden states of both encoders side by side, the second encoder's projected (pooled) embedding as
``text_embeds``, and at each UNet call the time ids ``(h, w, 0, 0, h, w)`` of the working resolution (original
size = target size, no crop). The null condition is zeros where the model's ``force_zeros_for_empty_prompt`` says so
(SDXL base), else the encoding of "". A learned vector is the two encoders' token vectors side by side
(768 + 1280 = 2048 for SDXL); exported, it is the ``clip_l`` / ``clip_g`` file other SDXL tools load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from caso_cli import conditioning
from caso_cli.errors import UsageError
from caso_cli.families import Condition, SideBySide, model_index, register_family

if TYPE_CHECKING:
    import torch



@register_family
class SDXL(SideBySide):
    """SDXL (``StableDiffusionXLPipeline``): vectors of both CLIP token widths side by side."""

    name = "sdxl"
    title = "SDXL"
    file_keys = ("clip_l", "clip_g")  # the SDXL textual-inversion layout: one tensor per text encoder
    pipelines = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")
    text_parts = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    single_file_extras = {"image_encoder": None, "feature_extractor": None}

    @classmethod
    def load_text(cls, source: str, dtype: Any, local_only: bool) -> dict[str, Any]:
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        return {
            "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype,
                                                          local_files_only=local_only),
            "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_only),
            "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(
                source, subfolder="text_encoder_2", torch_dtype=dtype, local_files_only=local_only),
            "tokenizer_2": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", local_files_only=local_only),
            # diffusers' default when the model does not say: True
            "force_zeros_for_empty_prompt": bool(model_index(source, local_only).get("force_zeros_for_empty_prompt",
                                                                                     True)),
        }

    @classmethod
    def from_pipeline(cls, pipe: Any) -> dict[str, Any]:
        return {**super().from_pipeline(pipe),
                "force_zeros_for_empty_prompt": bool(pipe.config.get("force_zeros_for_empty_prompt", True))}

    @classmethod
    def matches_checkpoint(cls, keys: set[str]) -> bool:
        # the original SDXL layout keeps the second (OpenCLIP) encoder under conditioner.embedders.1
        return any(k.startswith("conditioner.embedders.1.") for k in keys)

    def __init__(self, parts: Mapping[str, Any]) -> None:
        self.encoders = [(parts["text_encoder"], parts["tokenizer"]), (parts["text_encoder_2"], parts["tokenizer_2"])]
        self.force_zeros = bool(parts.get("force_zeros_for_empty_prompt", True))

    def text_pairs(self) -> list[tuple[Any, Any]]:
        return self.encoders

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.encoders[0][0], "text_encoder_2": self.encoders[1][0]}

    @staticmethod
    def _condition(outputs: list[Any]) -> Condition:
        import torch

        hidden = torch.cat([out.hidden_states[-2] for out in outputs], dim=-1)  # penultimate layer of each
        return Condition(hidden, {"text_embeds": outputs[1][0]})  # the second encoder's projected embedding

    def encode_vectors(self, vectors: torch.Tensor) -> Condition:
        if vectors.shape[-1] != self.vector_dim:
            raise UsageError(f"embedding vectors have size {vectors.shape[-1]} but this model takes {self.vector_dim} "
                             f"({' + '.join(map(str, self.widths))})")
        parts = vectors.split(self.widths, dim=-1)
        return self._condition([conditioning.vector_output(te, tok, part, hidden_states=True)
                                for (te, tok), part in zip(self.encoders, parts, strict=True)])

    def encode_prompts(self, prompts: list[str]) -> Condition:
        return self._condition([conditioning.prompt_output(te, tok, prompts, hidden_states=True)
                                for te, tok in self.encoders])

    def null_condition(self) -> Condition:
        import torch

        empty = self.encode_prompts([""])
        if not self.force_zeros:
            return empty
        return Condition(torch.zeros_like(empty.hidden), {k: torch.zeros_like(v) for k, v in empty.extra.items()})

    def added_inputs(self, cond: Condition, size: tuple[int, int]) -> dict[str, Any]:
        import torch

        h, w = size
        ids = torch.tensor([h, w, 0, 0, h, w], dtype=cond.hidden.dtype, device=cond.hidden.device)
        return {**cond.extra, "time_ids": ids.expand(cond.batch, -1)}
