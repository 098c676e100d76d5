"""CLIP text-encoder outputs for learned token vectors and prompts (docs/method.md §1); the families
(:mod:`caso_cli.families`) wrap them into UNet conditions.

A condition for learned vectors ``e_1..e_m`` is the text encoder's output for the
token sequence ``[BOS, e_1..e_m, EOS, pad...]``, padded exactly as the model's own
tokenizer pads an m-token prompt. The vectors enter at the token-embedding layer
(through a forward hook), so the rest of the encoder (position embeddings, causal
mask, final layer norm) is the model's own code: a learned vector is byte for byte a
textual-inversion embedding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from caso_cli.errors import UsageError

if TYPE_CHECKING:
    import torch


def _max_length(tokenizer: Any) -> int:
    return int(getattr(tokenizer, "model_max_length", 77) or 77)


def prompt_ids(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """Token ids of ``prompts``, padded and truncated to the tokenizer's max length."""
    enc = tokenizer(prompts, padding="max_length", max_length=_max_length(tokenizer), truncation=True,
                    return_tensors="pt")
    return enc.input_ids


def placeholder_ids(tokenizer: Any, num_vectors: int) -> torch.Tensor:
    """Ids ``[BOS, p * num_vectors, EOS, pad...]`` (1, L): the empty prompt with slots after BOS."""
    import torch

    length = _max_length(tokenizer)
    if not 1 <= num_vectors <= length - 2:
        raise UsageError(f"a condition holds 1 to {length - 2} learned tokens, got {num_vectors}")
    empty = prompt_ids(tokenizer, [""])[0]
    # The slot id is irrelevant (its embedding is replaced); use the BOS id so that
    # the encoder's "first EOS" pooling position stays where the tokenizer put it.
    slots = torch.full((num_vectors,), int(empty[0]), dtype=empty.dtype)
    ids = torch.cat([empty[:1], slots, empty[1:]])[:length]
    return ids.unsqueeze(0)


@contextmanager
def _replace_token_rows(text_encoder: Any, vectors: torch.Tensor) -> Iterator[None]:
    """Within the block, token-embedding outputs at positions 1..m are ``vectors`` (B, m, d)."""
    layer = text_encoder.get_input_embeddings()
    m = vectors.shape[1]

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        import torch

        rows = vectors.to(device=output.device, dtype=output.dtype).expand(output.shape[0], -1, -1)
        return torch.cat([output[:, :1], rows, output[:, 1 + m:]], dim=1)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode_vectors(text_encoder: Any, tokenizer: Any, vectors: torch.Tensor) -> torch.Tensor:
    """Condition c for learned token vectors: T([BOS, e_1..e_m, EOS, ...]) (docs/method.md §1).

    ``vectors`` is (m, d) or (B, m, d); the result is (B, L, D). Gradients flow into ``vectors``.
    """
    return vector_output(text_encoder, tokenizer, vectors)[0]


def vector_output(text_encoder: Any, tokenizer: Any, vectors: torch.Tensor, hidden_states: bool = False) -> Any:
    """The encoder's whole output for ``[BOS, e_1..e_m, EOS, ...]`` (last hidden states, pooled or projected
    embedding, and with ``hidden_states`` every layer's), for families that read more than the last layer."""
    if vectors.dim() == 2:
        vectors = vectors.unsqueeze(0)
    d = text_encoder.get_input_embeddings().weight.shape[1]
    if vectors.shape[-1] != d:
        raise UsageError(f"embedding vectors have size {vectors.shape[-1]} but this text encoder takes {d}")
    device = text_encoder.get_input_embeddings().weight.device
    ids = placeholder_ids(tokenizer, vectors.shape[1]).to(device).expand(vectors.shape[0], -1)
    with _replace_token_rows(text_encoder, vectors):
        return text_encoder(input_ids=ids, output_hidden_states=hidden_states)


PLACEMENTS = ("token", "output")  # where a vector learned in context enters the text encoder (docs/method.md §10)


def context_ids(tokenizer: Any, contexts: list[str], slot_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of ``contexts`` (B, L) with one slot token where each context's ``{}`` is, and the slot positions
    (B,): ``[BOS, words before, slot, words after, EOS, pad...]``, padded as the tokenizer pads, which is how any SD
    tool tokenises a prompt holding a textual-inversion token. ``slot_id`` defaults to the BOS id (its embedding is
    replaced)."""
    import torch

    from caso_cli.contexts import split

    length = _max_length(tokenizer)
    empty = prompt_ids(tokenizer, [""])[0]
    bos, eos, pad = int(empty[0]), int(empty[1]), int(empty[2])
    rows, positions = [], []
    for context in contexts:
        before, after = (tokenizer(part, add_special_tokens=False).input_ids if part else [] for part in split(context))
        ids = [bos, *before, bos if slot_id is None else slot_id, *after, eos]
        if len(ids) > length:
            raise UsageError(f"context {context!r} is {len(ids)} tokens with its slot; this text encoder reads "
                             f"{length}")
        rows.append(ids + [pad] * (length - len(ids)))
        positions.append(1 + len(before))
    return torch.tensor(rows), torch.tensor(positions)


def encode_in_context(text_encoder: Any, tokenizer: Any, contexts: list[str], vectors: torch.Tensor | None,
                      placement: str = "token") -> torch.Tensor:
    """Conditions (B, L, D) for one vector per context placed in its slot (docs/method.md §10), or the context
    itself when ``vectors`` is None.

    ``token``: the vector is the slot's input token embedding (a textual-inversion token in the context); the
    context itself is its words without the slot. ``output``: the slot holds the end token, and the vector is added
    to the encoder's output state at the slot alone (start, words and end states untouched); the context itself is
    that sequence without the vector. ``vectors`` is (B, d) or (d,); gradients flow into it.
    """
    import torch

    from caso_cli.contexts import words

    if placement not in PLACEMENTS:
        raise UsageError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    device = text_encoder.get_input_embeddings().weight.device
    if placement == "token" and vectors is None:
        return encode_prompts(text_encoder, tokenizer, [words(c) for c in contexts])
    eos = int(prompt_ids(tokenizer, [""])[0][1])
    ids, pos = context_ids(tokenizer, contexts, None if placement == "token" else eos)
    ids, rows = ids.to(device), torch.arange(len(contexts), device=device)
    if vectors is not None and vectors.dim() == 1:
        vectors = vectors.expand(len(contexts), -1)
    if placement == "output":
        hidden = text_encoder(input_ids=ids)[0]
        if vectors is None:
            return hidden
        return hidden.index_put((rows, pos.to(device)), hidden[rows, pos.to(device)] + vectors.to(hidden.dtype))
    assert vectors is not None
    d = text_encoder.get_input_embeddings().weight.shape[1]
    if vectors.shape[-1] != d:
        raise UsageError(f"embedding vectors have size {vectors.shape[-1]} but this text encoder takes {d}")

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output.index_put((rows, pos.to(output.device)), vectors.to(device=output.device, dtype=output.dtype))

    handle = text_encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        return text_encoder(input_ids=ids)[0]
    finally:
        handle.remove()


def encode_prompts(text_encoder: Any, tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """Conditions for ordinary text prompts (B, L, D), as Stable Diffusion pipelines encode them."""
    return prompt_output(text_encoder, tokenizer, prompts)[0]


def prompt_output(text_encoder: Any, tokenizer: Any, prompts: list[str], hidden_states: bool = False) -> Any:
    """The encoder's whole output for ``prompts`` (see :func:`vector_output`)."""
    device = text_encoder.get_input_embeddings().weight.device
    return text_encoder(input_ids=prompt_ids(tokenizer, prompts).to(device), output_hidden_states=hidden_states)


def null_condition(text_encoder: Any, tokenizer: Any) -> torch.Tensor:
    """The null condition c_null = T("") (1, L, D) (docs/method.md §1)."""
    return encode_prompts(text_encoder, tokenizer, [""])


def table_hash(text_encoder: Any) -> str:
    """Identifies a text encoder by its token-embedding table (16 hex digits of sha256)."""
    import torch

    weight = text_encoder.get_input_embeddings().weight.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]
