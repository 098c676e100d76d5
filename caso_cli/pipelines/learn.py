"""Learn CASO embeddings from a frozen classifier: the loop (docs/method.md §3, the paper's Algorithm 1).

One step, for a batch of cached latents z0 and target classes k (every batch covers the classes round-robin):

1. forward-noise to the fixed training timestep t*  (Eq. 8, no DDIM inversion; optionally, not in the paper, t* is
   drawn from a range at every step);
2. eps_w = CFG of the null branch (no grad) and the class branch c_k  (Eq. 2);
3. zhat0 from eps_w  (Eq. 9), decode xhat = D(zhat0 / s)  (Eq. 10);
4. loss = CE(C(xhat), k) + lambda * ||zhat0 - z0||^2  (Eq. 12-13), with the options of docs/method.md §9
   (keep term, augmentation);
5. AdamW on the K token vectors only.

Steps 1-4 are :func:`caso_cli.pipelines.learn_loss.caso_loss`, for one attribute or several learned together
(docs/method.md §8); this module draws the batches, runs the optimiser, checkpoints and reports progress. The
checks of the learned vectors are in :mod:`caso_cli.pipelines.learn_checks`, the runs they judge (t* screen,
restarts) in :mod:`caso_cli.pipelines.learn_runs`.

Nothing else runs: no inversion, no sampling loop. The diffusion model, VAE and classifier are frozen; gradients
flow through the class branch of the UNet, the VAE decoder and the classifier into the vectors.

Under ``accelerate launch`` (``sd.runtime.world_size`` > 1) every process draws the same global batch from the same
seed, computes the loss on its contiguous share of it weighted by share / batch, and the vectors' gradients are
summed across processes: the gradient of the global batch mean, so N processes learn the vectors one process
learns, up to rounding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from caso_cli.errors import Interrupted, NumericalError, UsageError
from caso_cli.pipelines.augment import draw_views
from caso_cli.pipelines.generate import encode_images
from caso_cli.pipelines.learn_loss import caso_loss
from caso_cli.runtime import all_reduce_sum

if TYPE_CHECKING:
    from caso_cli.config import LearnConfig
    from caso_cli.models.classifier import AttributeClassifier
    from caso_cli.models.loaders import StableDiffusion
    from caso_cli.pipelines.checkpoint import Checkpoint


@dataclass
class LearnResult:
    """Learned vectors and how learning went."""

    vectors: torch.Tensor  # (K, d)
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step (of the last run, restarted)
    # the check (LearnConfig.check_samples): per class, the classifier's rate on samples (the generation check)
    # or on held edits of the training images (the edit check, with "kept"; attributes learned together), and
    # which run's seed each class's vector comes from
    check: dict[str, Any] | None = None
    split: list[int] = field(default_factory=list)  # rows per attribute (several when learned together)
    config: LearnConfig | None = None  # the settings the vectors were learned with, where a screen chose t*

    def per_attribute(self) -> list[torch.Tensor]:
        """The vectors of each attribute, in the order the classifiers were given."""
        return list(self.vectors.split(self.split or [self.vectors.shape[0]]))

    def summary(self, tail: int | None = None) -> dict[str, float]:
        """The numbers the progress bar ended on: :func:`tail_means` of the history."""
        return tail_means(self.history, SUMMARY_TAIL if tail is None else tail)


ProgressFn = Callable[[dict[str, Any]], None]
#: the progress bar and the summary both show the mean loss and accuracy on the estimates over this many last steps
SUMMARY_TAIL = 20


def tail_means(history: list[dict[str, float]], tail: int = SUMMARY_TAIL) -> dict[str, float]:
    """Mean ``loss`` and ``accuracy`` (the share of decoded one-step estimates the classifier reads as their target
    class, at the training timestep) over the last ``tail`` rows of ``history``, and ``last_steps``: how many rows
    that is (fewer than ``tail`` early on; NaN means with no row)."""
    rows = history[-tail:]
    if not rows:
        return {"loss": float("nan"), "accuracy": float("nan"), "last_steps": 0}
    return {"loss": sum(r["loss"] for r in rows) / len(rows),
            "accuracy": sum(r["accuracy"] for r in rows) / len(rows), "last_steps": len(rows)}


def tail_text(means: dict[str, float], run: int | None = None) -> str:
    """``mean of last 20 steps: loss 0.722, accuracy on estimates 0.80`` (``mean of run 3's last 20 steps: ...``):
    what the progress bar shows and the summary repeats (docs/learning.md, "The numbers")."""
    n = int(means["last_steps"])
    whose = "" if run is None else f"run {run}'s "
    return (f"mean of {whose}last {n} step{'s' if n != 1 else ''}: loss {means['loss']:.3f}, "
            f"accuracy on estimates {means['accuracy']:.2f}")


def progress_text(row: dict[str, Any]) -> str:
    """The progress bar's text for a row that :func:`learn_embedding` (or
    :func:`caso_cli.pipelines.learn_runs.learn_checked`) reported."""
    run = f"run {row['run']}/{row['runs']} " if row.get("runs", 1) > 1 else ""
    if row.get("screen"):
        run = f"screening t* {row['screen']} ({row['candidate']}/{row['candidates']}) "
    return run + tail_text({"loss": row["mean_loss"], "accuracy": row["mean_accuracy"], "last_steps": row["mean_of"]})


# settings that do not change what one run learns (a checkpoint stays valid when they change)
RUN_INDEPENDENT = ("checkpoint_every", "check_samples", "check_scale", "restarts", "t_screen",
                   "screen_steps")


def initial_vectors(sd: StableDiffusion, num_classes: int, init_word: str | None,
                    gen: torch.Generator) -> torch.Tensor:
    """K starting vectors: the token embedding of ``init_word``, else random with the table's scale."""
    if init_word:
        return sd.family.word_vector(init_word).repeat(num_classes, 1).clone()
    table = sd.family.token_table()
    return torch.randn(num_classes, table.shape[1], generator=gen) * table.std() + table.mean(0)


def draw_contexts(config: LearnConfig, n: int, gen: torch.Generator) -> list[str] | None:
    """One of ``config.contexts`` for each of ``n`` images, drawn anew each step (None: not learning in context)."""
    if not config.contexts:
        return None
    return [config.contexts[int(i)] for i in torch.randint(len(config.contexts), (n,), generator=gen)]


def max_norm(sd: StableDiffusion, config: LearnConfig) -> float | None:
    """``config.max_norm`` mean token-embedding norms, the most a vector may measure (None: no cap)."""
    if config.max_norm is None:
        return None
    return config.max_norm * float(sd.family.token_table().norm(dim=1).mean())


def cap_norms(vectors: torch.Tensor, cap: float | None) -> None:
    """Scale down, in place, every row of ``vectors`` longer than ``cap``."""
    if cap is not None:
        with torch.no_grad():
            vectors.mul_((cap / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0))


def _batch(step: int, n: int, config: LearnConfig, gen: torch.Generator) -> torch.Tensor:
    """The indices of step ``step``'s images: consecutive in an order that is a function of (seed, epoch), so that a
    resumed run sees the same batches; drawn with replacement (from ``gen``) when a batch is larger than ``n``."""
    epoch, pos = divmod(step * config.batch_size, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
    return torch.cat([order, order])[pos:pos + config.batch_size] if config.batch_size <= n else \
        torch.randint(0, n, (config.batch_size,), generator=gen)


def _targets(step: int, batch: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Round-robin class targets, shuffled within the batch: each batch covers min(batch, K) classes."""
    base = (torch.arange(batch) + step * batch) % k
    return base[torch.randperm(batch, generator=gen)]


def learn_embedding(sd: StableDiffusion, classifier: AttributeClassifier | list[AttributeClassifier],
                    images: torch.Tensor, config: LearnConfig, checkpoint: Checkpoint | None = None,
                    resume: bool = False, progress: ProgressFn | None = None) -> LearnResult:
    """Learn one token vector per classifier class from ``images`` (N, 3, H, W) in [-1, 1].

    Given several classifiers, their attributes are learned together (docs/method.md §8): every condition names
    each attribute, the result holds every attribute's rows, in the given order (``LearnResult.split``).
    """
    t0 = time.monotonic()
    device = sd.runtime.device
    classifiers = classifier if isinstance(classifier, list) else [classifier]
    joint = len(classifiers) > 1
    sizes = [len(c.classes) for c in classifiers]
    pairs = torch.tensor([(a, c) for a, size in enumerate(sizes) for c in range(size)])  # (attribute, class)
    k = len(pairs)
    n = images.shape[0]
    config.check()
    if n < 1:
        raise UsageError("no training images")
    if joint and config.contexts:
        raise UsageError("attributes learned together cannot be learned in context yet; learn them one at a time")
    t_lo, t_hi = config.t_range()
    draw_t = t_hi != t_lo or config.t_train_max is not None  # a fixed t* draws nothing from the generator
    if not 0 <= t_lo <= t_hi < sd.schedule.num_train_timesteps:
        shown = t_lo if not draw_t else f"{t_lo}:{t_hi}"
        raise UsageError(f"the training timestep must lie in 0..{sd.schedule.num_train_timesteps - 1}, low first; "
                         f"got {shown}")
    rank, world = sd.runtime.rank, sd.runtime.world_size
    if config.batch_size < world:
        raise UsageError(f"--batch-size {config.batch_size} is smaller than the {world} processes; each process "
                         "needs at least one image of every batch")
    gen = torch.Generator().manual_seed(config.seed)
    z0_all = encode_images(sd, images).float()
    # every attribute's class as its classifier reads each image, once: the classes the other attributes are held at
    # (several attributes), the keep term's labels (one); else a placeholder that the target class overwrites
    read_all = torch.stack([c.read(images, device) for c in classifiers], dim=1) \
        if joint or config.lambda_keep else torch.zeros(n, 1, dtype=torch.long)
    if config.contexts and config.placement == "output":  # a delta on an output state starts at zero
        vectors = torch.zeros(k, sd.family.context_width("output")).to(device).requires_grad_(True)
    else:
        vectors = initial_vectors(sd, k, config.init_word, gen).to(device).requires_grad_(True)
    norm_cap = max_norm(sd, config)
    opt = torch.optim.AdamW([vectors], lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    total = config.total_steps(n)
    fingerprint = {**{k_: v for k_, v in asdict(config).items() if k_ not in RUN_INDEPENDENT},
                   "betas": list(config.betas), "contexts": list(config.contexts), "n_images": n,
                   "classes": [c.classes for c in classifiers] if joint else classifiers[0].classes}
    start = 0
    history: list[dict[str, float]] = []
    if resume and checkpoint is not None and checkpoint.exists:
        start, history = checkpoint.load(vectors, opt, gen, fingerprint)
    with torch.no_grad():
        c_null = sd.family.null_condition()
    rng_done = gen.get_state()  # the RNG state after the last completed step
    try:
        for step in range(start, total):
            for group in opt.param_groups:  # linear warm-up, then constant
                group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
            idx = _batch(step, n, config, gen)
            z0 = z0_all[idx].to(device)
            # targets index (attribute, class) pairs: that attribute goes to the class, the others stay as read
            focus, cls = pairs[_targets(step, len(idx), k, gen)].T
            noise = torch.randn(z0.shape, generator=gen).to(device, z0.dtype)
            t = int(torch.randint(t_lo, t_hi + 1, (), generator=gen)) if draw_t else t_lo
            views = draw_views(len(idx), config.augment, gen) if config.augment else None
            ctx = draw_contexts(config, len(idx), gen)
            # This process's share of the global batch (all of it in a single process), weighted so that the
            # sum over processes is the batch mean; all_reduce_sum is the identity in a single process.
            share = torch.tensor_split(torch.arange(len(idx)), world)[rank]
            view = None if views is None else views[share]
            classes = read_all[idx].clone()
            classes[torch.arange(len(idx)), focus] = cls
            labels = read_all[idx].to(device)[share] if config.lambda_keep and not joint else None
            loss, logits = caso_loss(sd, classifiers, vectors, z0[share], classes.to(device)[share], noise[share],
                                     c_null, config, labels=labels, t=t, views=view,
                                     contexts=None if ctx is None else [ctx[i] for i in share])
            hit = torch.stack([lg.argmax(1) for lg in logits], dim=1).gather(1, focus[share, None].to(device))
            correct = (hit[:, 0] == cls[share].to(device)).sum().to(loss.dtype)
            loss = loss * (len(share) / len(idx))
            stats = all_reduce_sum(torch.stack([loss.detach(), correct]), sd.runtime)
            total_loss, accuracy = stats[0], stats[1] / len(idx)
            if not torch.isfinite(total_loss):
                raise NumericalError(f"the loss became {total_loss.item()} at step {step + 1}, so no embedding was "
                                     "saved; lower --lr or --train-scale"
                                     + (", or use --dtype fp32" if sd.runtime.dtype != torch.float32 else ""))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if vectors.grad is not None:
                vectors.grad = all_reduce_sum(vectors.grad, sd.runtime)
            opt.step()
            cap_norms(vectors, norm_cap)
            row = {"step": step + 1, "loss": total_loss.item(), "accuracy": accuracy.item()}
            history.append(row)
            rng_done = gen.get_state()
            if progress:  # the row, the running means the summary ends on (mean_*), and the total
                means = tail_means(history)
                progress({**row, "total": total, "mean_loss": means["loss"], "mean_accuracy": means["accuracy"],
                          "mean_of": means["last_steps"]})
            if checkpoint is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 \
                    and sd.runtime.is_main:
                checkpoint.save(step + 1, vectors, opt, gen, history, fingerprint)
    except KeyboardInterrupt:
        if checkpoint is None:
            raise
        # `from None` (here and below) is deliberate: the KeyboardInterrupt's traceback only says where
        # Ctrl-C landed, which explains nothing about the error.
        if not sd.runtime.is_main:  # the main process writes the checkpoint
            raise Interrupted(f"interrupted after step {len(history)}") from None
        # Save the state after the last completed step, so --resume redoes the unfinished one exactly.
        gen.set_state(rng_done)
        checkpoint.save(len(history), vectors, opt, gen, history, fingerprint)
        raise Interrupted(f"interrupted after step {len(history)}; checkpoint saved in {checkpoint.folder} "
                          "(rerun with --resume)") from None
    before = checkpoint.seconds_before if checkpoint is not None and start else 0.0  # a resumed run's earlier part
    return LearnResult(vectors=vectors.detach().cpu().float(), steps=total, seconds=time.monotonic() - t0 + before,
                       history=history, split=sizes)
