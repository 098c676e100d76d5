"""Hold the attributes an edit should leave alone at the classes the image already has (docs/editing.md).

A condition that names only the edited class (``[BOS, e_mustache, EOS]``) lets the model draw every other
attribute from that condition's prior: the face drifts towards the typical face with a mustache. Holding names the
other attributes too, at the classes their classifiers read in the input image, in one condition with the edited
class (docs/method.md §1, several learned tokens side by side)::

    c_src = [BOS, e_{edit, source}, e_{held_1, read_1}, ..., EOS]
    c_tgt = [BOS, e_{edit, target}, e_{held_1, read_1}, ..., EOS]

and guides by one of three forms (``FORMS``; measured in docs/results-2026-12-05.md, where ``auto``, the default,
takes the source form for w >= 0 and the delta form for w < 0, as the validation faces chose), written here for
w >= 0::

    null:    eps_null + w (eps(c_tgt) - eps_null)
    source:  eps(c_src) + w (eps(c_tgt) - eps(c_src))
    delta:   eps_null + w (eps(c_tgt) - eps(c_src))

A negative scale moves the other way, from the target class to the source class, with every held attribute still
named at its own class: null guides towards c_src at |w| (CFG away from c_tgt would push away from the held
classes too), source starts from c_tgt (eps(c_tgt) + |w| (eps(c_src) - eps(c_tgt))), and delta is antisymmetric
already. The source class of a two-class attribute is the other class; of a larger one, the class its classifier
reads in the image. Tokens go in the canonical order (embedding name), as for any multi-attribute condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from caso_cli.errors import UsageError
from caso_cli.pipelines.guidance import Contrast, Scale

if TYPE_CHECKING:
    from caso_cli.families import Condition
    from caso_cli.models.classifier import AttributeClassifier
    from caso_cli.models.loaders import StableDiffusion
    from caso_cli.registry import Embedding

# auto: source for w >= 0, delta for w < 0 (measured: docs/results-2026-12-05.md)
FORMS = ("auto", "null", "source", "delta")


@dataclass(frozen=True)
class Token:
    """An attribute's learned vectors as a condition uses them."""

    name: str  # registry name: sets the token order
    vectors: torch.Tensor  # (K, d)
    classifier: AttributeClassifier | None = None  # reads the image's own class (needed to hold it)


@dataclass(frozen=True)
class EditTerm:
    """One edited attribute: towards row ``index`` of ``token`` at ``scale``."""

    token: Token
    index: int
    scale: Scale  # a float, or a (B, 1, 1, 1) tensor: one scale per latent


def read_classes(tokens: list[Token], images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, len(tokens)) class rows as each token's classifier reads ``images`` (N, 3, H, W) in [-1, 1]."""
    classifiers = [t.classifier for t in tokens if t.classifier is not None]
    if len(classifiers) < len(tokens):
        missing = [t.name for t in tokens if t.classifier is None]
        raise UsageError(f"no classifier to read {', '.join(missing)} in the image")
    if not tokens:
        return torch.zeros(images.shape[0], 0, dtype=torch.long)
    return torch.stack([clf.read(images, device) for clf in classifiers], dim=1)


def source_classes(edits: list[EditTerm], images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, len(edits)) the class each edit starts from: the other class of a two-class attribute, else as read."""
    cols = []
    for e in edits:
        k = e.token.vectors.shape[0]
        if k == 2:
            cols.append(torch.full((images.shape[0],), 1 - e.index, dtype=torch.long))
        else:
            cols.append(read_classes([e.token], images, device)[:, 0])
    return torch.stack(cols, dim=1)


def _conditions(sd: StableDiffusion, tokens: list[Token], classes: torch.Tensor) -> Condition:
    """N rows: image i's condition names token j at row ``classes[i, j]``, tokens in name order."""
    order = sorted(range(len(tokens)), key=lambda j: tokens[j].name)
    rows = torch.stack([torch.stack([tokens[j].vectors[int(classes[i, j])] for j in order])
                        for i in range(classes.shape[0])])
    return sd.family.encode_vectors(rows.to(sd.runtime.device))


@torch.no_grad()
def hold_contrast(sd: StableDiffusion, edits: list[EditTerm], held: list[Token], read: torch.Tensor,
                  source: torch.Tensor, form: str = "auto") -> Contrast:
    """The guidance of held edits for a batch: ``read`` (N, len(held)) held classes, ``source`` (N, len(edits))."""
    if form not in FORMS:
        raise UsageError(f"hold form must be one of {', '.join(FORMS)}, got {form!r}")
    names = [e.token.name for e in edits] + [h.name for h in held]
    if len(set(names)) != len(names):
        raise UsageError("an attribute cannot be edited and held at once (or held twice)")
    tokens = [e.token for e in edits] + held
    src = torch.cat([source, read], dim=1)
    c_src = _conditions(sd, tokens, src)
    c_tgt = []
    for i, e in enumerate(edits):
        tgt = src.clone()
        tgt[:, i] = e.index
        c_tgt.append(_conditions(sd, tokens, tgt))
    c_null = sd.family.null_condition()
    if form == "null":  # w >= 0 towards c_tgt, w < 0 towards c_src at |w|
        return Contrast([c_null, c_src, *c_tgt], 0, [t for i, e in enumerate(edits) for t in
                                                     ((_positive(e.scale), 2 + i, 0), (_positive(-e.scale), 1, 0))])
    if form == "source":  # w < 0: eps(c_src) + (1 + w)(eps(c_tgt) - eps(c_src)) = eps(c_tgt) + |w| (eps(c_src) - ...)
        return Contrast([c_src, *c_tgt], 0, [(_from_target(e.scale), 1 + i, 0) for i, e in enumerate(edits)])
    if form == "auto":  # w >= 0: eps(c_src) + w (...); w < 0: eps_null + w (...); the first edit's sign decides
        return Contrast([c_null, c_src, *c_tgt], 0, [(_indicator(edits[0].scale), 1, 0)]
                        + [(e.scale, 2 + i, 1) for i, e in enumerate(edits)])
    return Contrast([c_null, c_src, *c_tgt], 0, [(e.scale, 2 + i, 1) for i, e in enumerate(edits)])


def _indicator(w: Scale) -> Scale:
    """1 where w >= 0, else 0, for a float or per latent."""
    return (w >= 0).to(w.dtype) if isinstance(w, torch.Tensor) else float(w >= 0)


def _positive(w: Scale) -> Scale:
    """max(w, 0), for a float or per latent."""
    return w.clamp(min=0) if isinstance(w, torch.Tensor) else max(float(w), 0.0)


def _from_target(w: Scale) -> Scale:
    """w where w >= 0, else 1 + w: the source form's weight that starts negative scales from the target class."""
    if isinstance(w, torch.Tensor):
        return torch.where(w >= 0, w, 1 + w)
    return float(w) if w >= 0 else 1 + float(w)


def embedding_classifier(emb: Embedding, device: torch.device | str = "cpu") -> AttributeClassifier:
    """The classifier an embedding was learned with, from the path its entry records, checked by sha256."""
    from caso_cli.errors import InputError
    from caso_cli.io.files import file_sha256
    from caso_cli.models.classifier import load_classifier

    rec = emb.meta.classifier
    path = rec.path if rec else None
    if rec is None or not path:
        raise InputError(f"embedding {emb.name!r} records no classifier, so its class in an image cannot be read "
                         "(learn it with `caso embed learn`, or leave it out of the held attributes)")
    if not Path(path).is_file():
        raise InputError(f"embedding {emb.name!r}: its classifier {path} is missing (moved or deleted?); put it "
                         "back, or leave this attribute out of the held ones")
    if rec.sha256 and file_sha256(path) != rec.sha256:
        raise InputError(f"embedding {emb.name!r}: its classifier {path} changed since the embedding was learned "
                         "(sha256 differs)")
    return load_classifier(path, device)


def held_embeddings(names: list[str], edited: list[Embedding]) -> tuple[list[Embedding], list[str]]:
    """The registry entries to hold, and a warning per entry that ``all`` left out.

    ``names`` are registry names or ``all``: one entry per other attribute learned for the same text encoder as
    the edited embeddings (their ``text_encoder_hash``). ``all`` never holds an edited attribute (by the
    classifier's attribute, whatever the entry's name); of several entries of one attribute it takes one learned
    together with an edited entry, else the newest, and says which. An entry whose classifier is not reachable or
    changed is left out with a warning, while a named entry without one is an error (when it is read).
    """
    from caso_cli.registry import load_embedding

    edited_names = {e.name for e in edited}
    chosen: list[Embedding] = []
    warnings: list[str] = []
    for name in names:
        if name == "all":
            found, warnings = learned_for({str(e.meta.text_encoder_hash) for e in edited}, edited_names)
            picked, notes = one_per_attribute(found, edited)
            warnings += notes
            chosen += [e for e in picked if all(c.name != e.name for c in chosen)]
        elif name in edited_names:
            raise UsageError(f"{name!r} is edited, so it cannot be held too")
        elif all(c.name != name for c in chosen):
            chosen.append(load_embedding(name))
    return chosen, warnings


def one_per_attribute(found: list[Embedding], edited: list[Embedding]) -> tuple[list[Embedding], list[str]]:
    """Of ``found``, one entry per classifier attribute, none of an edited attribute; a note per choice among
    several (an entry learned together with an edited one first, else the newest)."""
    def attribute(e: Embedding) -> str:
        return e.meta.attr or e.name

    edited_attrs = {attribute(e) for e in edited}
    together = {n for e in edited for n in e.meta.learned_with}
    groups: dict[str, list[Embedding]] = {}
    for e in found:
        if attribute(e) not in edited_attrs:
            groups.setdefault(attribute(e), []).append(e)
    picked, notes = [], []
    for attr, entries in groups.items():
        best = max(entries, key=lambda e: (e.name in together, e.meta.created or "", e.name))
        picked.append(best)
        if len(entries) > 1:
            others = ", ".join(sorted(e.name for e in entries if e is not best))
            notes.append(f"holding {attr} with {best.name} (not {others})")
    return sorted(picked, key=lambda e: e.name), notes


def learned_for(te_hashes: set[str], exclude: set[str]) -> tuple[list[Embedding], list[str]]:
    """Registry entries learned for one of these text encoders whose classifier is reachable (besides
    ``exclude``), and a warning for each such entry left out for want of its classifier or of a readable file."""
    from caso_cli.errors import InputError
    from caso_cli.io.files import file_sha256
    from caso_cli.registry import list_names, load_embedding

    found, warnings = [], []
    for name in list_names():
        if name in exclude:
            continue
        try:
            emb = load_embedding(name)
        except InputError as exc:
            warnings.append(f"not holding {name}: {exc}")
            continue
        if str(emb.meta.text_encoder_hash) not in te_hashes:
            continue
        rec = emb.meta.classifier
        if rec is None or not rec.path or not Path(rec.path).is_file():
            warnings.append(f"not holding {name}: its classifier {rec and rec.path or '(none recorded)'} is not "
                            "reachable")
            continue
        if rec.sha256 and file_sha256(rec.path) != rec.sha256:
            warnings.append(f"not holding {name}: its classifier {rec.path} changed since the embedding was learned "
                            "(refitted?); learn it again to hold it")
            continue
        found.append(emb)
    return found, warnings
