"""Speed benchmarks: caso's passes against the work a naive implementation does, on the same model, in one run.

    python bench/run.py --quick            # the toy model on the CPU (about a minute)
    python bench/run.py --model sd15-random --size 512   # SD 1.5 shapes, random weights (use a GPU)
    python bench/run.py --model sdxl-tiny --quick          # a tiny SDXL on the CPU; sdxl-random: SDXL's shapes (GPU)

Prints one JSON object per measurement: name, ours_s, ref_s, ratio, target.
(a) learn_vs_official: a CASO learn step vs an official-style step that first runs a 50-step
    DDIM inversion and then the same guided step (ratio = ref / ours, target >= 10);
(b) learn_vs_floor: the learn step vs the sum of its unavoidable passes timed alone (null UNet
    forward without grad, text encoder(s) forward+backward into the vectors, conditional UNet
    forward+backward, VAE decoder forward+backward, classifier forward+backward) (ratio = ours /
    floor, target <= 1.25);
(c) interpolate_vs_separate: 7 scales from one inversion, batched, vs 7 separate edits;
(d) batch8_vs_single: one batch-8 edit vs 8 single-image edits;
(e) help_vs_python: `caso --help` vs `python -c pass` (process start-up);
(f) edit_vs_floor: one edit of one image as caso edits (VAE encode, null inversion to the start with one
    refinement per step, guided denoising, VAE decode; EditConfig's defaults) vs the sum of its UNet and
    VAE calls timed alone, the same calls on the same shapes (ratio = median over rounds of ours / floor,
    target <= 1.2).

``--only edit_vs_floor,...`` runs some rows only. Rows that compare a floor time both sides in
alternation, round after round, so that a shared machine's load drifts onto both alike.

Peak memory is measured by bench/memory.py; figures of both in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def timed(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    return statistics.median(timed_together([fn], repeat, warmup)[0])


def timed_together(fns: list[Callable[[], object]], repeat: int, warmup: int = 1) -> list[list[float]]:
    """Wall times of each of ``fns`` in ``repeat`` rounds, each round timing every one once in turn."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
    return times


def report(name: str, ours: float, ref: float, ratio: float, target: str) -> None:
    print(json.dumps({"name": name, "ours_s": round(ours, 4), "ref_s": round(ref, 4), "ratio": round(ratio, 2),
                      "target": target}), flush=True)


RANDOM_MODELS = ("sd15-random", "sdxl-tiny", "sdxl-random")  # built here from configs, random weights


def random_model_folder(model: str, root: str) -> str:
    """A diffusers folder of SD 1.5's shapes, a tiny SDXL, or SDXL's shapes, with random weights."""
    from caso_cli.models.build import SD15, SDXL, TINY_XL, build_components, build_sdxl_components, save_pipeline_folder

    parts = {"sd15-random": lambda: build_components(SD15), "sdxl-tiny": lambda: build_sdxl_components(TINY_XL),
             "sdxl-random": lambda: build_sdxl_components(SDXL)}[model]()
    return str(save_pipeline_folder(parts, Path(root) / model))


def load(model: str, size: int | None):
    from caso_cli.models.loaders import load_model
    from caso_cli.runtime import make_runtime

    runtime = make_runtime()
    if model in RANDOM_MODELS:
        import tempfile

        model = random_model_folder(model, tempfile.mkdtemp(prefix="caso-bench-"))
    sd = load_model(model, runtime)
    return sd, size or sd.resolution


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy", help="toy (default), sd15-random, sdxl-tiny, sdxl-random (random "
                                                   "weights of those shapes), or any --model value")
    ap.add_argument("--size", type=int, help="image side (default: the model's resolution)")
    ap.add_argument("--batch", type=int, default=2, help="learn batch size")
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeat", type=int, help="repeats (default 3 with --quick, else 7)")
    ap.add_argument("--only", help="comma-separated row names to run (default: all)")
    args = ap.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 7)
    rows = {"learn_vs_official", "learn_vs_floor", "interpolate_vs_separate", "batch8_vs_single", "help_vs_python",
            "edit_vs_floor"}
    only = set(args.only.split(",")) if args.only else rows
    if only - rows:
        ap.error(f"--only: unknown rows {', '.join(sorted(only - rows))} (known: {', '.join(sorted(rows))})")

    from caso_cli.config import EditConfig, LearnConfig
    from caso_cli.models.classifier import AttributeClassifier, ClassifierMeta, SmallCNN
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.guidance import cfg_guidance
    from caso_cli.pipelines.learn_loss import caso_loss

    sd, size = load(args.model, args.size)
    dev = sd.runtime.device
    torch.manual_seed(0)
    meta = ClassifierMeta(classes=["no", "yes"], backbone="small-cnn", input_size=min(size, 224), mean=[0.5] * 3,
                          std=[0.5] * 3)
    clf = AttributeClassifier(SmallCNN(2), meta).to(dev).eval().requires_grad_(False)
    cfg = LearnConfig(batch_size=args.batch)
    b = args.batch
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(b, *sd.latent_shape(size), generator=g).to(dev, sd.net.dtype)
    noise = torch.randn(z0.shape, generator=g).to(dev, z0.dtype)
    targets = torch.arange(b, device=dev) % 2
    vectors = torch.randn(2, sd.token_dim, generator=g).to(dev).requires_grad_(True)
    with torch.no_grad():
        c_null = sd.family.null_condition()

    def learn_step() -> None:
        loss, _ = caso_loss(sd, clf, vectors, z0, targets, noise, c_null, cfg)
        loss.backward()
        vectors.grad = None

    edit_cfg = EditConfig(steps=50, start=1.0)

    def official_step() -> None:  # the released code inverts 50 DDIM steps before each guided step
        invert_latents(sd, z0, edit_cfg)
        learn_step()

    ours = None
    if "learn_vs_official" in only:
        ours = timed(learn_step, repeat)
        ref = timed(official_step, max(1, repeat // 2))
        report("learn_vs_official", ours, ref, ref / ours, ">= 10")

    # (b) the floor: each unavoidable pass alone, on the same shapes.
    from caso_cli.diffusion import add_noise
    t = cfg.t_train
    z_t = add_noise(z0, noise, sd.schedule.level(t)).to(sd.net.dtype)
    cond = sd.family.encode_vectors(vectors[targets].detach().unsqueeze(1))

    def null_fwd() -> None:
        with torch.no_grad():
            sd.eps(z_t, t, c_null)

    def text_fwd_bwd() -> None:  # the vectors' gradient flows back through the text encoder(s)
        c = sd.family.encode_vectors(vectors[targets].unsqueeze(1))
        sum(t_.float().sum() for t_ in (c.hidden, *c.extra.values())).backward()
        vectors.grad = None

    z_req = z_t.detach().clone().requires_grad_(True)

    def cond_fwd_bwd() -> None:
        sd.eps(z_req, t, cond).float().sum().backward()
        z_req.grad = None

    lat = (z0 / sd.scaling_factor).detach().clone().requires_grad_(True)

    def vae_fwd_bwd() -> None:
        sd.vae.decode(lat).sample.float().sum().backward()
        lat.grad = None

    x = (torch.rand(b, 3, size, size, generator=g) * 2 - 1).to(dev).requires_grad_(True)

    def clf_fwd_bwd() -> None:
        clf(x).sum().backward()
        x.grad = None

    if "learn_vs_floor" in only:
        ours = ours if ours is not None else timed(learn_step, repeat)
        floor = sum(timed(fn, repeat) for fn in (null_fwd, text_fwd_bwd, cond_fwd_bwd, vae_fwd_bwd, clf_fwd_bwd))
        report("learn_vs_floor", ours, floor, ours / floor, "<= 1.25")

    # (c) interpolate: one inversion + one 7-wide batch vs 7 separate edits.
    e_cfg = EditConfig(steps=50, start=0.6)
    z1 = z0[:1]
    cond1 = cond[:1]
    scales = torch.linspace(-6, 6, 7)

    def interpolate() -> None:
        zt = invert_latents(sd, z1, e_cfg)
        edit_latents(sd, zt.expand(7, -1, -1, -1), cfg_guidance(sd, cond1, scales), e_cfg)

    def separate() -> None:
        for w in scales.tolist():
            edit_latents(sd, invert_latents(sd, z1, e_cfg), cfg_guidance(sd, cond1, w), e_cfg)

    if "interpolate_vs_separate" in only:
        ours_c, ref_c = timed(interpolate, max(1, repeat // 2)), timed(separate, 1)
        report("interpolate_vs_separate", ours_c, ref_c, ref_c / ours_c, "> 1 (speed-up)")

    # (d) one batch of 8 vs 8 singles.
    z8 = torch.randn(8, *z0.shape[1:], generator=g).to(dev, z0.dtype)

    def batch8() -> None:
        edit_latents(sd, invert_latents(sd, z8, e_cfg), cfg_guidance(sd, cond1, 5.0), e_cfg)

    def singles() -> None:
        for i in range(8):
            edit_latents(sd, invert_latents(sd, z8[i:i + 1], e_cfg), cfg_guidance(sd, cond1, 5.0), e_cfg)

    if "batch8_vs_single" in only:
        ours_d, ref_d = timed(batch8, max(1, repeat // 2)), timed(singles, 1)
        report("batch8_vs_single", ours_d, ref_d, ref_d / ours_d, "> 1 (speed-up)")

    # (e) start-up.
    def run(cmd: list[str]) -> Callable[[], object]:
        return lambda: subprocess.run(cmd, capture_output=True, check=True)

    if "help_vs_python" in only:
        help_s = timed(run([sys.executable, "-m", "caso_cli", "--help"]), repeat)
        pass_s = timed(run([sys.executable, "-c", "pass"]), repeat)
        report("help_vs_python", help_s, pass_s, help_s / pass_s, "small (no torch import)")

    # (f) one edit of one image vs its UNet and VAE calls alone.
    if "edit_vs_floor" in only:
        ours_f, floor_f, ratio_f = edit_vs_floor(sd, size, cond1, repeat, toy=args.model == "toy")
        report("edit_vs_floor", ours_f, floor_f, ratio_f, "<= 1.2")
    return 0


def edit_vs_floor(sd, size: int, cond: Any, repeat: int, toy: bool) -> tuple[float, float, float]:
    """One edit (encode, invert, guided denoise, decode; EditConfig's defaults) against its floor: its UNet and VAE
    calls, each kind timed alone in a plain loop of as many calls on the same shapes, summed.

    Returns the median edit seconds, the median floor seconds and the median over rounds of the round's
    edit / floor (each round times the edit and the floor's parts back to back, so load drift cancels).
    """
    from caso_cli.config import EditConfig
    from caso_cli.families import Condition
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.generate import decode_latents, encode_images
    from caso_cli.pipelines.guidance import cfg_guidance

    dev = sd.runtime.device
    if toy and size == 32:  # a toy face, as caso demo edits them
        from caso_cli.toyworld.render import render_faces
        from caso_cli.toyworld.sample import to_unit

        x = to_unit(render_faces(1, 90_000)[0])
    else:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cfg = EditConfig()
    n = cfg.num_steps(sd.schedule)

    def edit() -> None:
        z_t = invert_latents(sd, encode_images(sd, x), cfg)
        decode_latents(sd, edit_latents(sd, z_t, cfg_guidance(sd, cond, 5.0), cfg))

    with torch.no_grad():
        c_null = sd.family.null_condition()
        x_dev = x.to(dev, sd.vae.dtype)
        z = encode_images(sd, x)
        z2, c2 = torch.cat([z, z]), Condition.cat([c_null, cond])
    t = sd.schedule.grid(cfg.steps)[cfg.steps - n]  # the start timestep; a UNet call costs the same at any t

    @torch.no_grad()
    def vae_encode() -> object:
        return sd.vae.encode(x_dev).latent_dist.mean

    @torch.no_grad()
    def unet_inversion() -> object:  # null condition, batch 1: one call per step and per refinement
        return [sd.family.net_output(sd.net, z, t, c_null, (size, size)) for _ in range(n * (1 + cfg.inversion_refine))]

    @torch.no_grad()
    def unet_guided() -> object:  # null and edit condition in one batch-2 call per step
        return [sd.family.net_output(sd.net, z2, t, c2, (size, size)) for _ in range(n)]

    @torch.no_grad()
    def vae_decode() -> object:
        return sd.vae.decode(z / sd.scaling_factor).sample

    ours, *parts = timed_together([edit, vae_encode, unet_inversion, unet_guided, vae_decode], repeat)
    floor = [sum(r) for r in zip(*parts, strict=True)]
    return (statistics.median(ours), statistics.median(floor),
            statistics.median(o / f for o, f in zip(ours, floor, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
