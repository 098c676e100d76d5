"""The ``caso:*`` PNG text chunks that record how an output was made: one builder for every command."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from caso_cli import __version__
from caso_cli.attrs import ResolvedAttr, format_scale
from caso_cli.config import EditConfig


def provenance(model: str, attrs: Sequence[ResolvedAttr], *, scales: Sequence[float] | str | None = None,
               config: EditConfig | None = None, steps: int | None = None, seed: int | None = None,
               source: Path | str | None = None, held: dict[str, str] | None = None,
               hold_form: str | None = None, context: str | None = None) -> dict[str, str]:
    """PNG text chunks for an output of ``model`` guided by ``attrs``.

    ``scales`` replaces the attributes' own scales (a sweep's values, or text as given); ``config`` records the
    edit's start, steps and inversion (``steps`` alone: a generation from noise); ``held`` the classes read for
    held attributes, with ``hold_form``; ``context`` the word context of entries learned in context (default: the
    first entry's own).
    """
    if scales is None:
        scales = [a.scale for a in attrs]
    meta = {
        "caso:version": __version__, "caso:model": model,
        **({"caso:input": str(source)} if source is not None else {}),
        "caso:embeddings": ",".join(a.embedding.name for a in attrs),
        "caso:embedding_sha256": ",".join((a.embedding.meta.sha256 or "")[:16] for a in attrs),
        "caso:classes": ",".join(a.cls for a in attrs),
        "caso:scales": scales if isinstance(scales, str) else ",".join(format_scale(float(s)) for s in scales),
    }
    if config is not None:
        meta.update({"caso:start": config.start_label(), "caso:steps": str(config.steps),
                     "caso:inversion_refine": str(config.inversion_refine),
                     "caso:single_step": str(config.single_step).lower()})
    elif steps is not None:
        meta["caso:steps"] = str(steps)
    if seed is not None:
        meta["caso:seed"] = str(seed)
    in_context = [a for a in attrs if a.embedding.meta.contexts]
    if in_context:
        from caso_cli.contexts import with_slot

        meta["caso:context"] = with_slot(context or in_context[0].embedding.meta.contexts[0])
    if held:
        meta.update({"caso:held": ",".join(f"{k}={v}" for k, v in held.items()), "caso:hold_form": str(hold_form)})
    return meta
