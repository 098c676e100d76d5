"""Train the toy-world Stable Diffusion from scratch on rendered toy faces (CPU, under an hour).

    python -m caso_cli.toyworld.train --out DIR --seed 0 [--resume]

Stage 1 trains the VAE (``AutoencoderKL``) on rendered faces with MSE + L1 + a tiny KL term,
then sets ``scaling_factor`` = 1 / std of the latents. Stage 2 encodes the training set once
(posterior mean x scaling factor) and trains the UNet (``UNet2DConditionModel``) and the CLIP
text encoder jointly with the epsilon loss on generated captions (:mod:`.captions`), min-SNR
weighting, AdamW with warm-up and cosine decay, and an EMA of both (the EMA is what is saved).

A stage runs for ``--*-steps`` steps, or, when ``--*-minutes`` is given instead, until that much
wall time has passed (the learning-rate schedule then follows elapsed time, so a busy CPU gives
fewer steps of the same schedule). Checkpoints go to ``DIR/checkpoints`` every
``--ckpt-every`` steps; ``--resume`` continues from them. The result is a standard diffusers
pipeline folder in ``DIR`` (``model_index.json`` + safetensors) plus ``DIR/training.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

# On a shared, oversubscribed CPU, OpenMP threads that spin while waiting slow everyone down.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from caso_cli.models.build import SDShape  # noqa: E402
from caso_cli.toyworld import captions as C  # noqa: E402
from caso_cli.toyworld import render as R  # noqa: E402

#: The first model (``toy-v1``): a 32-wide text encoder for the 12 words of the v1 captions.
TOY_SHAPE_V1 = SDShape(
    sample_size=16, vae_channels=(16, 32), vae_layers=1, latent_channels=4,
    unet_channels=(32, 64), unet_layers=1, attention_head_dim=4, norm_groups=8,
    text_width=32, text_layers=2, text_heads=2, text_intermediate=128, words=C.V1.words(),
)
#: The second-generation model (``toy``): the same VAE and UNet, a 64-wide text encoder for the v2 captions.
TOY_SHAPE_V2 = dataclasses.replace(TOY_SHAPE_V1, text_width=64, text_heads=4, text_intermediate=256,
                                   words=C.V2.words())
#: Per world: the model's shape, its caption grammar and the training faces' render config.
WORLDS = {"v1": (TOY_SHAPE_V1, C.V1, R.RenderConfig()), "v2": (TOY_SHAPE_V2, C.V2, R.TRAIN_CONFIG)}
MIN_SNR_GAMMA = 5.0
DETAIL_WEIGHT = 4.0  # VAE loss weight on detail pixels


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def lr_factor(progress: float, warmup: float, final: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to ``final``."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    p = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * p))


class Budget:
    """Progress through a stage, by steps or by wall time (seconds accumulated across resumes)."""

    def __init__(self, steps: int | None, minutes: float | None, elapsed: float = 0.0):
        if not steps and not minutes:
            raise SystemExit("give --*-steps or --*-minutes for every stage")
        self.steps, self.seconds = steps, (minutes * 60 if minutes else None)
        self.elapsed0, self.t0 = elapsed, time.time()

    @property
    def elapsed(self) -> float:
        return self.elapsed0 + time.time() - self.t0

    def progress(self, step: int) -> float:
        if self.seconds:
            return self.elapsed / self.seconds
        return step / self.steps  # type: ignore[operator]

    def total(self, step: int) -> int:
        """Expected number of steps (for the progress bar)."""
        if not self.seconds:
            return int(self.steps or 0)
        p = self.progress(step)
        return max(step + 1, int(step / p)) if p > 0.02 and step > 0 else max(step + 100, 1000)


def make_progress(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), console=console, transient=False)


def images_to_tensor(images: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ---- data ---------------------------------------------------------------------------------------

def training_data(ckpt: Path, n: int, seed: int, console: Any,
                  config: R.RenderConfig | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rendered training faces and the class labels captions name (cached in the checkpoint folder)."""
    path = ckpt / "data.npz"
    if path.is_file():
        d = np.load(path)
        if len(d["images"]) == n and all(k in d for k in C.CLASSES):
            return d["images"], {k: d[k] for k in C.CLASSES}
    console.print(f"rendering {n} training faces (seed {seed})")
    images, params = R.render_faces(n, seed, config)
    labels = C.caption_labels(params)
    arrays: dict[str, Any] = {"images": images, **labels}  # not **labels alone: mypy would match savez's allow_pickle
    np.savez(path, **arrays)
    return images, labels


# ---- stage 1: VAE -------------------------------------------------------------------------------

def train_vae(parts: dict[str, Any], images: np.ndarray, args: argparse.Namespace, ckpt: Path,
              console: Any) -> dict[str, Any]:
    import torch

    vae = parts["vae"]
    state_path = ckpt / "vae.pt"
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    step, elapsed = 0, 0.0
    if args.resume and state_path.is_file():
        st = torch.load(state_path, weights_only=False)
        vae.load_state_dict(st["vae"])
        if st.get("done"):
            console.print(f"VAE: done at step {st['step']} (resumed)")
            return st["log"]
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
    budget = Budget(args.vae_steps, args.vae_minutes, elapsed)
    rng = np.random.default_rng(args.seed + 11)
    gen = torch.Generator().manual_seed(args.seed + 12)
    for _ in range(step):  # keep the batch stream deterministic across resumes
        rng.integers(0, len(images), args.vae_batch)
    vae.train()
    losses: list[float] = []
    with make_progress(console) as bar:
        task = bar.add_task("VAE", total=budget.total(step), completed=step, loss=float("nan"))
        while budget.progress(step) < 1.0:
            lr = args.vae_lr * lr_factor(budget.progress(step), 0.03)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = rng.integers(0, len(images), args.vae_batch)
            x = images_to_tensor(images[idx])
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
            rec = vae.decode(z).sample
            # weight detail pixels (thin dark features) up: 1 + DETAIL_WEIGHT * |x - 3x3 mean(x)|
            detail = (x - torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs().mean(1, True)
            w = 1.0 + DETAIL_WEIGHT * detail
            err = rec - x
            loss = (w * (err.pow(2) + 0.5 * err.abs())).mean() + args.kl * post.kl().mean() / z[0].numel()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update(task, completed=step, total=budget.total(step), loss=float(np.mean(losses[-20:])))
            if step % args.log_every == 0:
                console.print(f"VAE step {step} loss {np.mean(losses[-args.log_every:]):.5f} lr {lr:.2e} "
                              f"t {budget.elapsed:.0f}s", highlight=False)
            if step % args.ckpt_every == 0:
                _atomic_save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                              "elapsed": budget.elapsed, "done": False}, state_path)
    vae.eval()
    # scaling factor: 1 / std of the posterior means over the training set
    with torch.no_grad():
        mus = torch.cat([vae.encode(images_to_tensor(images[i:i + 256])).latent_dist.mean
                         for i in range(0, min(len(images), 4096), 256)])
    scale = float(1.0 / mus.std())
    vae.register_to_config(scaling_factor=scale)
    log = {"steps": step, "seconds": round(budget.elapsed, 1), "final_loss": float(np.mean(losses[-50:]))
           if losses else None, "scaling_factor": scale, "batch": args.vae_batch}
    _atomic_save({"vae": vae.state_dict(), "step": step, "elapsed": budget.elapsed, "done": True, "log": log,
                  "scaling_factor": scale}, state_path)
    console.print(f"VAE: {step} steps in {budget.elapsed:.0f}s, scaling factor {scale:.4f}")
    return log


# ---- stage 2: UNet + text encoder ---------------------------------------------------------------

class TokenCache:
    """Token ids per caption string (captions repeat a lot, tokenizing is slow)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> Any:
        import torch

        from caso_cli.conditioning import prompt_ids

        missing = sorted({t for t in texts if t not in self.cache})
        if missing:
            for t, ids in zip(missing, prompt_ids(self.tokenizer, missing), strict=True):
                self.cache[t] = ids
        return torch.stack([self.cache[t] for t in texts])


def toy_sd(parts: dict[str, Any], unet: Any = None, text_encoder: Any = None) -> Any:
    """A :class:`StableDiffusion` view of the components being trained (for sampling/evaluation)."""
    from caso_cli.diffusion import schedule_from_config
    from caso_cli.families.sd import SD
    from caso_cli.models.loaded import StableDiffusion
    from caso_cli.runtime import cpu_runtime

    text = {"text_encoder": text_encoder or parts["text_encoder"], "tokenizer": parts["tokenizer"]}
    return StableDiffusion(vae=parts["vae"], net=unet or parts["unet"], scheduler=parts["scheduler"],
                           schedule=schedule_from_config(parts["scheduler"]), runtime=cpu_runtime(),
                           name="toy (training)", family=SD(text))


def _ema_update(ema: Any, model: Any, decay: float) -> None:
    import torch

    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1.0 - decay)


def train_unet(parts: dict[str, Any], images: np.ndarray, labels: dict[str, np.ndarray],
               args: argparse.Namespace, ckpt: Path, console: Any) -> dict[str, Any]:
    import copy

    import torch

    from caso_cli.toyworld import quality
    from caso_cli.toyworld import sample as S

    grammar = WORLDS[args.world][1]
    unet, text = parts["unet"], parts["text_encoder"]
    sd = toy_sd(parts)
    lat_path = ckpt / "latents.pt"
    if args.resume and lat_path.is_file():
        z0_all = torch.load(lat_path)
    else:
        console.print(f"encoding {len(images)} training faces")
        z0_all = S.encode(sd, images).float()
        _atomic_save(z0_all, lat_path)
    console.print(f"latents: mean {float(z0_all.mean()):.3f} std {float(z0_all.std()):.3f}")

    abar = torch.tensor(sd.schedule.alphas_cumprod, dtype=torch.float32)
    snr = abar / (1 - abar)
    weight_t = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr  # min-SNR-gamma weights for epsilon loss

    params: list[dict[str, Any]] = [{"params": list(unet.parameters()), "weight_decay": 1e-2},
                                    {"params": list(text.parameters()), "weight_decay": 0.0}]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99))
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    for m in (ema_unet, ema_text):
        m.requires_grad_(False)
    state_path = ckpt / "unet.pt"
    step, elapsed, curve, losses_all = 0, 0.0, [], []
    if args.resume and state_path.is_file():
        st = torch.load(state_path, weights_only=False)
        unet.load_state_dict(st["unet"])
        text.load_state_dict(st["text"])
        ema_unet.load_state_dict(st["ema_unet"])
        ema_text.load_state_dict(st["ema_text"])
        opt.load_state_dict(st["opt"])
        step, elapsed, curve, losses_all = st["step"], st["elapsed"], st["curve"], st["losses"]
        if st.get("done") and not args.extend:
            console.print(f"UNet: done at step {step} (resumed)")
            return {"steps": step, "seconds": round(elapsed, 1), "curve": curve}
        console.print(f"UNet: resuming at step {step} ({elapsed:.0f}s)")
    budget = Budget(args.unet_steps, args.unet_minutes, elapsed)
    rng = np.random.default_rng(args.seed + 21 + step)
    gen = torch.Generator().manual_seed(args.seed + 22 + step)
    tokens = TokenCache(parts["tokenizer"])
    unet.train()
    text.train()
    n = len(z0_all)

    def evaluate() -> None:
        res = quality.prompt_quality(toy_sd(parts, ema_unet, ema_text), n_per_prompt=args.eval_n,
                                     seed=quality.TEST_SEED, steps=args.eval_steps, scale=5.0)
        res.update(step=step, minutes=round(budget.elapsed / 60, 1))
        curve.append(res)
        console.print("eval " + json.dumps(res), highlight=False)

    def save(done: bool) -> None:
        _atomic_save({"unet": unet.state_dict(), "text": text.state_dict(), "ema_unet": ema_unet.state_dict(),
                      "ema_text": ema_text.state_dict(), "opt": opt.state_dict(), "step": step,
                      "elapsed": budget.elapsed, "curve": curve, "losses": losses_all, "done": done}, state_path)

    with make_progress(console) as bar:
        task = bar.add_task("UNet", total=budget.total(step), completed=step, loss=float("nan"))
        recent: list[float] = []
        while budget.progress(step) < 1.0:
            lr = args.lr * lr_factor(budget.progress(step), args.warmup)
            train_text = budget.progress(step) >= args.text_freeze
            opt.param_groups[0]["lr"] = lr
            opt.param_groups[1]["lr"] = lr * args.text_lr_mult if train_text else 0.0
            idx = rng.integers(0, n, args.batch)
            caps = C.captions({k: v[idx] for k, v in labels.items()}, rng, grammar)
            ids = tokens(caps)
            z0 = z0_all[idx]
            t = torch.randint(0, len(abar), (args.batch,), generator=gen)
            noise = torch.randn(z0.shape, generator=gen)
            a = abar[t].view(-1, 1, 1, 1)
            z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
            cond = text(input_ids=ids)[0]
            pred = unet(z_t, t, encoder_hidden_states=cond).sample
            per = (pred - noise).pow(2).mean(dim=(1, 2, 3))
            loss = (per * weight_t[t]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], 1.0)
            opt.step()
            step += 1
            decay = min(args.ema, (1 + step) / (10 + step))
            _ema_update(ema_unet, unet, decay)
            _ema_update(ema_text, text, decay)
            recent.append(float(loss.detach()))
            bar.update(task, completed=step, total=budget.total(step), loss=float(np.mean(recent[-20:])))
            if step % args.log_every == 0:
                m = float(np.mean(recent[-args.log_every:]))
                losses_all.append([step, round(budget.elapsed, 1), m])
                console.print(f"UNet step {step} loss {m:.5f} lr {lr:.2e} t {budget.elapsed:.0f}s", highlight=False)
            if args.eval_every and step % args.eval_every == 0:
                evaluate()
            if step % args.ckpt_every == 0:
                save(False)
    if args.eval_every:
        evaluate()
    save(True)
    # the EMA weights are the model
    unet.load_state_dict(ema_unet.state_dict())
    text.load_state_dict(ema_text.state_dict())
    unet.eval()
    text.eval()
    console.print(f"UNet: {step} steps in {budget.elapsed:.0f}s")
    return {"steps": step, "seconds": round(budget.elapsed, 1), "batch": args.batch, "lr": args.lr,
            "ema": args.ema, "text_lr_mult": args.text_lr_mult, "text_freeze": args.text_freeze, "curve": curve,
            "losses": losses_all}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m caso_cli.toyworld.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (diffusers pipeline); checkpoints in OUT/checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", choices=sorted(WORLDS), default="v2",
                   help="v2: the second-generation model (captions like real ones, correlated training faces); "
                        "v1: the first model")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--extend", action="store_true", help="with --resume: keep training a finished UNet stage")
    p.add_argument("--n-train", type=int, default=20000, help="rendered training faces")
    p.add_argument("--vae-steps", type=int, default=None)
    p.add_argument("--vae-minutes", type=float, default=None)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--kl", type=float, default=1e-6, help="KL weight (per latent element, relative)")
    p.add_argument("--unet-steps", type=int, default=None)
    p.add_argument("--unet-minutes", type=float, default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=float, default=0.04, help="warm-up share of the UNet stage")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--text-lr-mult", type=float, default=0.3,
                   help="text-encoder lr = this x lr (a fast text encoder collapses to prompt-independent output)")
    p.add_argument("--text-freeze", type=float, default=0.25,
                   help="share of the UNet stage with the text encoder frozen at its random init")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=0, help="quick text-to-image check every N steps (0: off)")
    p.add_argument("--eval-n", type=int, default=8, help="samples per prompt in the quick check")
    p.add_argument("--eval-steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    # Defaults: the step counts of the shipped model (about 3.5 + 36 minutes on two idle cores).
    if args.vae_steps is None and args.vae_minutes is None:
        args.vae_steps = 1000
    if args.unet_steps is None and args.unet_minutes is None:
        args.unet_steps = 2800 if args.world == "v1" else 3000
    torch.set_num_threads(args.threads)
    from caso_cli.models.build import build_components, save_pipeline_folder
    from caso_cli.models.loaders import quiet_libraries

    quiet_libraries()
    console = _console()
    out = Path(args.out)
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    shape, grammar, config = WORLDS[args.world]
    parts = build_components(shape, seed=args.seed, tokenizer_dir=ckpt / "tokenizer")
    images, labels = training_data(ckpt, args.n_train, args.seed, console, config)
    vae_log = train_vae(parts, images, args, ckpt, console)
    parts["vae"].requires_grad_(False)
    unet_log = train_unet(parts, images, labels, args, ckpt, console)
    save_pipeline_folder(parts, out)
    log = {"seed": args.seed, "world": args.world, "grammar": grammar.name,
           "render_config": asdict(config),
           "shape": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(shape).items()},
           "args": {k: v for k, v in vars(args).items()}, "vae": vae_log, "unet": unet_log,
           "wall_seconds_this_run": round(time.time() - t0, 1),
           "parameters": {k: sum(p.numel() for p in parts[k].parameters()) for k in ("vae", "unet", "text_encoder")}}
    (out / "training.json").write_text(json.dumps(log, indent=1), encoding="utf-8")
    console.print(f"saved the pipeline to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
