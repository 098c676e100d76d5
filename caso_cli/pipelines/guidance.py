"""Noise predictions of a loaded model, with classifier-free guidance (docs/method.md §2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from caso_cli.diffusion import cfg, to_eps

if TYPE_CHECKING:
    import torch

    from caso_cli.models.loaders import StableDiffusion


def predict_eps(sd: StableDiffusion, z: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
    """eps(z_t, t, c) from the UNet, converted from v-prediction where needed (docs/method.md §2)."""
    if cond.shape[0] != z.shape[0]:
        cond = cond.expand(z.shape[0], -1, -1)
    out = sd.unet(z, t, encoder_hidden_states=cond).sample
    return to_eps(out, z, sd.schedule.abar(t), sd.prediction_type)


def guided_eps(sd: StableDiffusion, z: torch.Tensor, t: int, c_null: torch.Tensor, c_cond: torch.Tensor,
               scale: float | torch.Tensor) -> torch.Tensor:
    """eps_w = eps(c_null) + w (eps(c) - eps(c_null)), both branches in one UNet call (docs/method.md Eq. 2).

    ``scale`` may be a tensor of shape (B, 1, 1, 1) to guide each latent of the batch with its own w.
    """
    import torch

    b = z.shape[0]
    eps = predict_eps(sd, torch.cat([z, z]), t, torch.cat([c_null.expand(b, -1, -1), c_cond.expand(b, -1, -1)]))
    eps_null, eps_cond = eps.chunk(2)
    return cfg(eps_null, eps_cond, scale)


def composed_eps(sd: StableDiffusion, z: torch.Tensor, t: int, c_null: torch.Tensor, conds: list[torch.Tensor],
                 scales: list[float]) -> torch.Tensor:
    """eps_null + sum_i w_i (eps(c_i) - eps_null): one guidance term per condition, one UNet call
    (docs/method.md Eq. 2)."""
    import torch

    b, m = z.shape[0], len(conds)
    eps = predict_eps(sd, torch.cat([z] * (m + 1)),
                      t, torch.cat([c_null.expand(b, -1, -1)] + [c.expand(b, -1, -1) for c in conds]))
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

    ``conds`` are (1, L, D) or one row per latent; ``terms`` are (w_i, plus_i, minus_i) indices into ``conds``, w_i a
    float or a (B, 1, 1, 1) tensor. CFG is ``Contrast([c_null, c], 0, [(w, 1, 0)])``; holding other attributes
    contrasts two conditions that differ in the edited class alone (docs/editing.md).
    """

    conds: list[torch.Tensor]
    base: int
    terms: list[tuple[Scale, int, int]]

    def eps(self, sd: StableDiffusion, z: torch.Tensor, t: int) -> torch.Tensor:
        """The guided noise prediction, every condition in one UNet call."""
        import torch

        b, m = z.shape[0], len(self.conds)
        out = predict_eps(sd, torch.cat([z] * m), t, torch.cat([c.expand(b, -1, -1) for c in self.conds])).chunk(m)
        eps = out[self.base]
        for w, plus, minus in self.terms:
            eps = eps + w * (out[plus] - out[minus])
        return eps
