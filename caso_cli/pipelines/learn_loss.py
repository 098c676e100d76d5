"""The CASO loss of one batch (docs/method.md §3 steps 3-6), for one attribute (the paper) or several learned
together (docs/method.md §8), with the options of §9 (keep term, augmentation) and learning in context (§10).

Exactly the passes the method needs: the base UNet branch without grad; the class branch, the VAE decoder and
the classifiers with grad (into the vectors only). No inversion, no sampling loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from caso_cli.diffusion import Level, add_noise, cfg, predict_x0
from caso_cli.pipelines.augment import shift_and_flip

if TYPE_CHECKING:
    from caso_cli.config import LearnConfig
    from caso_cli.families import Condition
    from caso_cli.models.classifier import AttributeClassifier
    from caso_cli.models.loaders import StableDiffusion


def _noised(sd: StableDiffusion, z0: torch.Tensor, noise: torch.Tensor, c_base: Condition,
            t: int) -> tuple[torch.Tensor, Level, torch.Tensor]:
    """z_t forward-noised to ``t`` (Eq. 8), its noise level, and the base branch's eps at z_t (no grad): the null
    condition, or the context in words when learning in context."""
    level = sd.schedule.level(t)
    z_t = add_noise(z0, noise, level).to(sd.net.dtype)
    with torch.no_grad():
        eps_null = sd.eps(z_t, t, c_base).float()
    return z_t, level, eps_null


def class_branch(sd: StableDiffusion, rows: torch.Tensor, contexts: list[str] | None, placement: str,
                 c_null: Condition) -> tuple[Condition, Condition]:
    """(base, class) conditions for each image's vectors ``rows``: (B, d), one vector per image, or (B, A, d), one
    per attribute learned together. Without ``contexts``: the null condition and ``[BOS, e_1, .., e_A, EOS]``
    (the paper's ``[BOS, e_k, EOS]`` for one attribute; docs/method.md §8 for several). In context (one attribute):
    the context in words and the context with e_k in its slot (docs/method.md §10)."""
    if rows.dim() == 2:
        rows = rows.unsqueeze(1)
    if contexts is None:
        return c_null, sd.family.encode_vectors(rows)
    if rows.shape[1] != 1:
        raise ValueError("attributes learned together cannot be learned in context")
    with torch.no_grad():
        base = sd.family.encode_in_context(contexts, None, placement)
    return base, sd.family.encode_in_context(contexts, rows[:, 0], placement)


def _decoded(sd: StableDiffusion, zhat0: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
    """xhat = D(zhat0 / s) (Eq. 10), moved by ``views`` when given, for the classifier to read."""
    xhat = sd.decode_latents(zhat0)
    return xhat if views is None else shift_and_flip(xhat, views)


def caso_loss(sd: StableDiffusion, classifiers: AttributeClassifier | Sequence[AttributeClassifier],
              vectors: torch.Tensor, z0: torch.Tensor, classes: torch.Tensor, noise: torch.Tensor,
              c_null: Condition, config: LearnConfig, labels: torch.Tensor | None = None, t: int | None = None,
              views: torch.Tensor | None = None,
              contexts: list[str] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The CASO loss of one batch (docs/method.md §3 steps 3-6) and each classifier's logits on the decoded
    estimates.

    ``classes`` (B,) are the target classes of one attribute (the paper), or (B, A) with several ``classifiers``:
    image i's condition names attribute a at class ``classes[i, a]``, ``[BOS, e_{1,c_1}, .., e_{A,c_A}, EOS]``
    (docs/method.md §8; ``vectors`` holds every attribute's rows, in the classifiers' order). The loss sums each
    classifier's cross-entropy towards its class in the condition (Eq. 13 once per attribute), plus
    ``lambda_rec * ||zhat0 - z0||^2`` (Eq. 12).

    ``labels`` (the classifiers' reading of each original image, shaped like ``classes``) is needed only for the
    keep term (§9): ``lambda_keep * ||zhat0_w - zhat0_null||^2`` on the images that already show their classes.
    ``t`` is the training timestep (default t*); ``views`` (B, 3) = (dy, dx, flip) per image moves the decoded
    estimates before the classifiers read them (§9). With ``contexts`` (one per image; one attribute) the vector is
    learned in context: the null condition's place is taken by the context in words, the class branch is the
    context with e_k in its slot (§10).
    """
    clfs = list(classifiers) if isinstance(classifiers, Sequence) else [classifiers]
    t = config.t_train if t is None else t
    per_image = classes.view(classes.shape[0], -1)  # (B, A): each image's class of every attribute
    sizes = [len(c.classes) for c in clfs]
    offsets = torch.tensor([sum(sizes[:a]) for a in range(len(sizes))], device=classes.device)
    c_base, cond = class_branch(sd, vectors[per_image + offsets], contexts, config.placement, c_null)
    z_t, level, eps_null = _noised(sd, z0, noise, c_base, t)
    eps_cond = sd.eps(z_t, t, cond).float()
    zhat0 = predict_x0(z_t.float(), cfg(eps_null, eps_cond, config.train_scale), level)
    xhat = _decoded(sd, zhat0, views)
    logits = [clf(xhat) for clf in clfs]
    loss = sum(torch.nn.functional.cross_entropy(lg, per_image[:, a]) for a, lg in enumerate(logits))
    if config.lambda_rec:
        loss = loss + config.lambda_rec * (zhat0 - z0.float()).pow(2).mean()
    if config.lambda_keep and labels is not None:
        # zhat0_w - zhat0_null = -sigma_t / alpha_t * w * (eps_cond - eps_null)
        change = (zhat0 - predict_x0(z_t.float(), eps_null, level)).pow(2).flatten(1).mean(1)
        loss = loss + config.lambda_keep * (change * (labels.view_as(per_image) == per_image).all(1)).mean()
    return loss, logits  # type: ignore[return-value]
