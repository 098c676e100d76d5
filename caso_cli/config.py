"""Typed configurations of the pipelines (torch-free, so the CLI can read their defaults at no cost)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from caso_cli.errors import UsageError

if TYPE_CHECKING:
    from caso_cli.diffusion import NoiseSchedule

SMALL_CNN = "small-cnn"


@dataclass(frozen=True)
class FitConfig:
    """How to fit a classifier."""

    attr: str = ""  # attribute name stored in the file
    backbone: str = SMALL_CNN  # "small-cnn" or "hf:<hub id or local folder>"
    mode: str = "finetune"  # "finetune" (all weights) or "frozen" (only the new head; hf backbones)
    input_size: int | None = None  # default: 32 for small-cnn, the backbone's own for hf
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    batch_size: int = 64
    lr: float | None = None  # default 1e-3 (small-cnn), 1e-4 fine-tune / 1e-3 frozen (hf)
    weight_decay: float = 1e-4
    val_fraction: float = 0.2  # used when the data has no partition file
    patience: int = 5  # epochs without validation improvement before stopping (once above chance)
    max_minutes: float | None = None  # stop after this much time (the best epoch is kept)
    augment: bool = True  # random flips and 2-pixel shifts
    seed: int = 0


#: the candidates of ``--t-train auto`` (LearnConfig.t_screen): three fixed timesteps and one range
T_SCREEN: tuple[tuple[int, int], ...] = ((201, 201), (401, 401), (601, 601), (201, 601))


@dataclass(frozen=True)
class LearnConfig:
    """Hyperparameters of learning (defaults chosen by measurement on the toy world: docs/learning.md)."""

    t_train: int = 201  # training timestep t*
    # if set, every step draws t* uniformly from t_train..t_train_max instead (not in the paper; docs/learning.md)
    t_train_max: int | None = None
    train_scale: float = 3.0  # guidance scale w inside the loss
    lambda_rec: float = 0.0  # weight of ||zhat0 - z0||^2 (Eq. 12)
    # weight of the keep term: on images the classifier already reads as the target class, the guidance's change
    # ||zhat0_w(c_k) - zhat0_null||^2 (not in the paper: docs/learning.md)
    lambda_keep: float = 0.0
    # shift the decoded estimate by up to this many pixels (and flip it half the time) before the classifier reads
    # it, a new draw every step, so that no pixel-exact perturbation satisfies the classifier (not in the paper)
    augment: int = 0
    lr: float = 1e-2  # AdamW learning rate
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    warmup_steps: int = 10  # linear warm-up, then constant
    batch_size: int = 2  # images per step (each batch covers the classes round-robin)
    steps: int = 1000  # total steps, whatever the number of images (unless epochs is set)
    epochs: float | None = None  # passes over the images instead of a fixed number of steps
    init_word: str | None = None  # start every vector at this word's token embedding; None: random
    # learn in context (docs/method.md §10, not in the paper): each step puts the token in the slot of a context drawn
    # from these ("a face with {} and red hair") and guides it as a difference from the context in words,
    # eps(ctx) + w (eps(ctx + e_k) - eps(ctx)); empty: the paper's whole prompt [e_k] against the null condition
    contexts: tuple[str, ...] = ()
    placement: str = "token"  # in context: the slot's input token ("token") or a delta on its output state ("output")
    # hold each vector's norm to at most this many times the mean token-embedding norm after every step (None: free)
    max_norm: float | None = None
    # t* by measurement (--t-train auto): before learning, a short run per candidate (low, high) timestep range, each
    # scored by the generation check; the full run then uses the best (empty: t_train as given)
    t_screen: tuple[tuple[int, int], ...] = ()
    screen_steps: int = 200  # steps of each screening run
    seed: int = 0
    checkpoint_every: int = 50  # steps between checkpoints (0: never)
    # after learning, generate this many samples per class from noise with the class's vector alone (CFG
    # check_scale) and let the classifier read them (0: no check); the rates go into the final metrics
    check_samples: int = 16
    check_scale: float = 5.0
    # extra runs (seeds seed+1, seed+2, ...) while some class's check rate is below 0.9; each class keeps the
    # vector of the run whose check read it best (not in the paper: docs/learning.md)
    restarts: int = 4

    def t_label(self) -> str:
        """t* as the CLI writes it: ``201`` or ``201:601``."""
        return str(self.t_train) if self.t_train_max is None else f"{self.t_train}:{self.t_train_max}"

    def t_range(self) -> tuple[int, int]:
        """(low, high) of the training timestep; low == high: a fixed t*."""
        return self.t_train, self.t_train if self.t_train_max is None else self.t_train_max

    def problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every setting no run can use; checked before any model or data is loaded
        (the training timesteps are checked against the model's range when it is loaded)."""
        out = []
        for name, value in (("batch_size", self.batch_size), ("steps", self.steps)):
            if value < 1:
                out.append((name, f"must be at least 1, got {value}"))
        if self.epochs is not None and not self.epochs > 0:
            out.append(("epochs", f"must be positive, got {self.epochs:g}"))
        if not self.lr >= 0:  # 0 is allowed: the starting vectors (a learning rate of 0 moves nothing)
            out.append(("lr", f"must be 0 or more, got {self.lr:g}"))
        for name, value in (("augment", self.augment), ("check_samples", self.check_samples),
                            ("restarts", self.restarts), ("checkpoint_every", self.checkpoint_every)):
            if value < 0:
                out.append((name, f"must be 0 or more, got {value}"))
        if self.placement not in ("token", "output"):
            out.append(("placement", f"must be token or output, got {self.placement!r}"))
        if self.max_norm is not None and not self.max_norm > 0:
            out.append(("max_norm", f"must be positive, got {self.max_norm:g}"))
        if self.t_screen and not self.check_samples:
            out.append(("t_screen", "needs the generation check (check_samples > 0) to score the candidates"))
        if self.t_screen and self.screen_steps < 1:
            out.append(("screen_steps", f"must be at least 1, got {self.screen_steps}"))
        return out

    def check(self) -> None:
        """Raise a UsageError naming every unusable setting and its value (see :meth:`problems`)."""
        problems = self.problems()
        if problems:
            raise UsageError("; ".join(f"{name} {problem}" for name, problem in problems))

    def total_steps(self, n_images: int) -> int:
        if self.epochs is None:
            return self.steps
        return max(1, math.ceil(self.epochs * n_images / self.batch_size))


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load and where (``--model``, ``--model-config``, ``--device``, ``--dtype``)."""

    name: str | None = None  # hub id, folder, single file or alias; None: the embeddings' own model, else the default
    config: str | None = None  # the config a single-file checkpoint needs
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False  # load a legacy .ckpt/.pt single file (it can run code when loaded: --allow-pickle)


@dataclass(frozen=True)
class EditConfig:
    """How an edit runs (docs/method.md §4)."""

    steps: int = 50  # DDIM grid size
    start: float = 0.6  # fraction of the trajectory that is inverted and then denoised with guidance
    single_step: bool = False  # guide only the first denoising step after inversion, null afterwards
    # fixed-point refinements of each inversion step (0: plain DDIM inversion, docs/method.md Eq. 6); each costs one
    # more UNet call per inverted step and makes the null reconstruction exact (measured in docs/editing.md)
    inversion_refine: int = 1
    # start at this timestep instead of a fraction: the grid timesteps t <= it, on the loaded model's own grid
    start_timestep: int | None = None

    @classmethod
    def starting_at(cls, start: float, steps: int = 50, single_step: bool = False,
                    inversion_refine: int = 1) -> EditConfig:
        """The config that guides from ``start`` (``--start``): a fraction of the trajectory (0 < start <= 1; 1 =
        from pure noise), or a timestep (a whole number above 1: the largest timestep <= it on the loaded model's
        own DDIM grid, resolved by :meth:`num_steps`). The inverse of :meth:`start_label`."""
        if steps < 1:
            raise UsageError(f"--steps must be at least 1, got {steps}")
        if 0 < start <= 1:
            return cls(steps=steps, start=start, single_step=single_step, inversion_refine=inversion_refine)
        if start > 1 and start == int(start):
            return cls(steps=steps, start_timestep=int(start), single_step=single_step,
                       inversion_refine=inversion_refine)
        raise UsageError(f"--start must be a fraction in (0, 1] or a whole timestep above 1, got {start:g}")

    def num_steps(self, schedule: NoiseSchedule | None = None) -> int:
        """Steps inverted (and denoised): round(start * steps), at least 1; or, with ``start_timestep``, the
        timesteps of ``schedule``'s grid (its spacing, offset and training steps) that are <= it."""
        if schedule is not None and not 1 <= self.steps <= schedule.num_train_timesteps:
            raise UsageError(f"the steps must lie in 1..{schedule.num_train_timesteps} for this model, "
                             f"got {self.steps}")
        if self.start_timestep is None:
            return max(1, min(self.steps, round(self.start * self.steps)))
        if schedule is None:
            raise ValueError("a timestep start needs the model's schedule")
        if not 0 < self.start_timestep < schedule.num_train_timesteps:
            raise UsageError(f"the start timestep must lie in 1..{schedule.num_train_timesteps - 1} for this model, "
                             f"got {self.start_timestep}")
        return max(1, sum(t <= self.start_timestep for t in schedule.grid(self.steps)))

    def start_label(self) -> str:
        """The start as given, as ``--start`` reads it: a timestep (an integer > 1) or a fraction."""
        return str(self.start_timestep) if self.start_timestep is not None else f"{self.start:g}"


@dataclass(frozen=True)
class EvalConfig:
    """What ``caso eval`` measures between originals and their edits (docs/eval.md)."""

    classifier: str | None = None  # classifier file for success rates and features; None: skip
    target: str | None = None  # the class edits should land in (needs classifier)
    oracle: str | None = None  # a registered oracle (caso_cli.eval.oracles.get_oracle), e.g. "toy": per-attribute rates
    # weight files, folders or cached hub ids holding VGG16 + LPIPS heads and/or FID's InceptionV3 (backbones.py)
    weights: tuple[str, ...] = ()
    fit: str = "crop"  # how an original is brought to its edit's size when they differ
    batch_size: int = 64  # images per classifier forward pass
    kid_subsets: int = 100  # KID: random subsets averaged
    kid_subset_size: int = 1000  # KID: images per subset (capped at the number of pairs)
    seed: int = 0  # KID subset sampling
