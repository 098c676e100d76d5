"""Guided noise predictions of a loaded model: classifier-free guidance and its contrasts (docs/method.md §2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from caso_cli.errors import UsageError
from caso_cli.families import Condition

if TYPE_CHECKING:
    import torch

    from caso_cli.attrs import ResolvedAttr
    from caso_cli.models.loaders import StableDiffusion
    from caso_cli.registry import Embedding


Scale = Union[float, "torch.Tensor"]


@dataclass(frozen=True)
class Contrast:
    """The guidance of every edit and sample: eps(c_base) + sum_i w_i (eps(c_plus_i) - eps(c_minus_i))
    (docs/method.md Eq. 2 generalised).

    ``conds`` have one row or one row per latent; ``terms`` are (w_i, plus_i, minus_i) indices into ``conds``, w_i a
    float or a (B, 1, 1, 1) tensor. CFG is :meth:`cfg`, ``Contrast([c_null, c], 0, [(w, 1, 0)])``; one term per
    condition (attributes at different scales) is :meth:`composed`; holding other attributes contrasts two
    conditions that differ in the edited class alone (docs/editing.md).
    """

    conds: list[Condition]
    base: int
    terms: list[tuple[Scale, int, int]]

    @classmethod
    def cfg(cls, c_null: Condition, cond: Condition, scale: Scale) -> Contrast:
        """eps_null + w (eps(c) - eps_null) (Eq. 2); ``scale`` a float, or a tensor of one w per latent."""
        return cls([c_null, cond], 0, [(_weight(scale), 1, 0)])

    @classmethod
    def composed(cls, c_null: Condition, conds: Sequence[Condition], scales: Sequence[float]) -> Contrast:
        """eps_null + sum_i w_i (eps(c_i) - eps_null): one term per condition."""
        return cls([c_null, *conds], 0, [(float(w), 1 + i, 0) for i, w in enumerate(scales)])

    @property
    def unguided(self) -> bool:
        """Whether every term is a plain zero: the base condition alone predicts the noise."""
        return all(isinstance(w, (int, float)) and w == 0 for w, _, _ in self.terms)

    def eps(self, sd: StableDiffusion, z: torch.Tensor, t: int) -> torch.Tensor:
        """The guided noise prediction, every condition in one network call (the base alone when unguided)."""
        import torch

        if self.unguided:
            return sd.eps(z, t, self.conds[self.base])
        b, m = z.shape[0], len(self.conds)
        out = sd.eps(torch.cat([z] * m), t, Condition.cat([c.expand(b) for c in self.conds])).chunk(m)
        eps = out[self.base]
        for w, plus, minus in self.terms:
            eps = eps + (w.to(z.device) if isinstance(w, torch.Tensor) else w) * (out[plus] - out[minus])
        return eps


def _weight(scale: Scale) -> Scale:
    """A float, or a tensor of scales as one (B, 1, 1, 1) float32 weight per latent."""
    import torch

    return scale.reshape(-1, 1, 1, 1).to(torch.float32) if isinstance(scale, torch.Tensor) else float(scale)


def cfg_guidance(sd: StableDiffusion, cond: Condition | Sequence[Condition],
                 scale: Scale | Sequence[float]) -> Contrast:
    """CFG against the model's null condition: on one condition (``scale`` a float or one per latent), or one term
    per condition of a list (``scale`` one float each)."""
    c_null = sd.family.null_condition()
    if isinstance(cond, Condition):
        return Contrast.cfg(c_null, cond, scale)  # type: ignore[arg-type]
    return Contrast.composed(c_null, cond, scale)  # type: ignore[arg-type]


def check_model(attrs: list[ResolvedAttr], sd: StableDiffusion, held: Sequence[Embedding] = ()) -> None:
    """Refuse embeddings (edited or held) made for another model family or text encoder (size or weights)."""
    embeddings = [a.embedding for a in attrs] + list(held)
    own_hash = sd.family.encoder_hash() if any(e.meta.text_encoder_hash for e in embeddings) else None
    for emb in embeddings:
        use = f"use --model {emb.meta.model}" if emb.meta.model else "use the model it was learned for"
        if emb.meta.family != sd.family.name:
            raise UsageError(f"embedding {emb.name!r} was learned for a model of family {emb.meta.family!r}, but "
                             f"{sd.name!r} is of family {sd.family.name!r}; {use}")
        d = emb.vectors.shape[1]
        want = sd.family.context_width(emb.meta.placement) if emb.meta.contexts else sd.token_dim
        if d != want:
            raise UsageError(f"embedding {emb.name!r} has {d}-dim vectors but model {sd.name!r} takes "
                             f"{want} (made for another text encoder; {use})")
        if emb.meta.text_encoder_hash and emb.meta.text_encoder_hash != own_hash:
            raise UsageError(f"embedding {emb.name!r} was learned for model {emb.meta.model!r}, whose text encoder "
                             f"differs from {sd.name!r}'s; {use}")


def attribute_guidance(sd: StableDiffusion, attrs: list[ResolvedAttr], scale: Scale | None = None) -> Contrast:
    """CFG on one multi-token condition [BOS, e_a, e_b, EOS] when the scales agree (docs/method.md §1); else one term
    each. ``scale`` replaces every attribute's own (a tensor: one per latent).

    The tokens go in a canonical order (embedding name, then class), whatever the order of ``--attr``: the text
    encoder is causal and reads [e_a, e_b] and [e_b, e_a] differently (on the toy model, 21% of pixels differ by
    more than 4 levels; docs/editing.md), so a fixed order makes the edit independent of the command line.
    No attributes: the null condition alone (an unguided reconstruction).
    """
    import torch

    c_null = sd.family.null_condition()
    with torch.no_grad():
        if not attrs:
            return Contrast([c_null], 0, [])
        if any(a.embedding.meta.contexts for a in attrs):  # generation: the vector in its default context
            if len(attrs) > 1:
                raise UsageError("entries learned in context are sampled one at a time")
            a = attrs[0]
            meta = a.embedding.meta
            cond = sd.family.encode_in_context([meta.contexts[0]], a.embedding.vectors[a.index].to(sd.runtime.device),
                                               meta.placement)
            return Contrast.cfg(c_null, cond, a.scale if scale is None else scale)
        attrs = sorted(attrs, key=lambda a: (a.embedding.name, a.index))
        if scale is not None or len({a.scale for a in attrs}) == 1:
            vectors = torch.stack([a.embedding.vectors[a.index] for a in attrs]).to(sd.runtime.device)
            return Contrast.cfg(c_null, sd.family.encode_vectors(vectors), attrs[0].scale if scale is None else scale)
        conds = [sd.family.encode_vectors(a.embedding.vectors[a.index:a.index + 1].to(sd.runtime.device))
                 for a in attrs]
        return Contrast.composed(c_null, conds, [a.scale for a in attrs])
