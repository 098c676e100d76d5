"""Random views of the decoded estimate: the classifier reads xhat shifted and flipped at random (not in the paper;
docs/method.md §9), a new draw every step, so that no pixel-exact perturbation satisfies it
(``LearnConfig.augment``)."""

from __future__ import annotations

import torch


def shift_and_flip(x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Image i of (B, C, H, W) moved by (dy, dx) = views[i, :2] pixels (edges replicated), then flipped left-right
    if views[i, 2]; differentiable, and the identity for a zero row."""
    pad = int(views[:, :2].abs().max())
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate") if pad else x
    out = torch.stack([padded[i, :, pad - dy:pad - dy + h, pad - dx:pad - dx + w]
                       for i, (dy, dx) in enumerate(views[:, :2].tolist())])
    return torch.where(views[:, 2].bool().view(-1, 1, 1, 1).to(x.device), out.flip(-1), out)


def draw_views(batch: int, augment: int, gen: torch.Generator) -> torch.Tensor:
    """(batch, 3) random (dy, dx, flip): shifts in -augment..augment, a flip half the time."""
    shifts = torch.randint(-augment, augment + 1, (batch, 2), generator=gen)
    return torch.cat([shifts, torch.randint(0, 2, (batch, 1), generator=gen)], dim=1)
