"""Learning CASO embeddings on the tiny model: the step, gradients, resume, checkpoints."""

from __future__ import annotations

import pytest
import torch

from caso_cli.config import LearnConfig
from caso_cli.errors import Interrupted, UsageError
from caso_cli.models.classifier import AttributeClassifier
from caso_cli.pipelines.checkpoint import Checkpoint
from caso_cli.pipelines.learn import learn_embedding
from tests.tiny import random_images, tiny_classifier


@pytest.fixture(scope="module")
def classifier() -> AttributeClassifier:
    return tiny_classifier()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return random_images()


@pytest.mark.slow
def test_learning_moves_only_the_vectors(tiny_sd, classifier, images) -> None:
    """On random weights the loss barely depends on the vectors; that learning works is measured on the toy model."""
    before = {k: v.clone() for k, v in tiny_sd.net.state_dict().items()}
    start = learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=1, lr=0.0, weight_decay=0.0)).vectors
    result = learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=10, batch_size=4, checkpoint_every=0))
    assert result.vectors.shape == (2, 16) and result.steps == 10 and len(result.history) == 10
    assert torch.isfinite(result.vectors).all()
    # each class's vector moved away from its start (10 warm-up steps of Adam at up to lr 1e-2: ~0.015 measured)
    moved = (result.vectors - start).abs().mean(dim=1)
    assert (moved > 0.005).all(), moved
    assert all(torch.equal(v, before[k]) for k, v in tiny_sd.net.state_dict().items())
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["loss"] > 0 for r in result.history)


@pytest.mark.slow
def test_same_seed_same_vectors(tiny_sd, classifier, images) -> None:
    cfg = LearnConfig(steps=4, batch_size=2, checkpoint_every=0, seed=3)
    a = learn_embedding(tiny_sd, classifier, images, cfg).vectors
    b = learn_embedding(tiny_sd, classifier, images, cfg).vectors
    assert torch.equal(a, b)


@pytest.mark.slow
def test_interrupt_then_resume_equals_uninterrupted(tiny_sd, classifier, images, tmp_path) -> None:
    cfg = LearnConfig(steps=8, batch_size=4, checkpoint_every=3, seed=5, init_word="face")
    full = learn_embedding(tiny_sd, classifier, images, cfg)

    def stop_at_5(row):
        if row["step"] == 5:
            raise KeyboardInterrupt

    import json
    import time

    ckpt = Checkpoint(tmp_path / "ckpt")
    ckpt.started -= 100.0  # as if the interrupted run had been at it 100 s
    with pytest.raises(Interrupted, match="after step 5"):
        learn_embedding(tiny_sd, classifier, images, cfg, checkpoint=ckpt, progress=stop_at_5)
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["seconds"] >= 100
    t0 = time.monotonic()
    resumed = learn_embedding(tiny_sd, classifier, images, cfg, checkpoint=Checkpoint(tmp_path / "ckpt"), resume=True)
    assert torch.allclose(resumed.vectors, full.vectors, atol=1e-6)
    assert [r["step"] for r in resumed.history] == list(range(1, 9))
    # the summary's time covers the interrupted part too
    assert 100 <= resumed.seconds <= 100 + (time.monotonic() - t0) + 60


def test_resume_with_other_settings_is_refused(tiny_sd, classifier, images, tmp_path) -> None:
    ckpt = Checkpoint(tmp_path / "c2")
    cfg = LearnConfig(steps=2, batch_size=2, checkpoint_every=1)
    learn_embedding(tiny_sd, classifier, images, cfg, checkpoint=ckpt)
    with pytest.raises(UsageError, match="lr"):
        learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=4, batch_size=2, lr=0.5),
                        checkpoint=ckpt, resume=True)


def test_init_word_must_be_one_token(tiny_sd, classifier, images) -> None:
    with pytest.raises(UsageError, match="single-token"):
        learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=1, init_word="zzqx"))
    out = learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=1, lr=0.0, weight_decay=0.0,
                                                                    init_word="mustache"))
    table = tiny_sd.family.text_encoder.get_input_embeddings().weight
    token = tiny_sd.family.tokenizer("mustache", add_special_tokens=False).input_ids[0]
    assert torch.allclose(out.vectors[0], table[token]) and torch.allclose(out.vectors[1], table[token])


@pytest.mark.parametrize(("lambda_keep", "augment"), [(0.0, 0), (1.0, 2)])
def test_the_step_runs_no_inversion(tiny_sd, classifier, images, monkeypatch, lambda_keep, augment) -> None:
    """Per step: exactly one null UNet call and one conditional UNet call, one VAE decode (options or not)."""
    calls = {"unet": 0, "decode": 0}
    unet_forward, decode = tiny_sd.net.forward, tiny_sd.vae.decode

    def counting_unet(*a, **k):
        calls["unet"] += 1
        return unet_forward(*a, **k)

    def counting_decode(*a, **k):
        calls["decode"] += 1
        return decode(*a, **k)

    monkeypatch.setattr(tiny_sd.net, "forward", counting_unet)
    monkeypatch.setattr(tiny_sd.vae, "decode", counting_decode)
    learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=3, batch_size=2, checkpoint_every=0,
                                                             lambda_keep=lambda_keep, augment=augment))
    assert calls == {"unet": 6, "decode": 3}


def test_shift_and_flip_moves_pixels_and_passes_gradients() -> None:
    from caso_cli.pipelines.augment import draw_views, shift_and_flip

    x = torch.arange(2 * 4 * 5, dtype=torch.float32).view(2, 1, 4, 5).requires_grad_(True)
    out = shift_and_flip(x, torch.tensor([[0, 0, 0], [1, -2, 1]]))
    assert torch.equal(out[0], x[0])  # a zero view is the identity
    # image 1: content moves down 1 and left 2 (edges replicated), then left-right flipped
    moved = torch.stack([x[1, 0, max(0, i - 1), min(4, j + 2)] for i in range(4) for j in range(5)]).view(4, 5)
    assert torch.equal(out[1, 0], moved.flip(-1))
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() == out.numel()
    views = draw_views(400, 3, torch.Generator().manual_seed(0))
    assert views[:, :2].min() == -3 and views[:, :2].max() == 3 and set(views[:, 2].tolist()) == {0, 1}
    assert torch.equal(views, draw_views(400, 3, torch.Generator().manual_seed(0)))


def test_nan_loss_stops_with_a_numerical_error(tiny_sd, classifier, images, monkeypatch) -> None:
    from diffusers import UNet2DConditionModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    from caso_cli.errors import EXIT_NUMERIC, NumericalError

    def forward(self, sample, *args, **kwargs):
        return UNet2DConditionOutput(sample=torch.full_like(sample, float("nan")))

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    with pytest.raises(NumericalError, match=r"^the loss became nan at step 1, so no embedding was saved; lower --lr "
                                             r"or --train-scale$") as err:
        learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=3, batch_size=2, checkpoint_every=0))
    assert err.value.exit_code == EXIT_NUMERIC == 6


def test_keep_term_is_the_guidance_change_on_images_already_of_the_target_class(tiny_sd, classifier, images) -> None:
    """lambda_keep adds mean_i [label_i == k_i] * ||zhat0_w - zhat0_null||^2, computed here by hand."""
    from caso_cli.diffusion import add_noise, predict_x0
    from caso_cli.pipelines.generate import encode_images
    from caso_cli.pipelines.learn_loss import caso_loss

    z0 = encode_images(tiny_sd, images[:4]).float()
    vectors = torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    targets, labels = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1])  # items 0 and 2 already have the class
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))
    c_null = tiny_sd.family.null_condition()
    plain = LearnConfig(train_scale=4.0)
    base, _ = caso_loss(tiny_sd, classifier, vectors, z0, targets, noise, c_null, plain)
    kept, _ = caso_loss(tiny_sd, classifier, vectors, z0, targets, noise, c_null,
                        LearnConfig(train_scale=4.0, lambda_keep=10.0), labels)
    none_in_class, _ = caso_loss(tiny_sd, classifier, vectors, z0, targets, noise, c_null,
                                 LearnConfig(train_scale=4.0, lambda_keep=10.0), 1 - targets)

    level = tiny_sd.schedule.level(plain.t_train)
    z_t = add_noise(z0, noise, level)
    with torch.no_grad():
        eps_null = tiny_sd.eps(z_t, plain.t_train, c_null)
        eps_cond = tiny_sd.eps(z_t, plain.t_train,
                               tiny_sd.family.encode_vectors(vectors[targets].unsqueeze(1)))
    change = (predict_x0(z_t, eps_null + 4.0 * (eps_cond - eps_null), level) - predict_x0(z_t, eps_null, level))
    per_image = change.pow(2).flatten(1).mean(1)
    expected = 10.0 * (per_image[0] + per_image[2]) / 4
    assert expected > 0
    assert torch.allclose(kept - base, expected, rtol=1e-4, atol=1e-7)
    assert torch.equal(none_in_class, base)


@pytest.mark.slow
def test_training_timestep_is_drawn_from_the_range(tiny_sd, classifier, images, monkeypatch) -> None:
    import inspect

    import caso_cli.pipelines.learn as learn

    seen, real = [], learn.caso_loss

    def recording(*args, **kwargs):
        seen.append(inspect.signature(real).bind(*args, **kwargs).arguments["t"])
        return real(*args, **kwargs)

    monkeypatch.setattr(learn, "caso_loss", recording)
    learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=12, checkpoint_every=0, t_train=100,
                                                             t_train_max=400))
    assert len(seen) == 12 and all(100 <= t <= 400 for t in seen) and len(set(seen)) > 6
    seen.clear()
    learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=3, checkpoint_every=0, t_train=250,
                                                             t_train_max=None))
    assert seen == [250, 250, 250]
    with pytest.raises(UsageError, match=r"training timestep must lie in 0\.\.999, low first; got 600:300"):
        learn_embedding(tiny_sd, classifier, images, LearnConfig(steps=1, t_train=600, t_train_max=300))


@pytest.mark.slow
def test_generation_check_reads_fixed_samples(tiny_sd, classifier) -> None:
    from caso_cli.pipelines.learn_checks import generation_check

    vectors = torch.randn(2, 16, generator=torch.Generator().manual_seed(4))
    rates = generation_check(tiny_sd, classifier, vectors, 3, 5.0, steps=5)
    assert len(rates) == 2 and all(r in (0.0, 1 / 3, 2 / 3, 1.0) for r in rates)
    assert generation_check(tiny_sd, classifier, vectors, 3, 5.0, steps=5) == rates  # same noise every time
    from caso_cli.pipelines.generate import decode_latents, generate_latents
    from caso_cli.pipelines.learn_checks import CHECK_SEED

    for k in (0, 1):  # class k: its own vector alone, CFG 5, noise seed CHECK_SEED + k, read by the classifier
        cond = tiny_sd.family.encode_vectors(vectors[k:k + 1, None])
        x = decode_latents(tiny_sd, generate_latents(tiny_sd, cond.expand(3), CHECK_SEED + k, 5, 5.0))
        with torch.no_grad():
            assert rates[k] == float((classifier(x).argmax(1) == k).float().mean())


@pytest.mark.slow
def test_restarts_keep_each_class_best_vector_and_stop_once_all_pass(tiny_sd, classifier, images,
                                                                     monkeypatch) -> None:
    from caso_cli.pipelines import learn_runs

    readings = iter([[1.0, 0.25], [0.5, 0.75], [0.0, 0.5]])
    runs: list[torch.Tensor] = []
    real = learn_runs.learn_embedding

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        runs.append(out.vectors.clone())
        return out

    monkeypatch.setattr(learn_runs, "learn_embedding", recording)
    monkeypatch.setattr(learn_runs, "generation_check", lambda *a, **k: next(readings))
    cfg = LearnConfig(steps=2, checkpoint_every=0, seed=7, check_samples=4, restarts=2)
    out = learn_runs.learn_checked(tiny_sd, classifier, images, cfg)
    assert len(runs) == 3 and not torch.equal(runs[0], runs[1])  # each run its own seed
    assert torch.equal(out.vectors[0], runs[0][0]) and torch.equal(out.vectors[1], runs[1][1])
    assert out.check == {"samples": 4, "scale": 5.0, "runs": 3, "rates": {"no_x": 1.0, "x": 0.75},
                         "seeds": {"no_x": 7, "x": 8}, "passed": False}

    runs.clear()
    readings = iter([[0.5, 1.0], [0.9, 0.9], [1.0, 1.0]])
    out = learn_runs.learn_checked(tiny_sd, classifier, images, cfg)
    assert len(runs) == 2 and out.check["passed"] and out.check["rates"] == {"no_x": 0.9, "x": 1.0}
    runs.clear()
    out = learn_runs.learn_checked(tiny_sd, classifier, images,
                                   LearnConfig(steps=2, checkpoint_every=0, check_samples=0, restarts=2))
    assert len(runs) == 1 and out.check is None
    for bad, match in ((LearnConfig(restarts=-1), "restarts must be 0 or more, got -1"),
                       (LearnConfig(check_samples=-2), "check_samples must be 0 or more, got -2"),
                       (LearnConfig(augment=-1), "augment must be 0 or more, got -1")):
        with pytest.raises(UsageError, match=match):
            learn_runs.learn_checked(tiny_sd, classifier, images, bad)


@pytest.mark.slow
def test_interrupted_restart_resumes_to_the_uninterrupted_result(tiny_sd, classifier, images, tmp_path,
                                                                 monkeypatch) -> None:
    from caso_cli.pipelines import learn_runs

    calls: list[int] = []

    def check(*_args, **_kwargs):  # fails every class on the first run of a call, passes on the second
        calls.append(1)
        return [0.5, 0.5] if len(calls) % 2 else [1.0, 1.0]

    monkeypatch.setattr(learn_runs, "generation_check", check)
    cfg = LearnConfig(steps=6, batch_size=2, checkpoint_every=2, seed=3, check_samples=4, restarts=3)
    full = learn_runs.learn_checked(tiny_sd, classifier, images, cfg)
    assert full.check["runs"] == 2 and full.check["seeds"] == {"no_x": 4, "x": 4}

    def stop_in_second_run(row):
        if row["run"] == 2 and row["step"] == 5:
            raise KeyboardInterrupt

    calls.clear()
    ckpt = Checkpoint(tmp_path / "ckpt")
    with pytest.raises(Interrupted, match="after step 5"):
        learn_runs.learn_checked(tiny_sd, classifier, images, cfg, checkpoint=ckpt, progress=stop_in_second_run)
    assert (tmp_path / "ckpt" / "run1").is_dir()
    calls.clear()
    steps_run: list[tuple[int, int]] = []
    resumed = learn_runs.learn_checked(tiny_sd, classifier, images, cfg, checkpoint=ckpt, resume=True,
                                       progress=lambda row: steps_run.append((row["run"], row["step"])))
    assert steps_run == [(2, 6)]  # the first run is reloaded whole, the second goes on after step 5
    assert torch.allclose(resumed.vectors, full.vectors, atol=1e-6) and resumed.check == full.check


def test_t_screen_keeps_the_candidate_whose_check_reads_best(tiny_sd, classifier, images, monkeypatch,
                                                           tmp_path) -> None:
    """--t-train auto: one short run per candidate t*, scored by the generation check (lowest class first, then the
    mean); the full run learns at the winner; the table is saved so that a resumed run does not screen again."""
    from caso_cli.pipelines import learn_runs

    seen: list[tuple[int, int | None, int]] = []
    real = learn_runs.learn_embedding

    def recording(sd, clf, x, cfg, *args, **kwargs):
        seen.append((cfg.t_train, cfg.t_train_max, cfg.steps))
        return real(sd, clf, x, cfg, *args, **kwargs)

    # candidates in order: 201, 401, 601, 201:601; 401 and 201:601 tie on the lowest class, 401 has the better mean
    readings = iter([[0.2, 0.9], [0.6, 0.9], [0.1, 1.0], [0.6, 0.7], [0.95, 0.95]])
    monkeypatch.setattr(learn_runs, "learn_embedding", recording)
    monkeypatch.setattr(learn_runs, "generation_check", lambda *a, **k: next(readings))
    cfg = LearnConfig(steps=3, screen_steps=2, checkpoint_every=0, check_samples=4, restarts=0,
                      t_screen=((201, 201), (401, 401), (601, 601), (201, 601)))
    out = learn_runs.learn_checked(tiny_sd, classifier, images, cfg, Checkpoint(tmp_path / "ck"))
    assert seen == [(201, None, 2), (401, None, 2), (601, None, 2), (201, 601, 2), (401, None, 3)]
    screen = out.check["t_screen"]
    assert screen["chosen"] == "401" and screen["steps"] == 2
    assert [r["t"] for r in screen["table"]] == ["201", "401", "601", "201:601"]
    assert screen["table"][1] == {"t": "401", "rates": {"no_x": 0.6, "x": 0.9}, "min": 0.6, "mean": 0.75}
    assert out.config is not None and out.config.t_train == 401 and out.config.t_screen == ()
    # a screening run is never longer than the run itself
    seen.clear()
    readings = iter([[0.5, 0.5]] * 4 + [[1.0, 1.0]])
    learn_runs.learn_checked(tiny_sd, classifier, images, LearnConfig(**{**cfg.__dict__, "steps": 1}))
    assert [s for *_, s in seen] == [1] * 5
    # resumed: the saved table, no screening run
    seen.clear()
    readings = iter([[1.0, 1.0]])
    again = learn_runs.learn_checked(tiny_sd, classifier, images, cfg, Checkpoint(tmp_path / "ck"))
    assert seen == [(401, None, 3)] and again.check["t_screen"] == screen
    with pytest.raises(UsageError, match="t_screen needs the generation check"):
        LearnConfig(t_screen=((201, 201),), check_samples=0).check()
