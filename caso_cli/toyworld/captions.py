"""Captions for toy faces, generated from their labels, and the toy models' vocabularies.

Two grammars, one per toy model (:data:`GRAMMARS`):

* ``v1`` (the first model, ``toy-v1``): every attribute of four named with probability 0.65, one phrase each,
  presences and absences alike::

    "a face with a mustache and no glasses and blond hair"
    "a face"                       (every attribute left out)
    ""                             (10%: the null caption, for classifier-free guidance)

* ``v2`` (the second-generation model, ``toy``): like real captions. Several phrasings per class
  ("a mustache", "a moustache", "facial hair"), filler openings ("a close up photo of a person"),
  adjectives before the noun ("a smiling face"), free order; absences seldom named (20% against 65% for
  presences); skin tone, eye shape and background colour named in only a few percent of captions; 3% of
  mentions name a wrong class (label noise)::

    "a photo of a smiling face with eyeglasses and ginger hair"
    "a person with dark hair and a moustache and narrow eyes"

Every word is a whole word of the offline tokenizer's vocabulary (:meth:`Grammar.words`), so each word is one
token. Prompts (:func:`prompt`) use each class's most common phrasing after ``"a face with"``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from caso_cli.toyworld.render import ATTRIBUTES, BINARY_ATTRIBUTES, DARK_SKIN, EYE_SHAPES, FaceParams

SLOT = "{}"
P_EMPTY = 0.10  # share of empty (null) captions
P_MENTION = 0.65  # chance that a caption names a worded attribute (v1: every class; v2: presences)

#: Classes of the factors captions name besides :data:`ATTRIBUTES` (index = label value).
EXTRA_CLASSES: dict[str, tuple[str, ...]] = {
    "skin": ("light", "dark"),
    "eyes": EYE_SHAPES,
    "background": ("green", "teal", "blue", "purple"),
}
CLASSES: dict[str, tuple[str, ...]] = {**ATTRIBUTES, **EXTRA_CLASSES}
BG_HUE_EDGES = (0.48, 0.56, 0.66)  # background hue bins: green | teal | blue | purple


class Phrase(NamedTuple):
    """One way to name a class: the words, how often captions use it, and whether it goes before the noun."""

    text: str
    weight: float = 1.0
    before: bool = False  # an adjective ("smiling") placed before the opening's noun


@dataclass(frozen=True)
class Grammar:
    """How a toy model's captions name classes: phrasings, how often each class is named, openings, noise."""

    name: str
    phrases: Mapping[str, Sequence[Sequence[Phrase]]]  # attribute -> per class -> phrasings (first: most common)
    mention: Mapping[str, Sequence[float]]  # attribute -> per class: chance a caption names it
    openings: Sequence[Phrase] = (Phrase("a face"),)
    p_noise: float = 0.0  # chance a mention names a wrong class
    p_empty: float = P_EMPTY
    attributes: tuple[str, ...] = field(default=())  # the order attributes are considered in

    def words(self) -> tuple[str, ...]:
        """Every word a caption can use (sorted)."""
        texts = [p.text for p in self.openings] + ["with and"]
        texts += [p.text for classes in self.phrases.values() for options in classes for p in options]
        return tuple(sorted({w for t in texts for w in t.split()}))

    def phrase(self, attribute: str, label: int) -> str:
        """The most common phrasing of class ``label`` of ``attribute``."""
        return self.phrases[attribute][int(label)][0].text


def _one(text: str) -> tuple[Phrase, ...]:
    return (Phrase(text),)


V1 = Grammar(
    name="v1",
    phrases={
        "mustache": (_one("no mustache"), _one("a mustache")),
        "glasses": (_one("no glasses"), _one("glasses")),
        "smile": (_one("no smile"), _one("a smile")),
        "hair": tuple(_one(f"{c} hair") for c in ATTRIBUTES["hair"]),
    },
    mention={a: (P_MENTION,) * len(ATTRIBUTES[a]) for a in ATTRIBUTES},
    attributes=(*BINARY_ATTRIBUTES, "hair"),
)

P_ABSENT = 0.20  # v2: chance a caption names an absent worded attribute
P_RARE = 0.03  # v2: chance a caption names skin tone or eye shape
P_BACKGROUND = 0.02  # v2: chance a caption names the background colour
V2 = Grammar(
    name="v2",
    phrases={
        "mustache": ((Phrase("no mustache", 0.7), Phrase("no facial hair", 0.3)),
                     (Phrase("a mustache", 0.6), Phrase("a moustache", 0.25), Phrase("facial hair", 0.15))),
        "glasses": ((Phrase("no glasses"),),
                    (Phrase("glasses", 0.6), Phrase("eyeglasses", 0.25), Phrase("spectacles", 0.15))),
        "smile": ((Phrase("no smile", 0.5), Phrase("a neutral expression", 0.3), Phrase("serious", 0.2, True)),
                  (Phrase("a smile", 0.55), Phrase("smiling", 0.3, True), Phrase("a grin", 0.15))),
        "hair": ((Phrase("black hair", 0.6), Phrase("dark hair", 0.4)),
                 (Phrase("blond hair", 0.5), Phrase("blonde hair", 0.3), Phrase("fair hair", 0.2)),
                 (Phrase("red hair", 0.6), Phrase("ginger hair", 0.25), Phrase("auburn hair", 0.15))),
        "skin": ((Phrase("light skin", 0.5), Phrase("pale skin", 0.3), Phrase("a light complexion", 0.2)),
                 (Phrase("dark skin", 0.5), Phrase("brown skin", 0.3), Phrase("a dark complexion", 0.2))),
        "eyes": ((Phrase("round eyes", 0.6), Phrase("wide eyes", 0.4)),
                 (Phrase("narrow eyes", 0.6), Phrase("squinting eyes", 0.4))),
        "background": tuple((Phrase(f"a {c} background", 0.7), Phrase(f"a {c} backdrop", 0.3))
                            for c in EXTRA_CLASSES["background"]),
    },
    mention={**{a: (P_ABSENT, P_MENTION) for a in BINARY_ATTRIBUTES}, "hair": (P_MENTION,) * 3,
             "skin": (P_RARE, P_RARE), "eyes": (P_RARE, P_RARE), "background": (P_BACKGROUND,) * 4},
    openings=(Phrase("a face", 0.35), Phrase("a photo of a face", 0.15), Phrase("a portrait of a person", 0.1),
              Phrase("a close up photo of a person", 0.1), Phrase("a picture of a person", 0.1),
              Phrase("a person", 0.1), Phrase("portrait", 0.1)),
    p_noise=0.03,
    attributes=(*BINARY_ATTRIBUTES, "hair", "skin", "eyes", "background"),
)
GRAMMARS = {g.name: g for g in (V1, V2)}
#: The grammar of the shipped ``toy`` model.
DEFAULT = V2


#: classifier attribute names (list_attr_toy.txt columns, lower case) that name a caption attribute differently
ALIASES = {"dark_skin": "skin", "narrow_eyes": "eyes"}


#: toy model alias -> the grammar of the captions it was trained on
MODEL_GRAMMARS = {"toy": "v2", "toy-v1": "v1"}


def for_model(name: str | None) -> Grammar | None:
    """The caption grammar of toy model ``name`` (None: not a toy model)."""
    return GRAMMARS[MODEL_GRAMMARS[name]] if name in MODEL_GRAMMARS else None


def caption_attribute(name: str | None, grammar: Grammar = DEFAULT) -> str | None:
    """The attribute of ``grammar`` a classifier's attribute ``name`` is ("Dark_skin" -> "skin"; None: none)."""
    key = ALIASES.get((name or "").lower(), (name or "").lower())
    return key if key in grammar.phrases else None


def class_label(attribute: str | None, cls: str, grammar: Grammar = DEFAULT) -> tuple[str, int] | None:
    """(caption attribute, label) of a classifier's class: ("mustache", "no_mustache") -> ("mustache", 0),
    ("Dark_skin", "dark_skin") -> ("skin", 1), ("hair", "red") -> ("hair", 2); None where the grammar has no words
    for it."""
    attr = caption_attribute(attribute, grammar)
    if attr is None:
        return None
    classes, c = CLASSES[attr], cls.lower()
    if len(classes) == 2 and c not in classes:
        return attr, 0 if c.startswith(("no_", "not_")) else 1
    return (attr, classes.index(c)) if c in classes else None


def caption_labels(params: FaceParams) -> dict[str, np.ndarray]:
    """Class indices of everything a caption can name, for a batch of faces (keys of :data:`CLASSES`)."""
    hue = np.array([colorsys.rgb_to_hsv(*(c / 255.0))[0] for c in np.asarray(params.background, dtype=np.float64)])
    return {**params.labels(), "skin": (params.skin_tone > DARK_SKIN).astype(np.int8),
            "eyes": params.eye_shape.astype(np.int8),
            "background": np.searchsorted(BG_HUE_EDGES, hue, side="right").astype(np.int8)}


def _pick(options: Sequence[Phrase], rng: np.random.Generator) -> Phrase:
    if len(options) == 1:
        return options[0]
    w = np.array([p.weight for p in options])
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def compose(phrases: Sequence[str], opening: str = "a face", before: Sequence[str] = ()) -> str:
    """``"a face with X and Y and Z"`` (``"a face"`` when there is nothing to name); adjectives in ``before`` go
    in front of the opening's last word (``"a smiling face"``)."""
    if before:
        *head, noun = opening.split()
        opening = " ".join([*head, *before, noun])
    return f"{opening} with {' and '.join(phrases)}" if phrases else opening


def phrase(attribute: str, label: int, grammar: Grammar = DEFAULT) -> str:
    """The most common phrase naming class ``label`` of ``attribute`` ("a mustache", "no glasses", "red hair")."""
    return grammar.phrase(attribute, label)


def prompt(grammar: Grammar = DEFAULT, **labels: int | str) -> str:
    """A prompt for the given attributes, e.g. ``prompt(mustache=0, hair="red")``: the most common phrasings."""
    parts = []
    for name, value in labels.items():
        if name not in grammar.phrases:
            raise ValueError(f"unknown attribute {name!r}")
        label = CLASSES[name].index(value) if isinstance(value, str) else int(value)
        parts.append(grammar.phrase(name, label))
    return compose(parts)


def caption(labels: Mapping[str, int], rng: np.random.Generator, grammar: Grammar = DEFAULT,
            p_mention: float | None = None, p_empty: float | None = None) -> str:
    """A random caption for one face with class indices ``labels`` (keys as in :data:`CLASSES`).

    ``p_mention`` (optional) replaces the grammar's mention rates with one rate for every class."""
    if rng.random() < (grammar.p_empty if p_empty is None else p_empty):
        return ""
    names = [a for a in grammar.attributes if a in labels
             and rng.random() < (grammar.mention[a][int(labels[a])] if p_mention is None else p_mention)]
    order = rng.permutation(len(names))
    after: list[str] = []
    before: list[str] = []
    for i in order:
        a, k = names[i], int(labels[names[i]])
        if grammar.p_noise and rng.random() < grammar.p_noise:  # a wrong mention
            k = (k + 1 + int(rng.integers(len(CLASSES[a]) - 1))) % len(CLASSES[a])
        p = _pick(grammar.phrases[a][k], rng)
        (before if p.before else after).append(p.text)
    return compose(after, _pick(grammar.openings, rng).text, before)


def captions(labels: Mapping[str, np.ndarray], rng: np.random.Generator, grammar: Grammar = DEFAULT,
             p_mention: float | None = None, p_empty: float | None = None) -> list[str]:
    """Random captions for a batch: ``labels`` maps attribute names to (N,) class arrays."""
    n = len(next(iter(labels.values())))
    return [caption({k: int(v[i]) for k, v in labels.items()}, rng, grammar, p_mention, p_empty) for i in range(n)]


def contexts(attribute: str, n: int = 64, seed: int = 0, grammar: Grammar = DEFAULT) -> tuple[str, ...]:
    """Contexts for learning ``attribute`` in context (caso_cli.contexts): ``"a face with {}"`` first (the default
    edit context), then ``n - 1`` drawn from the caption grammar: each other worded attribute named (at a random
    class, a random phrasing) with probability P_MENTION, the slot at a random place among the phrases, a random
    opening."""
    rng = np.random.default_rng(seed)
    others = [a for a in (*BINARY_ATTRIBUTES, "hair") if a != attribute]
    out = [compose([SLOT])]
    while len(out) < n:
        parts = [_pick(grammar.phrases[a][int(rng.integers(len(CLASSES[a])))], rng)
                 for a in others if rng.random() < P_MENTION]
        after = [p.text for p in parts if not p.before]
        after.insert(int(rng.integers(len(after) + 1)), SLOT)
        out.append(compose(after, _pick(grammar.openings, rng).text, [p.text for p in parts if p.before]))
    return tuple(out)


def held_context(attribute: str, labels: Mapping[str, int], grammar: Grammar = DEFAULT) -> str:
    """The edit context that names every other attribute at its class in ``labels``: ``"a face with {} and no
    glasses and a smile and red hair"`` (the held classes in words, most common phrasings)."""
    return compose([SLOT, *(grammar.phrase(a, int(labels[a])) for a in (*BINARY_ATTRIBUTES, "hair")
                            if a != attribute and a in labels)])
