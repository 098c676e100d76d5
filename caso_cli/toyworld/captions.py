"""Captions for toy faces, generated from their labels, and the toy model's vocabulary.

A caption names some of the four attributes, in random order, each as a presence or an
explicit absence, so both can be prompted::

    "a face with a mustache and no glasses and blond hair"
    "a face with no smile and red hair"
    "a face"                       (every attribute left out)
    ""                             (about 10%: the null caption, for classifier-free guidance)

Every word is a whole word of the offline tokenizer's vocabulary (:data:`WORDS`), so each
attribute word is a single token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from caso_cli.toyworld.render import ATTRIBUTES, BINARY_ATTRIBUTES

#: Phrases for the binary attributes: (absent, present).
BINARY_PHRASES: dict[str, tuple[str, str]] = {
    "mustache": ("no mustache", "a mustache"),
    "glasses": ("no glasses", "glasses"),
    "smile": ("no smile", "a smile"),
}
#: Phrases for the hair classes, in :data:`ATTRIBUTES` order.
HAIR_PHRASES: tuple[str, ...] = tuple(f"{c} hair" for c in ATTRIBUTES["hair"])
PREFIX = "a face"

#: Whole words of the tokenizer vocabulary (every word a caption can use).
WORDS: tuple[str, ...] = tuple(sorted({
    w for phrase in (PREFIX, "with and", *HAIR_PHRASES, *(p for ps in BINARY_PHRASES.values() for p in ps))
    for w in phrase.split()
}))

P_EMPTY = 0.10  # share of empty (null) captions
P_MENTION = 0.65  # chance that a caption names a given attribute (word dropout = 0.35)


def phrase(attribute: str, label: int) -> str:
    """The phrase naming class ``label`` of ``attribute`` ("a mustache", "no glasses", "red hair")."""
    if attribute == "hair":
        return HAIR_PHRASES[int(label)]
    return BINARY_PHRASES[attribute][int(label)]


def compose(phrases: Sequence[str]) -> str:
    """``"a face with X and Y and Z"`` (``"a face"`` when there is nothing to name)."""
    return f"{PREFIX} with {' and '.join(phrases)}" if phrases else PREFIX


def prompt(**labels: int | str) -> str:
    """A prompt for the given attributes, e.g. ``prompt(mustache=0, hair="red")``."""
    parts = []
    for name, value in labels.items():
        if name not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {name!r}")
        label = ATTRIBUTES[name].index(value) if isinstance(value, str) else int(value)
        parts.append(phrase(name, label))
    return compose(parts)


def caption(labels: Mapping[str, int], rng: np.random.Generator, p_mention: float = P_MENTION,
            p_empty: float = P_EMPTY) -> str:
    """A random caption for one face with class indices ``labels`` (keys as in :data:`ATTRIBUTES`)."""
    if rng.random() < p_empty:
        return ""
    names = [n for n in (*BINARY_ATTRIBUTES, "hair") if rng.random() < p_mention]
    order = rng.permutation(len(names))
    return compose([phrase(names[i], labels[names[i]]) for i in order])


def captions(labels: Mapping[str, np.ndarray], rng: np.random.Generator, p_mention: float = P_MENTION,
             p_empty: float = P_EMPTY) -> list[str]:
    """Random captions for a batch: ``labels`` maps attribute names to (N,) class arrays."""
    n = len(next(iter(labels.values())))
    return [caption({k: int(v[i]) for k, v in labels.items()}, rng, p_mention, p_empty) for i in range(n)]


def contexts(attribute: str, n: int = 64, seed: int = 0) -> tuple[str, ...]:
    """Contexts for learning ``attribute`` in context (caso_cli.contexts): ``"a face with {}"`` first (the default
    edit context), then ``n - 1`` drawn from the caption grammar: each other attribute named (at a random class) with
    probability P_MENTION, the slot at a random place among the phrases."""
    rng = np.random.default_rng(seed)
    others = [a for a in (*BINARY_ATTRIBUTES, "hair") if a != attribute]
    out = [compose(["{}"])]
    while len(out) < n:
        parts = [phrase(a, int(rng.integers(len(ATTRIBUTES[a])))) for a in others if rng.random() < P_MENTION]
        parts.insert(int(rng.integers(len(parts) + 1)), "{}")
        out.append(compose(parts))
    return tuple(out)


def held_context(attribute: str, labels: Mapping[str, int]) -> str:
    """The edit context that names every other attribute at its class in ``labels``: ``"a face with {} and no
    glasses and a smile and red hair"`` (the held classes in words)."""
    return compose(["{}", *(phrase(a, int(labels[a])) for a in (*BINARY_ATTRIBUTES, "hair")
                            if a != attribute and a in labels)])
