"""Checks of learned vectors (docs/method.md §9): the generation check (samples from noise with c_k alone), the
edit check of attributes learned together (held edits of the training images), and the encoding report (what
else each vector's samples carry)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from caso_cli.config import EditConfig
from caso_cli.pipelines.edit import edit_latents, invert_latents
from caso_cli.pipelines.generate import decode_latents, encode_images, samples_per_class
from caso_cli.pipelines.hold import EditTerm, Token, hold_contrast, source_classes

if TYPE_CHECKING:
    from caso_cli.config import LearnConfig
    from caso_cli.models.classifier import AttributeClassifier
    from caso_cli.models.loaders import StableDiffusion

CHECK_PASS = 0.9  # a class passes the generation check when the classifier reads this share of its samples
CHECK_SEED = 4_000_037  # noise of the check's samples (class k uses CHECK_SEED + k)
CHECK_STEPS = 50  # DDIM steps of the check's samples
EDIT_CHECK_STEPS = 10  # DDIM steps of the edit check's inversions and edits
DRIFT = 0.3  # a class vector whose samples show another attribute's class this much more or less often than the data


def edit_context(config: LearnConfig) -> str | None:
    """The context an entry learned with ``config`` is checked and edited in by default: its first (None: the
    paper's whole prompt)."""
    return config.contexts[0] if config.contexts else None


def generation_check(sd: StableDiffusion, classifier: AttributeClassifier, vectors: torch.Tensor, n: int,
                     scale: float, steps: int = CHECK_STEPS, context: str | None = None,
                     placement: str = "token") -> list[float]:
    """Per class k: the share of ``n`` samples generated from noise with c_k alone, or in ``context`` (vectors
    learned in context), at CFG ``scale`` that the classifier reads as k. The noise is fixed (``CHECK_SEED``), so
    two sets of vectors meet the same samples."""
    samples = samples_per_class(sd, vectors, n, CHECK_SEED, steps, scale, context, placement)
    return [float((classifier.read(x, sd.runtime.device) == k).float().mean())
            for k, x in enumerate(samples)]


@torch.no_grad()
def edit_check(sd: StableDiffusion, classifiers: list[AttributeClassifier], vectors: list[torch.Tensor],
               images: torch.Tensor, n: int, scale: float) -> tuple[list[float], list[float]]:
    """The check of attributes learned together, as they are used: held edits of the training images.

    For each attribute (in the given order) and class k, up to ``n`` of ``images`` not read as k are inverted and
    edited towards k at ``scale`` with every other attribute held at the class read in the image (hold form
    ``auto``, EDIT_CHECK_STEPS steps); a two-class attribute's first class is reached as a removal, the second
    class at -``scale``, the way ``caso edit --attr mustache --scale -5`` removes a mustache. Returns, per class
    in order, the share the attribute's classifier then reads as k (success) and the share whose other attributes
    all read as before (kept); 1.0 where no image lacks k.
    """
    device = sd.runtime.device
    edit_cfg = EditConfig(steps=EDIT_CHECK_STEPS)
    read = torch.stack([c.read(images, device) for c in classifiers], dim=1)
    # zero-padded names keep the tokens in the order they were learned in
    tokens = [Token(f"{a:04d}", v, c) for a, (v, c) in enumerate(zip(vectors, classifiers, strict=True))]
    picks = {(a, k): torch.nonzero(read[:, a] != k)[:n, 0]
             for a, tok in enumerate(tokens) for k in range(tok.vectors.shape[0])}
    used = torch.unique(torch.cat(list(picks.values())))
    z_t = invert_latents(sd, encode_images(sd, images[used]), edit_cfg)
    row = {int(i): r for r, i in enumerate(used)}
    success, kept = [], []
    for (a, k), idx in picks.items():
        if not len(idx):
            success.append(1.0)
            kept.append(1.0)
            continue
        others = [b for b in range(len(tokens)) if b != a]
        # towards k at +scale; a two-class attribute's first class as a removal (the second at -scale)
        term = EditTerm(tokens[a], 1, -scale) if k == 0 and tokens[a].vectors.shape[0] == 2 else \
            EditTerm(tokens[a], k, scale)
        x = images[idx]
        contrast = hold_contrast(sd, [term], [tokens[b] for b in others], read[idx][:, others],
                                 source_classes([term], x, device))
        z = edit_latents(sd, z_t[[row[int(i)] for i in idx]], contrast, edit_cfg)  # type: ignore[arg-type]
        after = decode_latents(sd, z)
        now = torch.stack([c.read(after, device) for c in classifiers], dim=1)
        success.append(float((now[:, a] == k).float().mean()))
        kept.append(float((now[:, others] == read[idx][:, others]).all(1).float().mean()))
    return success, kept


def encoding_report(sd: StableDiffusion, vectors: torch.Tensor, classes: list[str],
                    others: dict[str, AttributeClassifier], images: torch.Tensor, n: int,
                    scale: float, context: str | None = None, placement: str = "token") -> dict[str, Any]:
    """What each class vector encodes besides its class: the other attributes' rates (read by ``others``, name ->
    classifier) in ``n`` samples generated with the vector alone or in ``context`` (CFG ``scale``, the check's
    noise), against their rates in the training ``images``; a warning per class and attribute that drifts by
    ``DRIFT`` or more."""
    device = sd.runtime.device
    samples = samples_per_class(sd, vectors, n, CHECK_SEED, CHECK_STEPS, scale, context, placement)

    def rates(clf: AttributeClassifier, x: torch.Tensor) -> dict[str, float]:
        counts = torch.bincount(clf.read(x, device), minlength=len(clf.classes)).float() / len(x)
        return {c: round(float(r), 4) for c, r in zip(clf.classes, counts, strict=True)}

    data = {name: rates(clf, images) for name, clf in others.items()}
    got = {cls: {name: rates(clf, samples[k]) for name, clf in others.items()} for k, cls in enumerate(classes)}
    warnings = []
    for cls in classes:
        for name, clf in others.items():
            shown = [c for c in clf.classes if c.lower() not in (f"no_{name}".lower(), f"not_{name}".lower())] \
                if len(clf.classes) == 2 else clf.classes
            worst = max(shown, key=lambda c: abs(got[cls][name][c] - data[name][c]))  # noqa: B023
            if abs(got[cls][name][worst] - data[name][worst]) >= DRIFT:
                what = name if worst.lower() == name.lower() else f"{name} {worst}"
                warnings.append(f"samples of {cls}: {what} {got[cls][name][worst]:.0%} vs "
                                f"{data[name][worst]:.0%} in the data")
    return {"samples": n, "scale": scale, "data": data, "samples_rates": got, "warnings": warnings}
