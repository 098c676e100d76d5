"""Classifier guidance of an edit, the alternative a user who has a classifier already has (docs/method.md §11).

No vector is learned. The image is inverted as caso inverts it (:func:`caso_cli.pipelines.edit.invert_latents`) and
denoised with the null condition; at every denoising step the classifier reads the decoded clean estimate
D(zhat0(z_t)) and its log-probability of the target class pushes the noise prediction:

    eps' = eps(z_t, null) - s sigma_t grad_{z_t} log p(target | D(zhat0(z_t, eps)))

the classifier-guidance form of Dhariwal & Nichol (2021) with the clean-estimate reading of universal guidance
(Bansal et al., 2023, "forward guidance"). Each step costs a UNet call, a VAE decode and a classifier pass, and
their backward pass: one edit costs far more than caso's (timed in bench/claims.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from caso_cli.config import EditConfig
from caso_cli.diffusion import predict_x0
from caso_cli.pipelines.ddim import denoise

if TYPE_CHECKING:
    from caso_cli.models.classifier import AttributeClassifier
    from caso_cli.models.loaders import StableDiffusion


def guidance_gradient(sd: StableDiffusion, classifier: AttributeClassifier, z: torch.Tensor, t: int,
                      eps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """grad_{z_t} of sum_i log p(target_i | D(zhat0_i)), with eps a differentiable function of ``z``."""
    images = sd.decode_latents(predict_x0(z, eps, sd.schedule.level(t)))
    logp = torch.log_softmax(classifier(images.clamp(-1, 1)).float(), dim=1)
    (grad,) = torch.autograd.grad(logp.gather(1, target.view(-1, 1)).sum(), z)
    return grad


def classifier_guided_latents(sd: StableDiffusion, z_t: torch.Tensor, classifier: AttributeClassifier,
                              target: int | torch.Tensor, scale: float, config: EditConfig) -> torch.Tensor:
    """Denoise inverted latents ``z_t`` with the null condition, each step guided by ``classifier`` towards class
    ``target`` (one class, or one per latent) at strength ``scale`` (0: the null reconstruction)."""
    c_null = sd.family.null_condition()
    target = torch.as_tensor(target, device=z_t.device).long().expand(z_t.shape[0])

    def eps(z: torch.Tensor, t: int, _i: int) -> torch.Tensor:
        if scale == 0:
            with torch.no_grad():
                return sd.eps(z, t, c_null)
        with torch.enable_grad():
            z_in = z.detach().requires_grad_(True)
            e = sd.eps(z_in, t, c_null)
            grad = guidance_gradient(sd, classifier, z_in, t, e, target)
        return (e - scale * sd.schedule.level(t).sigma * grad).detach()

    return denoise(eps, z_t, sd.schedule, config.steps, config.num_steps(sd.schedule))
