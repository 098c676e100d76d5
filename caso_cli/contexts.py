"""Word contexts for learning and editing a vector in context (docs/method.md §10).

A context is a prompt with one slot, ``{}``, where the learned token goes: ``"a photo of a face with {}"``.
Learned in context, the vector is guided as a difference from the context in words,
eps(ctx) + w (eps(ctx + e_k) - eps(ctx)), so whatever the context names cancels and the vector has only its
attribute to carry. A context without a slot gets one at its end (``"a face"`` -> ``"a face {}"``).

Built-in template sets per domain serve real models (``--contexts faces``); a file gives one context per line
(``--contexts FILE``); a model whose caption language is known (a plug-in registers it in :data:`CAPTION_CONTEXTS`:
the toy world's models, from their caption grammar) gives contexts in its own words (``--contexts toy``).
Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from caso_cli.errors import UsageError
from caso_cli.plugins import Lookup

SLOT = "{}"

#: Built-in contexts per domain; the first of each is the default edit context of an entry learned with them.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "faces": ("a photo of a face with {}", "a portrait of a person with {}", "a close-up photo of a face, {}",
              "a photo of a man with {}", "a photo of a woman with {}", "a face, {}", "a headshot of a person, {}",
              "a photo of a smiling person with {}", "a black and white photo of a face with {}",
              "a painting of a face with {}"),
    "animals": ("a photo of an animal, {}", "a photo of a {} animal", "a close-up photo of an animal's face, {}",
                "a photo of a pet, {}", "a picture of an animal in the grass, {}", "a portrait of an animal, {}"),
    "objects": ("a photo of a {} object", "a photo of a car, {}", "a picture of a {} thing",
                "a product photo, {}", "a photo of a vehicle on a street, {}", "a close-up photo, {}"),
}


def with_slot(context: str) -> str:
    """``context`` with exactly one slot: its own, or one appended at the end; more than one is an error."""
    n = context.count(SLOT)
    if n > 1:
        raise UsageError(f"context {context!r} has {n} slots ({SLOT}); give one at most")
    return context if n else f"{context.rstrip()} {SLOT}"


def split(context: str) -> tuple[str, str]:
    """The words before and after the slot, stripped."""
    before, after = with_slot(context).split(SLOT)
    return before.strip(), after.strip()


def words(context: str) -> str:
    """The context in words alone, as a caption that leaves the attribute out: the slot and the joining word that
    went with it removed (``"a face with {} and red hair"`` -> ``"a face with red hair"``, ``"a face with X and {}"``
    -> ``"a face with X"``, ``"a face with {}"`` and ``"a face, {}"`` -> ``"a face"``)."""
    before, after = split(context)
    if after.startswith("and "):
        after = after[4:]
    elif before.endswith(" and"):
        before = before[:-4]
    elif not after:
        for joiner in (" with", ","):
            if before.endswith(joiner):
                before = before[: -len(joiner)]
                break
    return " ".join(p for p in (before.strip(), after.strip()) if p)


#: model name -> attribute -> the contexts that model's own captions put around it (None: its captions do not name
#: the attribute). The toy world's plug-in registers its models ("toy", "toy-v1").
CAPTION_CONTEXTS: Lookup[Callable[[str | None], tuple[str, ...] | None]] = Lookup()
OWN_WORDS = "toy"  # the --contexts name of a model's own caption contexts; other models borrow the "toy" model's


def caption_contexts(model: str | None, attribute: str | None) -> tuple[str, ...] | None:
    """The contexts ``model``'s own captions put around ``attribute``; None when its caption language is unknown or
    does not name the attribute."""
    source = CAPTION_CONTEXTS.load().get(model or "")
    return None if source is None else source(attribute)


def resolve(spec: str, attribute: str | None = None, model: str | None = None) -> tuple[str, ...]:
    """Contexts from a domain name of :data:`TEMPLATES`, ``toy`` (the captions of model ``model``, or of the ``toy``
    model when its caption language is unknown, around ``attribute``), or a file with one context per line (blank
    lines and lines starting with ``#`` skipped)."""
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    if spec == OWN_WORDS:
        known = CAPTION_CONTEXTS.load()
        name = model if model in known else OWN_WORDS
        if name not in known:
            raise UsageError("--contexts toy needs the toy world (the caso_cli.plugins entry point 'toy')")
        found = caption_contexts(name, attribute)
        if found is None:
            raise UsageError(f"--contexts toy draws captions around an attribute the {name} captions name; this "
                             f"classifier's attribute is {attribute!r}")
        return found
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"--contexts {spec!r} is neither a built-in set ({', '.join(TEMPLATES)}, toy) nor a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read contexts from {path}: {exc}") from exc
    found = tuple(with_slot(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not found:
        raise UsageError(f"{path} holds no context (one per line, with {SLOT} where the token goes)")
    return found


#: model name -> (attribute, class name) -> the words for that class in that model's captions (None: not known);
#: models without one say a class by its name ("no_glasses" -> "no glasses"). The toy world's plug-in registers "toy".
PHRASEBOOKS: Lookup[Callable[[str, str], str | None]] = Lookup()


def class_words(model: str, attribute: str | None, cls: str) -> str:
    """How ``model``'s captions name class ``cls`` of ``attribute``."""
    book = PHRASEBOOKS.load().get(model)
    found = book(attribute or "", cls) if book else None
    return found if found is not None else cls.replace("_", " ")


def with_held(context: str, phrases: list[str]) -> str:
    """``context`` naming the held classes after its slot: ``"a face with {}"`` + ["no glasses", "red hair"] ->
    ``"a face with {} and no glasses and red hair"``."""
    return with_slot(context).replace(SLOT, " and ".join([SLOT, *phrases]), 1)
