"""The toy captions: the first model's grammar as it was, the second's like real captions (synonyms, rare mentions,
seldom-named absences, label noise), and the correlated training faces."""

from __future__ import annotations

import numpy as np

from caso_cli.toyworld import captions as C
from caso_cli.toyworld import render as R


def _captions(grammar: C.Grammar, n: int = 20000, config: R.RenderConfig | None = None):
    params = R.sample_params(n, 0, config)
    labels = C.caption_labels(params)
    return params, labels, C.captions(labels, np.random.default_rng(0), grammar)


def test_v1_grammar_is_the_first_models() -> None:
    _, _, caps = _captions(C.V1, 400)
    assert C.V1.words() == ("a", "and", "black", "blond", "face", "glasses", "hair", "mustache", "no", "red", "smile",
                            "with")
    assert all(c == "" or c.startswith("a face") for c in caps)
    assert 0.05 < np.mean([c == "" for c in caps]) < 0.15
    assert C.prompt(C.V1, mustache=1, hair="red") == "a face with a mustache and red hair"
    assert C.contexts("mustache", 3, 0, C.V1)[0] == "a face with {}"


def test_v2_names_rare_factors_rarely_and_absences_seldom() -> None:
    params, labels, caps = _captions(C.V2)
    caps = np.array(caps)
    named = caps != ""

    def share(words: tuple[str, ...], mask: np.ndarray) -> float:
        return float(np.mean([any(w in c for w in words) for c in caps[mask & named]]))

    skin = ("skin", "complexion")
    assert 0.015 < share(skin, np.ones(len(caps), bool)) < 0.045  # a few percent name the skin tone at all
    assert 0.015 < share(("eyes",), np.ones(len(caps), bool)) < 0.045
    # a mustache is named on ~65% of faces with one, its absence on ~20% of faces without
    has = labels["mustache"] == 1
    assert 0.55 < share(("mustache", "moustache", "facial hair"), has) < 0.72
    assert 0.12 < share(("no mustache", "no facial hair"), ~has) < 0.28
    # several phrasings of one class, the first the most common; openings vary
    assert all(any(p in c for c in caps) for p in ("a mustache", "a moustache", "facial hair"))
    assert sum("a moustache" in c for c in caps) < sum("a mustache" in c for c in caps)
    assert sum(c.startswith("a close up photo of a person") for c in caps) > 100
    assert any(c.startswith("a smiling face") or " smiling " in c for c in caps)
    # label noise: some captions name the wrong hair colour
    red = np.array(["red hair" in c or "ginger hair" in c or "auburn hair" in c for c in caps])
    wrong = red & (labels["hair"] != 2)
    assert 0.005 < wrong.sum() / red.sum() < 0.06
    # every word of every caption is one token of the vocabulary
    vocab = set(C.V2.words())
    assert {w for c in caps for w in c.split()} <= vocab and 40 <= len(vocab) <= 80


def test_v2_prompts_use_the_most_common_phrasing_and_classifier_classes_map() -> None:
    assert C.prompt(C.V2, skin=1) == "a face with dark skin"
    assert C.prompt(C.V2, eyes="narrow", glasses=1) == "a face with narrow eyes and glasses"
    assert C.class_label("Dark_skin", "no_dark_skin", C.V2) == ("skin", 0)
    assert C.class_label("narrow_eyes", "narrow_eyes", C.V2) == ("eyes", 1)
    assert C.class_label("hair", "red", C.V2) == ("hair", 2)
    assert C.class_label("Dark_skin", "dark_skin", C.V1) is None  # the first model has no words for it
    assert C.for_model("toy") is C.V2 and C.for_model("toy-v1") is C.V1 and C.for_model("sd15") is None
    ctx = C.contexts("skin", 40, 0, C.V2)
    assert ctx[0] == "a face with {}" and all(c.count("{}") == 1 for c in ctx) and len(set(ctx)) > 30


def test_training_faces_are_correlated_and_test_faces_are_not() -> None:
    train = R.sample_params(20000, 0, R.TRAIN_CONFIG)
    test = R.sample_params(20000, 0)
    black = train.hair == 0
    assert black[train.mustache == 1].mean() - black[train.mustache == 0].mean() > 0.2
    assert black[train.skin_tone > 0.5].mean() - black[train.skin_tone <= 0.5].mean() > 0.2
    black = test.hair == 0
    assert abs(black[test.mustache == 1].mean() - black[test.mustache == 0].mean()) < 0.03
    # the same seed draws the same nuisance values and the same other labels with or without correlation
    for name in ("mustache", "glasses", "smile", "skin_tone", "eye_shape", "cx"):
        assert np.array_equal(getattr(train, name), getattr(test, name))


def test_background_bins_cover_the_hue_range() -> None:
    labels = C.caption_labels(R.sample_params(4000, 3))
    counts = np.bincount(labels["background"], minlength=4)
    assert counts.min() > 400  # green, teal, blue, purple all occur
