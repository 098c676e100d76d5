"""The offline end-to-end demo on the toy world: data -> classifier -> embedding -> edits, judged by the oracle."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caso_cli.config import EditConfig, FitConfig, LearnConfig


@dataclass(frozen=True)
class DemoConfig:
    """What the demo does (defaults fit in about 3 minutes on 2 CPU cores)."""

    attr: str = "mustache"  # toy attribute: mustache, glasses or smile
    n_classifier: int = 1000  # labelled renders the classifier is fitted on
    n_train: int = 200  # images the embedding is learned from
    n_edit: int = 32  # held-out faces edited at +scale and -scale
    scale: float = 5.0
    learn: LearnConfig = field(default_factory=lambda: LearnConfig(checkpoint_every=0))
    edit: EditConfig = field(default_factory=EditConfig)
    seed: int = 0


@dataclass
class DemoResult:
    """Numbers and files the demo produced."""

    classifier_accuracy: float
    add_success: float  # +scale on faces without the attribute: oracle reads it present
    remove_success: float  # -scale on faces with it: oracle reads it absent
    kept: float  # edited faces whose other attributes all read unchanged
    n_add: int
    n_remove: int
    seconds: dict[str, float]
    sheet: Path
    embedding: str
    files: list[Path] = field(default_factory=list)
    inputs: Path | None = None  # the edited faces as <i>.png, for caso eval
    edits: Path | None = None  # their edits as <i>.<attr>.<scale>.png (caso edit's naming)

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if k == "files" else v)
                for k, v in self.__dict__.items()}


def run_demo(out_dir: Path, config: DemoConfig, name: str | None = None, force: bool = False,
             status: Callable[[str], None] | None = None) -> DemoResult:
    """Render, fit, learn, edit; write a before/after sheet and the embedding (registry name ``toy-<attr>``)."""
    from caso_cli.datasets import load_labelled
    from caso_cli.grid import image_grid
    from caso_cli.imageio import save_png
    from caso_cli.models.classifier import save_classifier
    from caso_cli.models.loaders import load_model
    from caso_cli.pipelines.classifier_fit import fit_classifier
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.generate import decode_latents, encode_images
    from caso_cli.pipelines.learn import learn_embedding
    from caso_cli.registry import save_embedding, text_encoder_hash
    from caso_cli.runtime import cpu_runtime
    from caso_cli.toyworld import measure, oracle
    from caso_cli.toyworld.render import BINARY_ATTRIBUTES, render_faces, write_dataset

    say = status or (lambda _m: None)
    if config.attr not in BINARY_ATTRIBUTES:
        from caso_cli.errors import UsageError

        raise UsageError(f"the demo edits a binary toy attribute ({', '.join(BINARY_ATTRIBUTES)}), not {config.attr!r}")
    seconds: dict[str, float] = {}
    t = time.monotonic()
    data_dir = out_dir / "data"
    say(f"rendering {config.n_classifier} labelled toy faces into {data_dir}")
    write_dataset(data_dir, config.n_classifier, config.seed, overwrite=True)
    column = config.attr.capitalize()
    clf, report = fit_classifier(load_labelled(data_dir, data_dir / "list_attr_toy.txt", column),
                                 FitConfig(attr=config.attr, batch_size=32, seed=config.seed), cpu_runtime())
    save_classifier(clf, out_dir / f"{config.attr}.classifier.safetensors")
    seconds["classifier"] = time.monotonic() - t
    say(f"classifier: validation accuracy {report.val_accuracy:.3f} in {seconds['classifier']:.0f} s")

    t = time.monotonic()
    sd = load_model("toy", cpu_runtime())
    train, _ = render_faces(config.n_train, config.seed + 1)
    say(f"learning the {config.attr} embedding from {config.n_train} faces ({config.learn.total_steps(config.n_train)}"
        " steps)")
    result = learn_embedding(sd, clf, measure.to_unit(train), config.learn)
    name = name or f"toy-{config.attr}"
    save_embedding(name, result.vectors, {
        "classes": clf.classes, "attr": config.attr, "model": "toy",
        "text_encoder_hash": text_encoder_hash(sd.text_encoder),
        "hyperparameters": {**config.learn.__dict__, "betas": list(config.learn.betas)},
        "data": {"source": "caso demo", "n_images": config.n_train, "seed": config.seed + 1},
        "metrics": {**result.summary(), "steps": result.steps}}, force=force)
    seconds["learn"] = time.monotonic() - t

    t = time.monotonic()
    faces, _ = render_faces(config.n_edit, config.seed + 2)
    before = oracle.read_attributes(faces)
    has = getattr(before, config.attr) == 1
    k = clf.classes.index(config.attr)
    with torch.no_grad():
        from caso_cli.conditioning import encode_vectors

        cond = encode_vectors(sd.text_encoder, sd.tokenizer, result.vectors[k:k + 1])
    z_t = invert_latents(sd, encode_images(sd, measure.to_unit(faces)), config.edit)
    scales = torch.where(torch.from_numpy(has), -config.scale, config.scale).float()
    edited = measure.to_uint8(decode_latents(sd, edit_latents(sd, z_t, cond, scales, config.edit)))
    after = oracle.read_attributes(edited)
    got = getattr(after, config.attr)
    kept = measure.others_kept(before, after, config.attr)
    seconds["edit"] = time.monotonic() - t

    from PIL import Image

    from caso_cli.attrs import format_scale

    for stale in (out_dir / "edits").glob(f"[0-9][0-9][0-9].{config.attr}.*.png"):  # an earlier run's scale
        stale.unlink()
    for i, (face, out, h) in enumerate(zip(faces, edited, has, strict=True)):
        save_png(Image.fromarray(face), out_dir / "inputs" / f"{i:03d}.png", overwrite=True)
        save_png(Image.fromarray(out), out_dir / "edits" / f"{i:03d}.{config.attr}."
                 f"{format_scale(-config.scale if h else config.scale)}.png", {"caso:embeddings": name},
                 overwrite=True)
    pics = [Image.fromarray(x) for pair in zip(faces, edited, strict=True) for x in pair]
    captions = [c for h in has for c in ("input", f"{'-' if h else '+'}{config.scale:g}")]
    sheet = save_png(image_grid(pics, captions, ncol=8), out_dir / f"{config.attr}.before_after.png",
                     {"caso:embeddings": name, "caso:scales": f"+-{config.scale:g}"}, overwrite=True)
    return DemoResult(
        classifier_accuracy=report.val_accuracy,
        add_success=float(np.mean(got[~has] == 1)) if (~has).any() else float("nan"),
        remove_success=float(np.mean(got[has] == 0)) if has.any() else float("nan"),
        kept=float(kept.mean()), n_add=int((~has).sum()), n_remove=int(has.sum()),
        seconds={k_: round(v, 1) for k_, v in seconds.items()}, sheet=sheet, embedding=name,
        files=[sheet, out_dir / f"{config.attr}.classifier.safetensors"],
        inputs=out_dir / "inputs", edits=out_dir / "edits")
