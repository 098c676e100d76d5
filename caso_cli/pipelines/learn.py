"""Learn CASO embeddings from a frozen classifier (docs/method.md §3, the paper's Algorithm 1).

One step, for a batch of cached latents z0 and target classes k (every batch covers the
classes round-robin):

1. forward-noise to the fixed training timestep t*  (Eq. 8, no DDIM inversion; optionally, not in
   the paper, t* is drawn from a range at every step);
2. eps_w = CFG of the null branch (no grad) and the class branch c_k  (Eq. 2);
3. zhat0 from eps_w  (Eq. 9), decode xhat = D(zhat0 / s)  (Eq. 10);
4. loss = CE(C(xhat), k) + lambda * ||zhat0 - z0||^2  (Eq. 12-13), plus (optional, not in the
   paper) lambda_keep * ||zhat0 - zhat0_null||^2 on the images the classifier already reads as k:
   guidance towards a class an image already has should leave it alone; optionally (not in the paper)
   the classifier reads xhat shifted and flipped at random;
5. AdamW on the K token vectors only.

Nothing else runs: no inversion, no sampling loop. The diffusion model, VAE and classifier
are frozen; gradients flow through the class branch of the UNet, the VAE decoder and the
classifier into the vectors.

Under ``accelerate launch`` (``sd.runtime.world_size`` > 1) every process draws the same global
batch from the same seed, computes the loss on its contiguous share of it weighted by
share / batch, and the vectors' gradients are summed across processes: the gradient of the
global batch mean, so N processes learn the vectors one process learns, up to rounding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from caso_cli.config import LearnConfig
from caso_cli.diffusion import add_noise, cfg, predict_x0
from caso_cli.errors import Interrupted, NumericalError, UsageError
from caso_cli.families import Condition
from caso_cli.models.classifier import AttributeClassifier
from caso_cli.models.loaders import StableDiffusion
from caso_cli.pipelines.generate import encode_images, samples_per_class
from caso_cli.pipelines.guidance import predict_eps
from caso_cli.runtime import all_reduce_sum


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
    """The progress bar's text for a row that :func:`learn_embedding` (or :func:`learn_checked`) reported."""
    run = f"run {row['run']}/{row['runs']} " if row.get("runs", 1) > 1 else ""
    if row.get("screen"):
        run = f"screening t* {row['screen']} ({row['candidate']}/{row['candidates']}) "
    return run + tail_text({"loss": row["mean_loss"], "accuracy": row["mean_accuracy"], "last_steps": row["mean_of"]})


CHECK_PASS = 0.9  # a class passes the generation check when the classifier reads this share of its samples
CHECK_SEED = 4_000_037  # noise of the check's samples (class k uses CHECK_SEED + k)
CHECK_STEPS = 50  # DDIM steps of the check's samples
# settings that do not change what one run learns (a checkpoint stays valid when they change)
RUN_INDEPENDENT = ("checkpoint_every", "check_samples", "check_scale", "restarts", "through_edit", "t_screen",
                   "screen_steps")


def initial_vectors(sd: StableDiffusion, num_classes: int, init_word: str | None, gen: torch.Generator,
                    class_names: list[str] | None = None) -> torch.Tensor:
    """K starting vectors: each class name's words (the mean of their token embeddings) when ``class_names`` are
    given, else the token embedding of ``init_word``, else random with the table's scale."""
    if class_names:
        return torch.stack([sd.family.word_vector(c.replace("_", " "), single=False) for c in class_names])
    if init_word:
        return sd.family.word_vector(init_word).repeat(num_classes, 1).clone()
    table = sd.family.token_table()
    return torch.randn(num_classes, table.shape[1], generator=gen) * table.std() + table.mean(0)


class Checkpoint:
    """Vectors, AdamW moments, step and RNG state in a folder, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started = time.monotonic()  # learning time before this process is kept in the checkpoint
        self.seconds_before = 0.0  # the time the runs before a resume took (set by load)

    @property
    def exists(self) -> bool:
        return (self.folder / "state.json").is_file()

    def save(self, step: int, vectors: torch.Tensor, opt: torch.optim.Optimizer, gen: torch.Generator,
             history: list[dict[str, float]], fingerprint: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        from caso_cli.fileio import atomic_path, atomic_write

        self.folder.mkdir(parents=True, exist_ok=True)
        state = opt.state.get(vectors, {})
        tensors = {"vectors": vectors.detach().cpu().contiguous(), "rng": gen.get_state()}
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[key] = state[key].detach().cpu().contiguous()
        with atomic_path(self.folder / "state.safetensors") as tmp:
            save_file(tensors, str(tmp))
        info = {"step": step, "adam_step": float(state.get("step", 0)), "history": history, "fingerprint": fingerprint,
                "seconds": self.seconds_before + time.monotonic() - self.started}
        with atomic_write(self.folder / "state.json", "w") as fh:
            fh.write(json.dumps(info))

    def load(self, vectors: torch.Tensor, opt: torch.optim.Optimizer, gen: torch.Generator,
             fingerprint: dict[str, Any]) -> tuple[int, list[dict[str, float]]]:
        from safetensors.torch import load_file

        info = json.loads((self.folder / "state.json").read_text())
        if info["fingerprint"] != fingerprint:
            diff = sorted(k for k in fingerprint if info["fingerprint"].get(k) != fingerprint[k])
            raise UsageError(f"checkpoint in {self.folder} was made with other settings ({', '.join(diff)}); "
                             "rerun with the same options or without --resume")
        self.seconds_before, self.started = float(info.get("seconds", 0.0)), time.monotonic()
        tensors = load_file(str(self.folder / "state.safetensors"))
        with torch.no_grad():
            vectors.copy_(tensors["vectors"].to(vectors.device))
        gen.set_state(tensors["rng"])
        if "exp_avg" in tensors:
            opt.state[vectors] = {
                "step": torch.tensor(info["adam_step"]),
                "exp_avg": tensors["exp_avg"].to(vectors.device),
                "exp_avg_sq": tensors["exp_avg_sq"].to(vectors.device),
            }
        return int(info["step"]), list(info["history"])


def _noised(sd: StableDiffusion, z0: torch.Tensor, noise: torch.Tensor, c_base: Condition,
            t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z_t forward-noised to ``t`` (Eq. 8), abar_t, and the base branch's eps at z_t (no grad): the null condition,
    or the context in words when learning in context."""
    abar = sd.schedule.abar(t)
    z_t = add_noise(z0, noise, abar).to(sd.unet.dtype)
    with torch.no_grad():
        eps_null = predict_eps(sd, z_t, t, c_base).float()
    return z_t, abar, eps_null


def class_branch(sd: StableDiffusion, rows: torch.Tensor, contexts: list[str] | None, placement: str,
                 c_null: Condition) -> tuple[Condition, Condition]:
    """(base, class) conditions for one vector per row: the null condition and ``[BOS, e_k, EOS]`` (the paper), or,
    in context, the context in words and the context with e_k in its slot (docs/method.md §10)."""
    if contexts is None:
        return c_null, sd.family.encode_vectors(rows.unsqueeze(1))
    with torch.no_grad():
        base = sd.family.encode_in_context(contexts, None, placement)
    return base, sd.family.encode_in_context(contexts, rows, placement)


def _decoded(sd: StableDiffusion, zhat0: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
    """xhat = D(zhat0 / s) (Eq. 10), moved by ``views`` when given, for the classifier to read."""
    xhat = sd.vae.decode((zhat0 / sd.scaling_factor).to(sd.vae.dtype)).sample.float()
    return xhat if views is None else shift_and_flip(xhat, views)


def caso_loss(sd: StableDiffusion, classifier: AttributeClassifier, vectors: torch.Tensor, z0: torch.Tensor,
              targets: torch.Tensor, noise: torch.Tensor, c_null: Condition, config: LearnConfig,
              labels: torch.Tensor | None = None, t: int | None = None,
              views: torch.Tensor | None = None,
              contexts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The CASO loss of one batch (docs/method.md §3 steps 3-6) and the classifier's logits on the decoded estimates.

    Exactly the passes the method needs: the null UNet branch without grad, the class branch, the VAE
    decoder and the classifier with grad (into ``vectors`` only). ``labels`` (the classifier's reading of
    each original image) is needed only for the keep term; ``t`` is the training timestep (default t*);
    ``views`` (B, 3) = (dy, dx, flip) per image moves the decoded estimates before the classifier reads them.
    With ``contexts`` (one per image) the vector is learned in context: the null condition's place is taken by the
    context in words, the class branch is the context with e_k in its slot (docs/method.md §10).
    """
    t = config.t_train if t is None else t
    c_base, cond = class_branch(sd, vectors[targets], contexts, config.placement, c_null)
    z_t, abar, eps_null = _noised(sd, z0, noise, c_base, t)
    eps_cond = predict_eps(sd, z_t, t, cond).float()
    zhat0 = predict_x0(z_t.float(), cfg(eps_null, eps_cond, config.train_scale), abar)
    logits = classifier(_decoded(sd, zhat0, views))
    loss = torch.nn.functional.cross_entropy(logits, targets)
    if config.lambda_rec:
        loss = loss + config.lambda_rec * (zhat0 - z0.float()).pow(2).mean()
    if config.lambda_keep and labels is not None:
        # zhat0_w - zhat0_null = -sqrt(1 - abar) / sqrt(abar) * w * (eps_cond - eps_null)
        change = (zhat0 - predict_x0(z_t.float(), eps_null, abar)).pow(2).flatten(1).mean(1)
        loss = loss + config.lambda_keep * (change * (labels == targets)).mean()
    return loss, logits


def joint_loss(sd: StableDiffusion, classifiers: list[AttributeClassifier], vectors: torch.Tensor,
               offsets: list[int], z0: torch.Tensor, classes: torch.Tensor, noise: torch.Tensor, c_null: Condition,
               config: LearnConfig, t: int | None = None, views: torch.Tensor | None = None,
               source: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The CASO loss when several attributes are learned together (not in the paper; docs/learning.md).

    Image i's condition names every attribute a at class ``classes[i, a]``: ``[BOS, e_{1,c_1}, .., e_{A,c_A}, EOS]``
    (attributes in the given order; ``vectors`` holds every attribute's rows, attribute a's from ``offsets[a]``).
    One attribute per image is set to the target class, the others stay at the classes their classifiers read in
    the image, so a vector has nothing to encode but its own class. The loss sums each classifier's cross-entropy
    towards its class in the condition (Eq. 13 once per attribute); returns it and each classifier's logits.
    With ``source`` (the classes read, (B, A)) the estimate is the held edit of docs/editing.md's delta form,
    eps_null + w (eps(c_target) - eps(c_source)), instead of CFG on c_target: the loss then asks the contrast of
    the two conditions to change the target attribute and nothing else.
    """
    t = config.t_train if t is None else t
    z_t, abar, eps_null = _noised(sd, z0, noise, c_null, t)
    shift = torch.tensor(offsets, device=classes.device)
    cond = sd.family.encode_vectors(vectors[classes + shift])
    eps_cond = predict_eps(sd, z_t, t, cond).float()
    if source is None:
        eps = cfg(eps_null, eps_cond, config.train_scale)
    else:  # the held edit itself: eps_null + w (eps(c_target) - eps(c_source)), c_source naming the classes read
        c_src = sd.family.encode_vectors(vectors[source + shift])
        eps = eps_null + config.train_scale * (eps_cond - predict_eps(sd, z_t, t, c_src).float())
    zhat0 = predict_x0(z_t.float(), eps, abar)
    xhat = _decoded(sd, zhat0, views)
    logits = [clf(xhat) for clf in classifiers]
    loss = sum(torch.nn.functional.cross_entropy(lg, classes[:, a]) for a, lg in enumerate(logits))
    if config.lambda_rec:
        loss = loss + config.lambda_rec * (zhat0 - z0.float()).pow(2).mean()
    return loss, logits  # type: ignore[return-value]


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


def classify_images(classifier: AttributeClassifier, images: torch.Tensor, device: torch.device,
                    batch: int = 64) -> torch.Tensor:
    """The classifier's class for each image (N, 3, H, W) in [-1, 1], on the CPU."""
    with torch.no_grad():
        return torch.cat([classifier(images[i:i + batch].to(device)).argmax(1).cpu()
                          for i in range(0, images.shape[0], batch)])


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


def _targets(step: int, batch: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Round-robin class targets, shuffled within the batch: each batch covers min(batch, K) classes."""
    base = (torch.arange(batch) + step * batch) % k
    return base[torch.randperm(batch, generator=gen)]


def learn_embedding(sd: StableDiffusion, classifier: AttributeClassifier | list[AttributeClassifier],
                    images: torch.Tensor, config: LearnConfig, checkpoint: Checkpoint | None = None,
                    resume: bool = False, progress: ProgressFn | None = None) -> LearnResult:
    """Learn one token vector per classifier class from ``images`` (N, 3, H, W) in [-1, 1].

    Given several classifiers, their attributes are learned together (:func:`joint_loss`): the result holds every
    attribute's rows, in the given order (``LearnResult.split``).
    """
    t0 = time.monotonic()
    device = sd.runtime.device
    classifiers = classifier if isinstance(classifier, list) else [classifier]
    joint = len(classifiers) > 1
    sizes = [len(c.classes) for c in classifiers]
    offsets = [sum(sizes[:a]) for a in range(len(sizes))]
    pairs = torch.tensor([(a, c) for a, size in enumerate(sizes) for c in range(size)])  # (attribute, class)
    k = len(pairs)
    n = images.shape[0]
    config.check()
    if n < 1:
        raise UsageError("no training images")
    if joint and config.contexts:
        raise UsageError("attributes learned together cannot be learned in context yet; learn them one at a time")
    t_lo, t_hi = config.t_range(joint)
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
    if joint:  # every attribute's class as its classifier reads each image, once
        read_all = torch.stack([classify_images(c, images, device) for c in classifiers], dim=1)
    labels_all = classify_images(classifiers[0], images, device) if config.lambda_keep and not joint else None
    names = [c for clf in classifiers for c in clf.classes] if config.init_classes else None
    if config.contexts and config.placement == "output":  # a delta on an output state starts at zero
        vectors = torch.zeros(k, sd.family.context_width("output")).to(device).requires_grad_(True)
    else:
        vectors = initial_vectors(sd, k, config.init_word, gen, names).to(device).requires_grad_(True)
    norm_cap = max_norm(sd, config)
    opt = torch.optim.AdamW([vectors], lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    total = config.total_steps(n)
    fingerprint = {**{k_: v for k_, v in asdict(config).items() if k_ not in RUN_INDEPENDENT},
                   "betas": list(config.betas), "contexts": list(config.contexts), "n_images": n,
                   "classes": [c.classes for c in classifiers] if joint else classifiers[0].classes}
    start, history = 0, []
    if resume and checkpoint is not None and checkpoint.exists:
        start, history = checkpoint.load(vectors, opt, gen, fingerprint)
    with torch.no_grad():
        c_null = sd.family.null_condition()
    order = torch.empty(0, dtype=torch.long)
    rng_done = gen.get_state()  # the RNG state after the last completed step
    try:
        for step in range(start, total):
            for group in opt.param_groups:  # linear warm-up, then constant
                group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
            # The image order is a function of (seed, epoch) so that a resumed run sees the same batches.
            epoch, pos = divmod(step * config.batch_size, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
            idx = torch.cat([order, order])[pos:pos + config.batch_size] if config.batch_size <= n else \
                torch.randint(0, n, (config.batch_size,), generator=gen)
            z0 = z0_all[idx].to(device)
            targets = _targets(step, len(idx), k, gen).to(device)
            noise = torch.randn(z0.shape, generator=gen).to(device, z0.dtype)
            t = int(torch.randint(t_lo, t_hi + 1, (), generator=gen)) if draw_t else t_lo
            # This process's share of the global batch (all of it in a single process), weighted so that the
            # sum over processes is the batch mean; all_reduce_sum is the identity in a single process.
            views = draw_views(len(idx), config.augment, gen) if config.augment else None
            ctx = draw_contexts(config, len(idx), gen)
            share = torch.tensor_split(torch.arange(len(idx)), world)[rank]
            view = None if views is None else views[share]
            if joint:  # targets index (attribute, class) pairs: that attribute goes to the class, the rest stay
                focus, cls = pairs[targets.cpu()].T
                classes = read_all[idx].clone()
                classes[torch.arange(len(idx)), focus] = cls
                classes = classes.to(device)[share]
                source = read_all[idx].to(device)[share] if config.together_form == "delta" else None
                loss, logits_all = joint_loss(sd, classifiers, vectors, offsets, z0[share], classes, noise[share],
                                              c_null, config, t, view, source)
                hit = torch.stack([lg.argmax(1) for lg in logits_all], dim=1).gather(1, focus[share, None].to(device))
                correct = (hit[:, 0] == cls[share].to(device)).sum().to(loss.dtype)
            else:
                labels = None if labels_all is None else labels_all[idx].to(device)[share]
                loss, logits = caso_loss(sd, classifiers[0], vectors, z0[share], targets[share], noise[share], c_null,
                                         config, labels, t, view, None if ctx is None else [ctx[i] for i in share])
                correct = (logits.argmax(1) == targets[share]).sum().to(loss.dtype)
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


def generation_check(sd: StableDiffusion, classifier: AttributeClassifier, vectors: torch.Tensor, n: int,
                     scale: float, steps: int = CHECK_STEPS, context: str | None = None,
                     placement: str = "token") -> list[float]:
    """Per class k: the share of ``n`` samples generated from noise with c_k alone, or in ``context`` (vectors
    learned in context), at CFG ``scale`` that the classifier reads as k. The noise is fixed (``CHECK_SEED``), so
    two sets of vectors meet the same samples."""
    samples = samples_per_class(sd, vectors, n, CHECK_SEED, steps, scale, context, placement)
    return [float((classify_images(classifier, x, sd.runtime.device) == k).float().mean())
            for k, x in enumerate(samples)]


EDIT_CHECK_STEPS = 10  # DDIM steps of the edit check's inversions and edits


@torch.no_grad()
def edit_check(sd: StableDiffusion, classifiers: list[AttributeClassifier], vectors: list[torch.Tensor],
               images: torch.Tensor, n: int, scale: float) -> tuple[list[float], list[float]]:
    """The check of attributes learned together, as they are used: held edits of the training images.

    For each attribute (in the given order) and class k, up to ``n`` of ``images`` not read as k are inverted and
    edited towards k at ``scale`` with every other attribute held at the class read in the image (hold form
    ``auto``, EDIT_CHECK_STEPS steps); a two-class attribute's first class is reached as a removal, the second
    class at -``scale``, the way ``caso edit --attr mustache --scale -5`` removes a mustache. Returns, per class
    in order, the share the attribute's classifier then reads as k (success) and the share whose other attributes
    all read as before (kept); 1.0 where no image lacks k.
    """
    from caso_cli.config import EditConfig
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.generate import decode_latents, encode_images
    from caso_cli.pipelines.hold import EditTerm, Token, hold_contrast, source_classes

    device = sd.runtime.device
    cfg = EditConfig(steps=EDIT_CHECK_STEPS)
    read = torch.stack([classify_images(c, images, device) for c in classifiers], dim=1)
    # zero-padded names keep the tokens in the order they were learned in
    tokens = [Token(f"{a:04d}", v, c) for a, (v, c) in enumerate(zip(vectors, classifiers, strict=True))]
    picks = {(a, k): torch.nonzero(read[:, a] != k)[:n, 0]
             for a, tok in enumerate(tokens) for k in range(tok.vectors.shape[0])}
    used = torch.unique(torch.cat(list(picks.values())))
    z_t = invert_latents(sd, encode_images(sd, images[used]), cfg)
    row = {int(i): r for r, i in enumerate(used)}
    success, kept = [], []
    for (a, k), idx in picks.items():
        if not len(idx):
            success.append(1.0)
            kept.append(1.0)
            continue
        others = [b for b in range(len(tokens)) if b != a]
        # towards k at +scale; a two-class attribute's first class as a removal (the second at -scale)
        term = EditTerm(tokens[a], 1, -scale) if k == 0 and tokens[a].vectors.shape[0] == 2 else \
            EditTerm(tokens[a], k, scale)
        x = images[idx]
        contrast = hold_contrast(sd, [term], [tokens[b] for b in others], read[idx][:, others],
                                 source_classes([term], x, device))
        z = edit_latents(sd, z_t[[row[int(i)] for i in idx]], contrast, None, cfg)  # type: ignore[arg-type]
        after = decode_latents(sd, z)
        now = torch.stack([classify_images(c, after, device) for c in classifiers], dim=1)
        success.append(float((now[:, a] == k).float().mean()))
        kept.append(float((now[:, others] == read[idx][:, others]).all(1).float().mean()))
    return success, kept


DRIFT = 0.3  # a class vector whose samples show another attribute's class this much more or less often than the data


def encoding_report(sd: StableDiffusion, vectors: torch.Tensor, classes: list[str],
                    others: dict[str, AttributeClassifier], images: torch.Tensor, n: int,
                    scale: float, context: str | None = None, placement: str = "token") -> dict[str, Any]:
    """What each class vector encodes besides its class: the other attributes' rates (read by ``others``, name ->
    classifier) in ``n`` samples generated with the vector alone or in ``context`` (CFG ``scale``, the check's
    noise), against their rates in the training ``images``; a warning per class and attribute that drifts by
    ``DRIFT`` or more."""
    device = sd.runtime.device
    samples = samples_per_class(sd, vectors, n, CHECK_SEED, CHECK_STEPS, scale, context, placement)

    def rates(clf: AttributeClassifier, x: torch.Tensor) -> dict[str, float]:
        counts = torch.bincount(classify_images(clf, x, device), minlength=len(clf.classes)).float() / len(x)
        return {c: round(float(r), 4) for c, r in zip(clf.classes, counts, strict=True)}

    data = {name: rates(clf, images) for name, clf in others.items()}
    got = {cls: {name: rates(clf, samples[k]) for name, clf in others.items()} for k, cls in enumerate(classes)}
    warnings = []
    for cls in classes:
        for name, clf in others.items():
            shown = [c for c in clf.classes if c.lower() not in (f"no_{name}".lower(), f"not_{name}".lower())] \
                if len(clf.classes) == 2 else clf.classes
            worst = max(shown, key=lambda c: abs(got[cls][name][c] - data[name][c]))  # noqa: B023
            if abs(got[cls][name][worst] - data[name][worst]) >= DRIFT:
                what = name if worst.lower() == name.lower() else f"{name} {worst}"
                warnings.append(f"samples of {cls}: {what} {got[cls][name][worst]:.0%} vs "
                                f"{data[name][worst]:.0%} in the data")
    return {"samples": n, "scale": scale, "data": data, "samples_rates": got, "warnings": warnings}


def edit_context(config: LearnConfig) -> str | None:
    """The context an entry learned with ``config`` is checked and edited in by default: its first (None: the
    paper's whole prompt)."""
    return config.contexts[0] if config.contexts else None


def with_t(config: LearnConfig, low: int, high: int) -> LearnConfig:
    """``config`` learning at t* ``low`` (``low`` == ``high``) or drawing it from ``low``..``high``."""
    return replace(config, t_train=low, t_train_max=None if low == high else high)


def screen_t(sd: StableDiffusion, classifier: AttributeClassifier, images: torch.Tensor, config: LearnConfig,
             folder: Path | None = None, progress: ProgressFn | None = None) -> tuple[LearnConfig, dict[str, Any]]:
    """t* by measurement: a ``config.screen_steps`` run per candidate of ``config.t_screen``, each scored by the
    generation check (the lowest class rate first, then the mean); returns ``config`` at the best candidate and the
    screen's table. The table is kept in ``folder`` (a checkpoint folder), so that ``--resume`` does not screen
    again."""
    steps = min(config.screen_steps, config.total_steps(len(images)))  # never longer than the run it screens for
    key = {"candidates": [list(c) for c in config.t_screen], "steps": steps, "seed": config.seed,
           "check": [config.check_samples, config.check_scale]}
    path = None if folder is None else folder / "t_screen.json"
    table: list[dict[str, Any]] | None = None
    if path is not None and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        table = saved["table"] if saved.get("key") == key else None
    if table is None:
        table = []
        for i, (low, high) in enumerate(config.t_screen):
            cfg = replace(with_t(config, low, high), steps=steps, epochs=None, t_screen=())
            report = None if progress is None else (lambda row, label=cfg.t_label(), i=i: progress(
                {**row, "screen": label, "candidate": i + 1, "candidates": len(config.t_screen)}))
            vectors = learn_embedding(sd, classifier, images, cfg, progress=report).vectors
            got = generation_check(sd, classifier, vectors, config.check_samples, config.check_scale,
                                   context=edit_context(config), placement=config.placement)
            table.append({"t": cfg.t_label(), "rates": {c: round(r, 4) for c, r in zip(classifier.classes, got,
                                                                                        strict=True)},
                          "min": round(min(got), 4), "mean": round(sum(got) / len(got), 4)})
        if path is not None and sd.runtime.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"key": key, "table": table}), encoding="utf-8")
    best = max(range(len(table)), key=lambda i: (table[i]["min"], table[i]["mean"]))
    chosen = with_t(replace(config, t_screen=()), *config.t_screen[best])
    return chosen, {"steps": steps, "table": table, "chosen": chosen.t_label()}


def learn_checked(sd: StableDiffusion, classifier: AttributeClassifier | list[AttributeClassifier],
                  images: torch.Tensor, config: LearnConfig, checkpoint: Checkpoint | None = None,
                  resume: bool = False, progress: ProgressFn | None = None) -> LearnResult:
    """:func:`learn_embedding`, then the generation check; while a class is read below ``CHECK_PASS`` and
    restarts are left, learn again with the next seed. Each class keeps the vector whose check read it best
    (vectors of one attribute are used one at a time, so they can come from different runs). Run r > 0 keeps
    its checkpoint in ``run<r>`` under the first run's folder. Attributes learned together (several classifiers)
    are used side by side, so they come from one run: checked by :func:`edit_check`, never restarted
    (:func:`_learn_together_checked`)."""
    config.check()
    if not config.check_samples:
        return learn_embedding(sd, classifier, images, config, checkpoint, resume, progress)
    if isinstance(classifier, list) and len(classifier) > 1:
        return _learn_together_checked(sd, classifier, images, config, checkpoint, resume, progress)
    classifier = classifier[0] if isinstance(classifier, list) else classifier
    screen = None
    if config.t_screen:
        config, screen = screen_t(sd, classifier, images, config, checkpoint.folder if checkpoint else None, progress)
    best: LearnResult | None = None
    rates: list[float] = []
    seeds: list[int] = []
    t0 = time.monotonic()
    for run in range(config.restarts + 1):
        cfg_run = replace(config, seed=config.seed + run)
        ckpt = checkpoint if checkpoint is None or run == 0 else Checkpoint(checkpoint.folder / f"run{run}")
        report = None if progress is None else \
            (lambda row, run=run: progress({**row, "run": run + 1, "runs": config.restarts + 1}))
        result = learn_embedding(sd, classifier, images, cfg_run, ckpt, resume, report)
        got = generation_check(sd, classifier, result.vectors, config.check_samples, config.check_scale,
                               context=edit_context(config), placement=config.placement)
        if best is None:
            best, rates, seeds = result, got, [cfg_run.seed] * len(got)
        else:
            for k, rate in enumerate(got):
                if rate > rates[k]:
                    best.vectors[k], rates[k], seeds[k] = result.vectors[k], rate, cfg_run.seed
        if min(rates) >= CHECK_PASS:
            break
    assert best is not None
    best.seconds = time.monotonic() - t0
    best.history = result.history  # the summary describes the last run, the one the progress bar ended on
    best.check = {"samples": config.check_samples, "scale": config.check_scale, "runs": run + 1,
                  "rates": {c: round(r, 4) for c, r in zip(classifier.classes, rates, strict=True)},
                  "seeds": dict(zip(classifier.classes, seeds, strict=True)), "passed": min(rates) >= CHECK_PASS,
                  **({"t_screen": screen} if screen else {})}
    best.config = config
    return best


def _learn_together_checked(sd: StableDiffusion, classifiers: list[AttributeClassifier], images: torch.Tensor,
                            config: LearnConfig, checkpoint: Checkpoint | None, resume: bool,
                            progress: ProgressFn | None) -> LearnResult:
    """Attributes learned together: one run, checked by held edits of the training images (:func:`edit_check` at
    ``check_scale``). Never restarted: keeping the best of five runs by this check was measured and kept less on
    held-out faces (docs/learning.md, "The edit check")."""
    names = [c for clf in classifiers for c in clf.classes]
    result = learn_embedding(sd, classifiers, images, config, checkpoint, resume, progress)
    success, kept = edit_check(sd, classifiers, result.per_attribute(), images, config.check_samples,
                               config.check_scale)
    result.check = {"kind": "edit", "samples": config.check_samples, "scale": config.check_scale, "runs": 1,
                    "rates": {c: round(r, 4) for c, r in zip(names, success, strict=True)},
                    "kept": {c: round(r, 4) for c, r in zip(names, kept, strict=True)},
                    "seeds": dict.fromkeys(names, config.seed), "passed": min(success) >= CHECK_PASS}
    return result
