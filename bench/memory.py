"""Memory benchmarks: peak resident memory (RSS) of `caso embed learn` and `caso edit`, each in its own process.

    python bench/memory.py            # the toy model on the CPU (about five minutes on one core)
    python bench/memory.py --quick    # fewer learn steps

Prints one JSON object per measurement: name, peak_rss_mb, target, and for the edit comparison
ratio = peak(100 images) / peak(10 images).
(a) learn_rss: `caso embed learn` on 100 toy faces with the toy model (target < 2048 MB), with
    caso's own peak_memory_mb; on a GPU, `--learn-model sd15-random --learn-size 512 --learn-batch 2
    --device cuda --skip-edit` measures the issue's SD 1.5 target (CUDA peak < 10 GB), and
    `--learn-model sdxl-random --learn-size 1024 --learn-batch 1 --device cuda --grad-checkpointing
    --skip-edit` SDXL's (fp16 on CUDA by default);
(b) edit_10_rss, edit_100_rss, edit_streams: `caso edit` on a folder of 10, then 100 toy faces
    brought to --size 128 (a kept image costs about 0.2 MB per float tensor of it, so keeping every
    input and output would show as tens of MB), with 2 DDIM steps (memory does not grow with the
    steps); target ratio <= 1.10 (editing streams: one batch in memory at a time).
    per_extra_image_mb = (peak_100 - peak_10) / 90 is what each further image costs.

Each command runs under a small wrapper process that reports its child's peak RSS
(getrusage RUSAGE_CHILDREN), so the benchmark's own memory is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RANDOM_MODELS, random_model_folder  # noqa: E402 - bench/ is not a package

WRAPPER = ("import resource, subprocess, sys; "
           "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True); "
           "sys.stderr.write(r.stderr[-2000:] if r.returncode else ''); "
           "print(r.stdout[-4000:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Peak RSS in MiB of ``cmd`` run to completion (ru_maxrss is in KiB on Linux, bytes on macOS), and its stdout."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    *stdout, kib = out.stdout.strip().splitlines()
    return round(int(kib) / (2**20 if sys.platform == "darwin" else 2**10), 1), "\n".join(stdout)


def report(name: str, peak: float, target: str, **extra: object) -> None:
    print(json.dumps({"name": name, "peak_rss_mb": peak, **extra, "target": target}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer learn steps")
    ap.add_argument("--size", type=int, default=128, help="edit image side (default 128)")
    ap.add_argument("--learn-model", default="toy", help="toy (default), sd15-random / sdxl-random (SD 1.5 or SDXL "
                                                         "shapes, random weights: use a GPU), sdxl-tiny, or any "
                                                         "--model value")
    ap.add_argument("--learn-size", type=int, help="learn image side (default: the model's resolution)")
    ap.add_argument("--learn-batch", type=int, default=8, help="learn batch size (default 8)")
    ap.add_argument("--grad-checkpointing", action="store_true", help="learn with --grad-checkpointing")
    ap.add_argument("--device", default="cpu", help="--device of the learn run (default cpu)")
    ap.add_argument("--skip-edit", action="store_true", help="measure learning only")
    args = ap.parse_args(argv)
    learn_steps, edit_steps = ("10" if args.quick else "40"), "2"

    work = Path(tempfile.mkdtemp(prefix="caso-membench-"))
    env = {**os.environ, "CASO_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1"}
    caso = [sys.executable, "-m", "caso_cli"]
    subprocess.run([*caso, "toyworld", "render", str(work / "faces"), "--n", "100", "--seed", "0"], env=env,
                   check=True, capture_output=True)
    images = sorted((work / "faces" / "images").glob("*.png"))
    ten = work / "ten"
    ten.mkdir()
    for p in images[:10]:
        (ten / p.name).symlink_to(p)

    model = args.learn_model
    if model in RANDOM_MODELS:
        model = random_model_folder(model, str(work))
    # A random small-cnn classifier and a random embedding: memory does not depend on what they learned.
    setup = (
        "import sys, torch\n"
        "from caso_cli.models.classifier import AttributeClassifier, ClassifierMeta, SmallCNN, save_classifier\n"
        "from caso_cli.models.loaders import load_model\n"
        "from caso_cli.registry import save_embedding\n"
        "from caso_cli.runtime import cpu_runtime\n"
        "torch.manual_seed(0)\n"
        "meta = ClassifierMeta(classes=['no_x', 'x'], backbone='small-cnn', input_size=32, mean=[0.5] * 3,"
        " std=[0.5] * 3)\n"
        "save_classifier(AttributeClassifier(SmallCNN(2), meta), sys.argv[1])\n"
        "sd = load_model('toy', cpu_runtime())\n"
        "save_embedding('x', torch.randn(2, sd.token_dim), {'classes': ['no_x', 'x'], 'model': 'toy',"
        " 'text_encoder_hash': sd.family.encoder_hash()})\n"
    )
    clf = work / "clf.safetensors"
    subprocess.run([sys.executable, "-c", setup, str(clf)], env=env, check=True, capture_output=True)

    learn_cmd = [*caso, "embed", "learn", str(work / "faces" / "images"), "-c", str(clf), "-n", "bench",
                 "--model", model, "--steps", learn_steps, "--batch-size", str(args.learn_batch), "--device",
                 args.device, "--checkpoint-every", "0", "--json"]
    learn_cmd += ["--size", str(args.learn_size)] if args.learn_size else []
    learn_cmd += ["--grad-checkpointing"] if args.grad_checkpointing else []
    learn, out = peak_rss_mb(learn_cmd, env)
    metrics = json.loads(out.strip().splitlines()[-1])
    report("learn_rss", learn, "< 2048 (toy model, CPU)", model=args.learn_model, batch=args.learn_batch,
           grad_checkpointing=args.grad_checkpointing, caso_peak_memory_mb=metrics["peak_memory_mb"],
           caso_peak_memory_of=metrics["peak_memory_of"])
    if args.skip_edit:
        return 0

    def edit(folder: Path, out: str) -> float:
        return peak_rss_mb([*caso, "edit", str(folder), "--attr", "x=3", "--steps", edit_steps, "--size",
                            str(args.size), "--device", "cpu", "--out", str(work / out), "-q"], env)[0]

    small = edit(ten, "out10")
    report("edit_10_rss", small, "baseline")
    large = edit(work / "faces" / "images", "out100")
    report("edit_100_rss", large, "baseline")
    report("edit_streams", large, "<= 1.10", ratio=round(large / small, 3),
           per_extra_image_mb=round((large - small) / 90, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
