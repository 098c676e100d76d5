"""Conditions from learned vectors equal textual inversion through the ordinary tokenizer + encoder."""

from __future__ import annotations

import copy

import pytest
import torch

from caso_cli.conditioning import encode_prompts, encode_vectors, null_condition, placeholder_ids
from caso_cli.errors import UsageError


@pytest.fixture()
def parts(tiny_components: dict) -> dict:
    # A fresh copy per test: the textual-inversion reference adds tokens to the tokenizer (and rows to the encoder).
    return {name: copy.deepcopy(tiny_components[name]) for name in ("tokenizer", "text_encoder")}


def _add_token(tok, enc, name: str, vector: torch.Tensor) -> int:
    tok.add_tokens([name])
    token_id = tok.convert_tokens_to_ids(name)
    enc.resize_token_embeddings(max(token_id + 1, enc.get_input_embeddings().weight.shape[0]))
    with torch.no_grad():
        enc.get_input_embeddings().weight[token_id] = vector
    return token_id


def test_one_vector_equals_textual_inversion(parts) -> None:
    tok, enc = parts["tokenizer"], parts["text_encoder"]
    e = torch.randn(16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = encode_vectors(enc, tok, e[None])
        _add_token(tok, enc, "<caso-mustache>", e)
        ref = encode_prompts(enc, tok, ["<caso-mustache>"])
    assert ours.shape == (1, 77, 16)
    assert (ours - ref).abs().max().item() <= 1e-6


@pytest.mark.slow
def test_two_vectors_equal_two_token_prompt_and_batch(parts) -> None:
    tok, enc = parts["tokenizer"], parts["text_encoder"]
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    with torch.no_grad():
        ours = encode_vectors(enc, tok, torch.stack([torch.stack([a, b]), torch.stack([b, a])]))
        _add_token(tok, enc, "<ta>", a)
        _add_token(tok, enc, "<tb>", b)
        ref = encode_prompts(enc, tok, ["<ta><tb>", "<tb><ta>"])
    assert ours.shape == (2, 77, 16)
    assert (ours - ref).abs().max().item() <= 1e-6
    # the order matters at the encoder (causal attention), as it does for prompts
    assert (ours[0] - ours[1]).abs().max().item() > 1e-3


def test_gradient_reaches_vectors(parts) -> None:
    e = torch.randn(1, 16, requires_grad=True)
    c = encode_vectors(parts["text_encoder"], parts["tokenizer"], e)
    c.square().sum().backward()
    assert e.grad is not None and e.grad.abs().sum().item() > 0


def test_null_condition_is_empty_prompt_and_hook_is_removed(parts) -> None:
    tok, enc = parts["tokenizer"], parts["text_encoder"]
    with torch.no_grad():
        null = null_condition(enc, tok)
        encode_vectors(enc, tok, torch.zeros(1, 16))
        again = encode_prompts(enc, tok, [""])
    assert torch.equal(null, again)
    assert tok("").input_ids == [49406, 49407]


def test_placeholder_ids_pad_like_the_tokenizer(parts) -> None:
    ids = placeholder_ids(parts["tokenizer"], 2)[0].tolist()
    assert ids[0] == 49406 and ids[3:] == [49407] * 74 and len(ids) == 77
    # an SD 2.x-style tokenizer pads with "!" (id 0): the condition must pad the same way
    tok = parts["tokenizer"]
    tok.pad_token = "!"
    ids = placeholder_ids(tok, 1)[0].tolist()
    assert ids[2] == 49407 and ids[3:] == [0] * 74


def test_bad_vector_sizes_are_usage_errors(parts) -> None:
    with pytest.raises(UsageError, match="size 8"):
        encode_vectors(parts["text_encoder"], parts["tokenizer"], torch.zeros(1, 8))
    with pytest.raises(UsageError):
        placeholder_ids(parts["tokenizer"], 76)
