"""Noise predictions of a loaded model, with classifier-free guidance (docs/method.md §2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from caso_cli.diffusion import cfg, to_eps
from caso_cli.errors import UsageError
from caso_cli.families import Condition

if TYPE_CHECKING:
    import torch

    from caso_cli.attrs import ResolvedAttr
    from caso_cli.models.loaders import StableDiffusion
    from caso_cli.registry import Embedding


def predict_eps(sd: StableDiffusion, z: torch.Tensor, t: int, cond: Condition) -> torch.Tensor:
    """eps(z_t, t, c) from the UNet, converted from v-prediction where needed (docs/method.md §2)."""
    size = (z.shape[-2] * sd.vae_scale, z.shape[-1] * sd.vae_scale)
    out = sd.unet(z, t, **sd.family.unet_kwargs(cond.expand(z.shape[0]), size)).sample
    return to_eps(out, z, sd.schedule.abar(t), sd.prediction_type)


def guided_eps(sd: StableDiffusion, z: torch.Tensor, t: int, c_null: Condition, c_cond: Condition,
               scale: float | torch.Tensor) -> torch.Tensor:
    """eps_w = eps(c_null) + w (eps(c) - eps(c_null)), both branches in one UNet call (docs/method.md Eq. 2).

    ``scale`` may be a tensor of shape (B, 1, 1, 1) to guide each latent of the batch with its own w.
    """
    import torch

    b = z.shape[0]
    eps = predict_eps(sd, torch.cat([z, z]), t, Condition.cat([c_null.expand(b), c_cond.expand(b)]))
    eps_null, eps_cond = eps.chunk(2)
    return cfg(eps_null, eps_cond, scale)


def composed_eps(sd: StableDiffusion, z: torch.Tensor, t: int, c_null: Condition, conds: list[Condition],
                 scales: list[float]) -> torch.Tensor:
    """eps_null + sum_i w_i (eps(c_i) - eps_null): one guidance term per condition, one UNet call
    (docs/method.md Eq. 2)."""
    import torch

    b, m = z.shape[0], len(conds)
    eps = predict_eps(sd, torch.cat([z] * (m + 1)), t, Condition.cat([c.expand(b) for c in [c_null, *conds]]))
    parts = eps.chunk(m + 1)
    out = parts[0]
    for w, e in zip(scales, parts[1:], strict=True):
        out = out + w * (e - parts[0])
    return out


Scale = Union[float, "torch.Tensor"]


@dataclass(frozen=True)
class Contrast:
    """Guidance by contrasts: eps(c_base) + sum_i w_i (eps(c_plus_i) - eps(c_minus_i))
    (docs/method.md Eq. 2 generalised).

    ``conds`` have one row or one row per latent; ``terms`` are (w_i, plus_i, minus_i) indices into ``conds``, w_i a
    float or a (B, 1, 1, 1) tensor. CFG is ``Contrast([c_null, c], 0, [(w, 1, 0)])``; holding other attributes
    contrasts two conditions that differ in the edited class alone (docs/editing.md).
    """

    conds: list[Condition]
    base: int
    terms: list[tuple[Scale, int, int]]

    def eps(self, sd: StableDiffusion, z: torch.Tensor, t: int) -> torch.Tensor:
        """The guided noise prediction, every condition in one UNet call."""
        import torch

        b, m = z.shape[0], len(self.conds)
        out = predict_eps(sd, torch.cat([z] * m), t, Condition.cat([c.expand(b) for c in self.conds])).chunk(m)
        eps = out[self.base]
        for w, plus, minus in self.terms:
            eps = eps + w * (out[plus] - out[minus])
        return eps


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


def attribute_guidance(sd: StableDiffusion, attrs: list[ResolvedAttr]) -> tuple[Any, Any]:
    """One multi-token condition [BOS, e_a, e_b, EOS] when the scales agree (docs/method.md §1); else one term each.

    The tokens go in a canonical order (embedding name, then class), whatever the order of ``--attr``: the text
    encoder is causal and reads [e_a, e_b] and [e_b, e_a] differently (on the toy model, 21% of pixels differ by
    more than 4 levels; docs/editing.md), so a fixed order makes the edit independent of the command line.
    No attributes: the null condition at scale 0 (an unguided reconstruction).
    """
    import torch

    with torch.no_grad():
        if not attrs:
            return sd.family.null_condition(), 0.0
        if any(a.embedding.meta.contexts for a in attrs):  # generation: the vector in its default context
            if len(attrs) > 1:
                raise UsageError("entries learned in context are sampled one at a time")
            a = attrs[0]
            meta = a.embedding.meta
            return sd.family.encode_in_context([meta.contexts[0]], a.embedding.vectors[a.index].to(sd.runtime.device),
                                               meta.placement), a.scale
        attrs = sorted(attrs, key=lambda a: (a.embedding.name, a.index))
        if len({a.scale for a in attrs}) == 1:
            vectors = torch.stack([a.embedding.vectors[a.index] for a in attrs]).to(sd.runtime.device)
            return sd.family.encode_vectors(vectors), attrs[0].scale
        conds = [sd.family.encode_vectors(a.embedding.vectors[a.index:a.index + 1].to(sd.runtime.device))
                 for a in attrs]
        return conds, [a.scale for a in attrs]
