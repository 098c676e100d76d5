"""The helpers test modules share: tiny seeded models and classifiers, their files, the CLI runner, fixed inputs.

Test modules import shared helpers from here (or take conftest.py's fixtures), never from one another:
tests/test_project.py checks that no module under tests/ imports from a ``test_*`` module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caso_cli.models.build import TINY, SDShape, build_components

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("a", "face", "with", "mustache", "glasses", "smile")


# ---- the command line ----------------------------------------------------------------------------


_CLICK_COMMANDS: dict[Any, Any] = {}  # a typer app as registered -> its Click command (see run_main)


def _registered(app: Any) -> tuple:
    """What a typer app's Click command is built from: its callback, commands and sub-apps (recursively), the
    objects themselves (hashed by identity)."""
    return (app, app.registered_callback, tuple(app.registered_commands),
            tuple((g, _registered(g.typer_instance)) for g in app.registered_groups))


def run_main(args: list[str], capsys: Any) -> tuple[int, str, str]:
    """``caso ARGS`` in this process through :func:`caso_cli.cli.app.main`: (exit code, stdout, stderr).

    Typer builds the app's Click command tree on every call (about 30 ms on 2 cores: it evaluates the type hints of
    every command), which is what a ``caso`` process does once; here the tree is built once for each app as
    registered (a command added later, as by a plug-in, builds it anew) and reused, as a Click command may be (over
    a hundred calls in the fast tier)."""
    import pytest
    import typer.main

    from caso_cli.cli.app import main

    build = typer.main.get_command

    def built_once(typer_instance: Any) -> Any:
        key = _registered(typer_instance)
        if key not in _CLICK_COMMANDS:
            _CLICK_COMMANDS[key] = build(typer_instance)
        return _CLICK_COMMANDS[key]

    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exit_info:
        patch.setattr(typer.main, "get_command", built_once)
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def readme_pipe_examples() -> list[str]:
    """The README's follow-up command lines (the pipe and interpolate examples), as printed."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"Then edit with the embedding the demo saved.*?\n```\n(.*?)\n```", text, flags=re.S)
    assert block, "README lost its pipe example"
    return block.group(1).splitlines()


def fake_hub_cache(hf_home: Path, repo: str, folder: Path) -> None:
    """Lay a diffusers folder out the way huggingface_hub caches a downloaded repo."""
    base = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    sha = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, base / "snapshots" / sha)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(sha)


def offline_model_info(hf_home: Path, model: str) -> subprocess.CompletedProcess:
    """`caso model info --json --model MODEL` offline with HF_HOME=hf_home, in a fresh process (huggingface_hub
    reads HF_HOME at import)."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "caso_cli", "model", "info", "--json", "--device", "cpu", "--model",
                           model], capture_output=True, text=True, env=env, timeout=120)


# ---- tiny models ---------------------------------------------------------------------------------


def tiny_components(seed: int = 0, prediction_type: str = "epsilon") -> dict[str, Any]:
    """vae, unet, text_encoder, tokenizer, scheduler of the TINY shape with a few whole words."""
    shape = SDShape(**{**TINY.__dict__, "words": WORDS, "prediction_type": prediction_type})
    return build_components(shape, seed=seed)


def tiny_xl_components(seed: int = 0) -> dict[str, Any]:
    """vae, unet, text_encoder(_2), tokenizer(_2), scheduler of the TINY_XL (SDXL-shaped) model."""
    from caso_cli.models.build import TINY_XL, SDXLShape, build_sdxl_components

    shape = SDXLShape(**{**TINY_XL.__dict__, "words": WORDS})
    return build_sdxl_components(shape, seed=seed)


# ---- tiny classifiers and inputs -----------------------------------------------------------------


def classifier_meta(classes: Sequence[str] = ("no_x", "x"), attr: str = "", widths: Sequence[int] = (8, 8),
                    **fields: Any) -> Any:
    """The metadata of a tiny small-CNN classifier of 32-px images (``fields``: metrics=... and the like)."""
    from caso_cli.models.classifier import ClassifierMeta

    return ClassifierMeta(classes=list(classes), backbone="small-cnn", input_size=32, mean=[0.5] * 3, std=[0.5] * 3,
                          attr=attr, backbone_config={"widths": list(widths)}, **fields)


def tiny_classifier(classes: Sequence[str] = ("no_x", "x"), seed: int = 0, attr: str = "",
                    widths: Sequence[int] = (8, 8), **fields: Any) -> Any:
    """A seeded small-CNN classifier of 32-px images, frozen, for tests: the same weights for the same seed,
    classes and widths."""
    import torch

    from caso_cli.models.classifier import AttributeClassifier, SmallCNN

    torch.manual_seed(seed)
    meta = classifier_meta(classes, attr, widths, **fields)
    return AttributeClassifier(SmallCNN(len(meta.classes), tuple(widths)), meta).eval().requires_grad_(False)


def tiny_classifier_file(path: Path, classes: Sequence[str] = ("no_x", "x"), seed: int = 0, attr: str = "",
                         widths: Sequence[int] = (8, 8), **fields: Any) -> Path:
    """:func:`tiny_classifier` saved as a classifier file at ``path``."""
    from caso_cli.models.classifier import save_classifier

    return save_classifier(tiny_classifier(classes, seed, attr, widths, **fields), path)


def random_images(n: int = 6, seed: int = 1) -> Any:
    """``n`` seeded random 32-px images in [-1, 1], (n, 3, 32, 32)."""
    import torch

    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def learn_inputs(root: Path) -> tuple[Path, Path]:
    """8 toy faces in ``root/imgs`` and a seeded tiny 2-class classifier ``root/c.safetensors``, for ``embed learn``."""
    from PIL import Image

    from caso_cli.toyworld.render import render_faces

    images, _ = render_faces(8, seed=3)
    folder = root / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i}.png")
    return folder, tiny_classifier_file(root / "c.safetensors")


# ---- fixed inputs of the eval metrics (tests/test_eval_metrics.py, tests/eval_reference.py) ------


def pair(h: int = 24, w: int = 20) -> tuple[Any, Any]:
    """Two fixed uint8 (h, w, 3) images: stripes and a perturbed copy."""
    import numpy as np

    i, j, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    a = ((i * 7 + j * 13 + c * 29) % 256).astype(np.uint8)
    b = ((a.astype(int) + ((i * j) % 17) * 3) % 256).astype(np.uint8)
    return a, b


def feats(n: int, d: int, phase: float) -> Any:
    """Fixed (n, d) features whose covariance has rank 2."""
    import numpy as np

    i, j = np.meshgrid(np.arange(n), np.arange(d), indexing="ij")
    return np.sin(i * 1.3 + j * 0.7 + phase) + 0.1 * j * phase


def full_rank_feats(n: int, d: int, phase: float) -> Any:
    """Fixed (n, d) features of full rank."""
    import numpy as np

    i, j = np.meshgrid(np.arange(n), np.arange(d), indexing="ij")
    return feats(n, d, phase) + 0.5 * np.cos(i * i * 0.37 * (j + 1))
