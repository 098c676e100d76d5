"""Learning through the edit (docs/method.md §10; not in the paper): score the final image of the real edit.

The one-step objective (docs/method.md §3) scores a single guided estimate at t*. Here each step runs the edit a
user runs, on a batch of training images, and scores its result:

1. every training image is inverted once with the null condition up to the edit start (Eq. 6; the inversion does
   not depend on the vectors, so it is cached);
2. the edit denoises with guidance towards a target class k (Eq. 7): eps_base + w (eps(c_k) - eps_base), the base
   being the null condition, or the context in words when the vectors were learned in context; gradients flow
   through the last K denoising steps only (truncated backprop, as DRaFT-K), the earlier ones run without them;
3. the edited latent is decoded and scored: cross-entropy of the classifier towards k, plus ``keep`` times the mean
   cross-entropy of every other classifier towards its reading of the input image, plus ``rec`` times
   ||z0' - z0||^2.

It refines vectors learned by :func:`caso_cli.pipelines.learn.learn_embedding` (a second stage, its steps
``LearnConfig.through_edit.steps``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from caso_cli.config import EditConfig, LearnConfig
from caso_cli.diffusion import ddim_step
from caso_cli.errors import NumericalError, UsageError
from caso_cli.families import Condition
from caso_cli.models.classifier import AttributeClassifier
from caso_cli.models.loaders import StableDiffusion
from caso_cli.pipelines.classify import classify_images
from caso_cli.pipelines.edit import invert_latents
from caso_cli.pipelines.generate import encode_images
from caso_cli.pipelines.learn import LearnResult, ProgressFn, cap_norms, draw_contexts, max_norm, tail_means
from caso_cli.pipelines.learn_loss import class_branch


def edit_loss(sd: StableDiffusion, classifier: AttributeClassifier, keep: Sequence[AttributeClassifier],
              vectors: torch.Tensor, z_s: torch.Tensor, z0: torch.Tensor, targets: torch.Tensor, read: torch.Tensor,
              config: LearnConfig, contexts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss on the final image of the edit of inverted latents ``z_s`` towards ``targets`` (module docstring),
    and the classifier's logits on that image. ``read`` (B, len(keep)) holds each kept classifier's class of the
    input image, ``z0`` the input latents."""
    te = config.through_edit
    edit = EditConfig(steps=te.edit_steps, start=te.start)
    n = edit.num_steps(sd.schedule)
    grid = sd.schedule.grid(te.edit_steps)[te.edit_steps - n:]
    c_null = sd.family.null_condition()
    c_base, cond = class_branch(sd, vectors[targets], contexts, config.placement, c_null)
    b, z = z_s.shape[0], z_s
    for i, t in enumerate(grid):
        if i < n - te.grad_steps:  # before the last K steps: both branches in one UNet call, no gradient
            with torch.no_grad():
                both = Condition.cat([c_base.expand(b), Condition(cond.hidden.detach(), cond.extra)])
                eps_base, eps_cond = sd.eps(torch.cat([z, z]), t, both).float().chunk(2)
        else:
            with torch.no_grad():
                eps_base = sd.eps(z, t, c_base).float()
            eps_cond = sd.eps(z, t, cond).float()
        eps = eps_base + te.scale * (eps_cond - eps_base)
        z = ddim_step(z, eps, sd.schedule.level(t), sd.schedule.level(sd.schedule.prev(t, te.edit_steps)))
    x = sd.decode_latents(z)
    logits = classifier(x)
    loss = torch.nn.functional.cross_entropy(logits, targets)
    if keep and te.keep:
        loss = loss + te.keep * sum(torch.nn.functional.cross_entropy(c(x), read[:, j])
                                    for j, c in enumerate(keep)) / len(keep)
    if te.rec:
        loss = loss + te.rec * (z - z0).pow(2).mean()
    return loss, logits


def learn_through_edit(sd: StableDiffusion, classifier: AttributeClassifier, images: torch.Tensor,
                       vectors: torch.Tensor, config: LearnConfig, keep: Sequence[AttributeClassifier] = (),
                       progress: ProgressFn | None = None) -> LearnResult:
    """Refine ``vectors`` (K, d), learned for ``classifier``, through the edit of ``images`` (N, 3, H, W) in [-1, 1]
    for ``config.through_edit.steps`` steps; ``keep`` are the classifiers of the attributes the edit should leave
    alone. Learned in context (``config.contexts``), each image draws a context per step, as one-step learning
    does. The result's ``seconds`` / ``steps`` is this stage's cost per step."""
    config.check()
    te = config.through_edit
    if te.steps < 1:
        raise UsageError("through_edit.steps must be at least 1 to learn through the edit")
    t0 = time.monotonic()
    device = sd.runtime.device
    gen = torch.Generator().manual_seed(config.seed + 7919)
    z0_all = encode_images(sd, images).float()
    z_s_all = invert_latents(sd, z0_all, EditConfig(steps=te.edit_steps, start=te.start)).float()
    read_all = torch.stack([classify_images(c, images, device) for c in keep], dim=1) if keep else \
        torch.zeros(images.shape[0], 0, dtype=torch.long)
    k = vectors.shape[0]
    vectors = vectors.detach().clone().to(device).requires_grad_(True)
    opt = torch.optim.AdamW([vectors], lr=te.lr, betas=config.betas, weight_decay=config.weight_decay)
    norm_cap = max_norm(sd, config)
    history: list[dict[str, float]] = []
    for step in range(te.steps):
        idx = torch.randint(0, images.shape[0], (config.batch_size,), generator=gen)
        targets = torch.randint(0, k, (len(idx),), generator=gen)
        ctx = draw_contexts(config, len(idx), gen)
        loss, logits = edit_loss(sd, classifier, keep, vectors, z_s_all[idx].to(device), z0_all[idx].to(device),
                                 targets.to(device), read_all[idx].to(device), config, ctx)
        if not torch.isfinite(loss):
            raise NumericalError(f"the loss through the edit became {loss.item()} at step {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        cap_norms(vectors, norm_cap)
        history.append({"step": step + 1, "loss": loss.item(),
                        "accuracy": float((logits.argmax(1).cpu() == targets).float().mean())})
        if progress:
            means = tail_means(history)
            progress({**history[-1], "total": te.steps, "mean_loss": means["loss"],
                      "mean_accuracy": means["accuracy"], "mean_of": means["last_steps"]})
    return LearnResult(vectors=vectors.detach().cpu().float(), steps=te.steps, seconds=time.monotonic() - t0,
                       history=history)
