"""Thread counts on a shared CPU: how learning and editing time changes with torch's threads, idle and busy.

    OMP_NUM_THREADS=1 python bench/threads.py          # toy model; about two minutes on 2 cores

For each thread count (1 .. the cores, and the cores with OMP_WAIT_POLICY=passive: waiting threads sleep instead
of spinning) and each machine state (idle; busy: one spinning process per core, as
other work on a shared machine would be), times 10 toy learning steps (batch 8) and one toy edit of 4 faces
(20 DDIM steps), each in a fresh process. Prints one JSON object per measurement: work, threads, state, seconds.
The choice of caso's default thread count (caso_cli.runtime.default_threads) is read from these figures
(docs/performance.md, "Threads").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORK = {
    "learn": (
        "import torch, time\n"
        "from caso_cli.config import LearnConfig\n"
        "from caso_cli.models.classifier import AttributeClassifier, ClassifierMeta, SmallCNN\n"
        "from caso_cli.models.loaders import load_model\n"
        "from caso_cli.pipelines.learn import learn_embedding\n"
        "from caso_cli.runtime import cpu_runtime\n"
        "from caso_cli.toyworld.render import render_faces\n"
        "from caso_cli.toyworld.sample import to_unit\n"
        "sd = load_model('toy', cpu_runtime())\n"
        "torch.manual_seed(0)\n"
        "meta = ClassifierMeta(classes=['no', 'yes'], backbone='small-cnn', input_size=32, mean=[0.5] * 3,"
        " std=[0.5] * 3)\n"
        "clf = AttributeClassifier(SmallCNN(2), meta).eval().requires_grad_(False)\n"
        "x = to_unit(render_faces(16, 0)[0])\n"
        "t = time.perf_counter()\n"
        "learn_embedding(sd, clf, x, LearnConfig(steps=10, batch_size=8, check_samples=0, checkpoint_every=0))\n"
        "print(time.perf_counter() - t)\n"
    ),
    "edit": (
        "import torch, time\n"
        "from caso_cli.config import EditConfig\n"
        "from caso_cli.models.loaders import load_model\n"
        "from caso_cli.pipelines.edit import edit_latents, invert_latents\n"
        "from caso_cli.pipelines.generate import decode_latents, encode_images\n"
        "from caso_cli.pipelines.guidance import cfg_guidance\n"
        "from caso_cli.runtime import cpu_runtime\n"
        "from caso_cli.toyworld.render import render_faces\n"
        "from caso_cli.toyworld.sample import to_unit\n"
        "sd = load_model('toy', cpu_runtime())\n"
        "x = to_unit(render_faces(4, 0)[0])\n"
        "cfg = EditConfig(steps=20)\n"
        "cond = sd.family.encode_prompts(['a face with a mustache'])\n"
        "t = time.perf_counter()\n"
        "with torch.no_grad():\n"
        "    z_t = invert_latents(sd, encode_images(sd, x), cfg)\n"
        "    decode_latents(sd, edit_latents(sd, z_t, cfg_guidance(sd, cond, 5.0), cfg))\n"
        "print(time.perf_counter() - t)\n"
    ),
}
SPIN = "while True:\n    pass\n"


def run(work: str, threads: int, policy: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "CASO_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", WORK[work]], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell (the median is reported)")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    for state in ("idle", "busy"):
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(cores if state == "busy" else 0)]
        try:
            time.sleep(1.0 if spinners else 0.0)
            for work in WORK:
                for threads, policy in [(n, "default") for n in range(1, cores + 1)] + [(cores, "passive")]:
                    times = sorted(run(work, threads, policy) for _ in range(args.repeat))
                    print(json.dumps({"work": work, "threads": threads, "omp_wait_policy": policy, "state": state,
                                      "cores": cores,
                                      "seconds": round(times[len(times) // 2], 3),
                                      "all": [round(t, 3) for t in times]}), flush=True)
        finally:
            for p in spinners:
                p.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
