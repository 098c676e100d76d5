"""Stable Diffusion 3: two CLIP text encoders and T5, a transformer that predicts a flow-matching velocity.

The condition is built exactly as diffusers' ``StableDiffusion3Pipeline.encode_prompt`` builds it: the penultimate
hidden states of both CLIP encoders side by side, zero-padded to T5's width, followed along the sequence by T5's last
hidden states (256 tokens); the CLIP encoders' projected embeddings side by side are the ``pooled_projections``. The
null condition is the encoding of "" (SD3 has no zeroed negative). The network is diffusers' ``SD3Transformer2DModel``
called as the pipeline calls it, with timestep sigma_t T; its output u = n - z0 is a noise prediction through the
flow schedule (:class:`caso_cli.diffusion.FlowSchedule`, docs/method.md §2), so inversion and sampling are the same
DDIM loops, which on a flow are its Euler steps.

A learned vector is the three encoders' token vectors side by side (768 + 1280 + 4096 = 6144 for SD3): in CLIP it
takes the slots after BOS as in the other families, in T5 the slots before its end token. Exported, it is the
``clip_l`` / ``clip_g`` / ``t5xxl`` file that SD3 tools load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from caso_cli import conditioning
from caso_cli.errors import UsageError
from caso_cli.families import Condition, SideBySide, register_family

if TYPE_CHECKING:
    import torch

    from caso_cli.diffusion import NoiseSchedule

T5_LENGTH = 256  # tokens T5 reads: the pipeline's max_sequence_length default


@register_family
class SD3(SideBySide):
    """SD3 / SD3.5 (``StableDiffusion3Pipeline``): vectors of both CLIP token widths and T5's side by side."""

    name = "sd3"
    title = "Stable Diffusion 3"
    file_keys = ("clip_l", "clip_g", "t5xxl")  # the SD3 textual-inversion layout: one tensor per text encoder
    pipelines = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline")
    text_parts = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")
    net_part = "transformer"
    net_class = "SD3Transformer2DModel"
    scheduler_class = "FlowMatchEulerDiscreteScheduler"

    @classmethod
    def load_text(cls, source: str, dtype: Any, local_only: bool) -> dict[str, Any]:
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel

        clip = CLIPTextModelWithProjection.from_pretrained
        return {
            "text_encoder": clip(source, subfolder="text_encoder", torch_dtype=dtype, local_files_only=local_only),
            "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_only),
            "text_encoder_2": clip(source, subfolder="text_encoder_2", torch_dtype=dtype, local_files_only=local_only),
            "tokenizer_2": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", local_files_only=local_only),
            "text_encoder_3": T5EncoderModel.from_pretrained(source, subfolder="text_encoder_3", torch_dtype=dtype,
                                                             local_files_only=local_only),
            "tokenizer_3": AutoTokenizer.from_pretrained(source, subfolder="tokenizer_3", local_files_only=local_only),
        }

    @classmethod
    def matches_checkpoint(cls, keys: set[str]) -> bool:
        # the original SD3 layout: MM-DiT joint blocks
        return any(k.startswith("model.diffusion_model.joint_blocks.") for k in keys)

    @classmethod
    def schedule_of(cls, scheduler: Any) -> NoiseSchedule:
        from caso_cli.diffusion import flow_schedule_from_config

        return flow_schedule_from_config(scheduler)

    def __init__(self, parts: Mapping[str, Any]) -> None:
        self.clips = [(parts["text_encoder"], parts["tokenizer"]), (parts["text_encoder_2"], parts["tokenizer_2"])]
        self.t5, self.t5_tokenizer = parts["text_encoder_3"], parts["tokenizer_3"]

    def text_pairs(self) -> list[tuple[Any, Any]]:
        return [*self.clips, (self.t5, self.t5_tokenizer)]

    def modules(self) -> dict[str, Any]:
        return {"text_encoder": self.clips[0][0], "text_encoder_2": self.clips[1][0], "text_encoder_3": self.t5}

    def net_output(self, net: Any, z: torch.Tensor, timestep: float | int, cond: Condition,
                   size: tuple[int, int]) -> torch.Tensor:
        import torch

        t = torch.full((z.shape[0],), float(timestep), device=z.device)  # float32, as the pipeline's timesteps
        return net(hidden_states=z, timestep=t, encoder_hidden_states=cond.hidden,
                   pooled_projections=cond.extra["pooled_projections"]).sample

    def _condition(self, clip_outputs: list[Any], t5_states: torch.Tensor) -> Condition:
        import torch

        clip = torch.cat([out.hidden_states[-2] for out in clip_outputs], dim=-1).to(self.clips[0][0].dtype)
        clip = torch.nn.functional.pad(clip, (0, t5_states.shape[-1] - clip.shape[-1]))
        pooled = torch.cat([out[0] for out in clip_outputs], dim=-1)
        return Condition(torch.cat([clip, t5_states.to(clip.dtype)], dim=-2), {"pooled_projections": pooled})

    def _t5_ids(self, texts: list[str]) -> torch.Tensor:
        return self.t5_tokenizer(texts, padding="max_length", max_length=T5_LENGTH, truncation=True,
                                 add_special_tokens=True, return_tensors="pt").input_ids.to(self.t5.device)

    def _t5_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """T5's states for ``[e_1..e_m, </s>, pad...]``: the empty prompt with the vectors in front of its end."""
        import torch

        b, m = vectors.shape[:2]
        empty = self._t5_ids([""])[0]
        ids = torch.cat([empty[:1].expand(m), empty])[:T5_LENGTH].expand(b, -1)  # slot ids are replaced below

        def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
            return torch.cat([vectors.to(device=output.device, dtype=output.dtype), output[:, m:]], dim=1)

        handle = self.t5.get_encoder().get_input_embeddings().register_forward_hook(hook)  # the layer it calls
        try:
            return self.t5(input_ids=ids)[0]
        finally:
            handle.remove()

    def encode_vectors(self, vectors: torch.Tensor) -> Condition:
        if vectors.shape[-1] != self.vector_dim:
            raise UsageError(f"embedding vectors have size {vectors.shape[-1]} but this model takes {self.vector_dim} "
                             f"({' + '.join(map(str, self.widths))})")
        if vectors.dim() == 2:
            vectors = vectors.unsqueeze(0)
        *clip_parts, t5_part = vectors.split(self.widths, dim=-1)
        clip = [conditioning.vector_output(te, tok, part, hidden_states=True)
                for (te, tok), part in zip(self.clips, clip_parts, strict=True)]
        return self._condition(clip, self._t5_vectors(t5_part))

    def encode_prompts(self, prompts: list[str]) -> Condition:
        clip = [conditioning.prompt_output(te, tok, prompts, hidden_states=True) for te, tok in self.clips]
        return self._condition(clip, self.t5(self._t5_ids(prompts))[0])

    def null_condition(self) -> Condition:
        return self.encode_prompts([""])
