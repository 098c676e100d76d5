"""Classifier guidance of an edit (the baseline a user with a classifier already has), on the tiny model."""

from __future__ import annotations

import torch

from caso_cli.config import EditConfig
from caso_cli.pipelines.classifier_guidance import classifier_guided_latents, guidance_gradient
from caso_cli.pipelines.edit import edit_latents
from caso_cli.pipelines.guidance import cfg_guidance
from tests.tiny import tiny_classifier


def test_scale_zero_is_the_null_reconstruction_and_the_push_raises_the_target(tiny_sd) -> None:
    clf = tiny_classifier(seed=3)
    cfg = EditConfig(steps=4, start=0.5)
    z_t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    null = edit_latents(tiny_sd, z_t, cfg_guidance(tiny_sd, tiny_sd.family.null_condition(), 0.0), cfg)
    assert torch.equal(classifier_guided_latents(tiny_sd, z_t, clf, 1, 0.0, cfg), null)
    assert not torch.allclose(classifier_guided_latents(tiny_sd, z_t, clf, 1, 50.0, cfg), null)

    # the gradient is that of log p(target | D(zhat0)): a small step along it raises that log-probability
    t = tiny_sd.schedule.grid(4)[1]
    target = torch.tensor([1, 0])

    def logp(z: torch.Tensor) -> torch.Tensor:
        from caso_cli.diffusion import predict_x0

        x0 = predict_x0(z, tiny_sd.eps(z, t, tiny_sd.family.null_condition()), tiny_sd.schedule.level(t))
        x = tiny_sd.vae.decode(x0 / tiny_sd.scaling_factor).sample.clamp(-1, 1)
        return torch.log_softmax(clf(x), 1).gather(1, target.view(-1, 1))[:, 0]

    z = z_t.clone().requires_grad_(True)
    grad = guidance_gradient(tiny_sd, clf, z, t, tiny_sd.eps(z, t, tiny_sd.family.null_condition()), target)
    with torch.no_grad():
        step = 1e-2 / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        assert (logp(z_t + step * grad) > logp(z_t)).all()
