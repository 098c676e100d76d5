"""Reproducible learning: the same data, seed and settings give the same vectors bit for bit.

On the CPU the result also depends on torch's thread count (backward passes split their sums by thread), so these
tests compare runs at one thread count; :func:`caso_cli.runtime.pin_threads` fixes that count for a run.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from caso_cli.config import FitConfig, LearnConfig
from caso_cli.pipelines.learn import learn_embedding
from caso_cli.runtime import THREADS_ENV, cpu_runtime
from tests.tiny import random_images, tiny_classifier

# Every random draw learning can make: random initial vectors, shuffled targets, noise, t* from a range, shifted and
# flipped views, plus the keep and reconstruction terms.
CFG = LearnConfig(steps=6, batch_size=3, checkpoint_every=0, seed=11, t_train_max=400, augment=2, lambda_keep=1.0,
                  lambda_rec=0.5, warmup_steps=2)
REPO = Path(__file__).resolve().parents[1]


def _stir_global_rngs() -> None:
    """Reseed and draw from every global RNG, so that a run that read one would differ."""
    torch.manual_seed(12345)
    torch.rand(100)
    np.random.seed(7)
    np.random.rand(3)
    random.seed(9)
    random.random()


@pytest.mark.slow
def test_same_data_seed_and_settings_give_bit_identical_vectors(tiny_sd) -> None:
    clf, images = tiny_classifier(["no_x", "x"], 0), random_images()
    state = torch.get_rng_state()
    a = learn_embedding(tiny_sd, clf, images, CFG)
    assert torch.equal(torch.get_rng_state(), state), "learning drew from torch's global RNG"
    _stir_global_rngs()
    learn_embedding(tiny_sd, clf, images[:4], LearnConfig(steps=2, checkpoint_every=0, seed=3))  # other work between
    b = learn_embedding(tiny_sd, clf, images, CFG)
    assert torch.equal(a.vectors, b.vectors)
    assert a.history == b.history


@pytest.mark.slow
def test_another_seed_gives_other_vectors(tiny_sd) -> None:
    clf, images = tiny_classifier(["no_x", "x"], 0), random_images()
    a = learn_embedding(tiny_sd, clf, images, CFG).vectors
    b = learn_embedding(tiny_sd, clf, images, LearnConfig(**{**CFG.__dict__, "seed": CFG.seed + 1})).vectors
    assert not torch.equal(a, b)
    assert (a - b).abs().max() > 1e-2  # random starting vectors at the table's scale, not rounding


@pytest.mark.slow
def test_learning_several_attributes_together_is_bit_identical(tiny_sd) -> None:
    clfs, images = [tiny_classifier(["no_a", "a"], 0), tiny_classifier(["x", "y", "z"], 1)], random_images()
    cfg = LearnConfig(steps=4, batch_size=3, checkpoint_every=0, seed=2, augment=1)
    a = learn_embedding(tiny_sd, clfs, images, cfg)
    _stir_global_rngs()
    b = learn_embedding(tiny_sd, clfs, images, cfg)
    assert torch.equal(a.vectors, b.vectors) and a.history == b.history


def test_classifier_fit_is_bit_identical(tmp_path) -> None:
    """The classifier is learning's other input: a fit that moved by one bit would move the vectors learned from it
    far more (measured on the toy world: ~1e-3 in the weights became ~0.1 in the vectors after 60 steps)."""
    from caso_cli.io.datasets import load_labelled
    from caso_cli.pipelines.classifier_fit import fit_classifier
    from caso_cli.toyworld.render import write_dataset

    write_dataset(tmp_path / "d", 24, seed=5)
    data = load_labelled(tmp_path / "d", tmp_path / "d" / "list_attr_toy.txt", "Mustache")
    cfg = FitConfig(attr="mustache", epochs=2, batch_size=8, patience=1)
    fits = []
    for _ in range(2):
        _stir_global_rngs()
        clf, report = fit_classifier(data, cfg, cpu_runtime())
        fits.append((clf.state_dict(), {k: v for k, v in report.as_dict().items() if k != "seconds"}))
    (sa, ra), (sb, rb) = fits
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ra == rb


CHILD = """
import json, sys, torch
from caso_cli.config import LearnConfig
from caso_cli.models.loaders import load_model
from caso_cli.pipelines.learn import learn_embedding
from caso_cli.runtime import cpu_runtime, pin_threads
from tests.test_reproducible import CFG
from tests.tiny import random_images, tiny_classifier
threads = pin_threads()
sd = load_model(sys.argv[1], cpu_runtime())
v = learn_embedding(sd, tiny_classifier(["no_x", "x"], 0), random_images(), CFG).vectors
print(json.dumps({"threads": threads, "vectors": v.double().tolist()}))
"""


@pytest.mark.slow  # a fresh python that imports torch and diffusers: ~10 s
def test_another_process_with_the_pinned_thread_count_gives_the_same_vectors(tiny_sd, tiny_model_dir,
                                                                              monkeypatch) -> None:
    """A fresh process, told another OMP_NUM_THREADS but pinned (CASO_THREADS) to this one's count, learns the
    same vectors: the environment no longer decides the result."""
    here = torch.get_num_threads()
    a = learn_embedding(tiny_sd, tiny_classifier(["no_x", "x"], 0), random_images(), CFG).vectors
    monkeypatch.setenv("OMP_NUM_THREADS", str(here + 1))
    monkeypatch.setenv(THREADS_ENV, str(here))
    out = subprocess.run([sys.executable, "-c", CHILD, str(tiny_model_dir)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["threads"] == here
    assert torch.equal(torch.tensor(child["vectors"], dtype=torch.float64).float(), a)
