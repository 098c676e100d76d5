"""Tiny seeded Stable Diffusion components for tests (random weights, built in well under 2 s)."""

from __future__ import annotations

import tempfile
from typing import Any

from caso_cli.models.build import TINY, SDShape, build_components

WORDS = ("a", "face", "with", "mustache", "glasses", "smile")


def tiny_components(seed: int = 0, prediction_type: str = "epsilon") -> dict[str, Any]:
    """vae, unet, text_encoder, tokenizer, scheduler of the TINY shape with a few whole words."""
    shape = SDShape(**{**TINY.__dict__, "words": WORDS, "prediction_type": prediction_type})
    return build_components(shape, seed=seed, tokenizer_dir=tempfile.mkdtemp(prefix="caso-tok-"))
