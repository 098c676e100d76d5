"""An offline CLIP tokenizer with a small vocabulary and the real special-token ids.

The vocabulary holds the 256 byte characters of CLIP's byte-level BPE, their ``</w>``
(end of word) forms, the given whole words (with the merges that build them), and
``<|startoftext|>`` = 49406, ``<|endoftext|>`` = 49407, so a text model with
``vocab_size=49408`` sees the same special ids as Stable Diffusion's. The ids in between are
unreachable placeholders, so ``len(tokenizer) == 49408`` as for CLIP. Any text
tokenizes: unknown words fall back to byte characters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

BOS_ID = 49406
EOS_ID = 49407
VOCAB_SIZE = 49408


@lru_cache(maxsize=1)
def _byte_chars() -> tuple[str, ...]:
    """The 256 printable stand-ins of CLIP/GPT-2's byte-level BPE, in CLIP's vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    order, chars = list(printable), [chr(b) for b in printable]
    for b in range(256):
        if b not in printable:
            order.append(b)
            chars.append(chr(256 + len(order) - len(printable) - 1))
    return tuple(chars)  # in CLIP's vocabulary order: "!" is id 0


def vocab_and_merges(words: Iterable[str] = ()) -> tuple[dict[str, int], list[str]]:
    """Vocabulary and merge rules: bytes, bytes + ``</w>``, whole ``words``, special tokens."""
    vocab: dict[str, int] = {}
    for c in _byte_chars():
        vocab[c] = len(vocab)
    for c in _byte_chars():
        vocab[c + "</w>"] = len(vocab)
    merges: list[str] = []
    for word in sorted({w.lower() for w in words}):
        if not word.isascii() or not word.isalpha():
            raise ValueError(f"vocabulary words must be ASCII letters, got {word!r}")
        left = word[0]
        for i in range(1, len(word)):
            right = word[i] + ("</w>" if i == len(word) - 1 else "")
            merged = left + right
            if merged not in vocab:
                merges.append(f"{left} {right}")
                vocab[merged] = len(vocab)
            left = merged
    if len(vocab) >= BOS_ID:
        raise ValueError("vocabulary too large")
    # Fill the ids up to BOS with unreachable placeholders (no merge builds them), so the ids are
    # dense like CLIP's: tools that add tokens (textual inversion) give the new one id len(tokenizer).
    while len(vocab) < BOS_ID:
        vocab[f"<|unused{len(vocab)}|>"] = len(vocab)
    vocab["<|startoftext|>"] = BOS_ID
    vocab["<|endoftext|>"] = EOS_ID
    return vocab, merges


def write_tokenizer_files(out_dir: str | Path, words: Iterable[str] = ()) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges(words)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n", encoding="utf-8")
    config: dict[str, Any] = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    specials = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    return out


def load_tokenizer(folder: str | Path) -> Any:
    """Load a CLIPTokenizer from local files only."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
