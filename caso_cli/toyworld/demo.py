"""The offline end-to-end demo on the toy world: data -> classifier -> embedding -> edits, judged by the oracle.

``caso demo`` runs it. It uses caso as a library user would: the public pipelines, the toy model through its
local alias ``toy`` and the toy world's pixel oracle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caso_cli.config import EditConfig, FitConfig, LearnConfig


@dataclass(frozen=True)
class HoldSetting:
    """How the demo edits with --hold in one direction."""

    form: str  # guidance form (caso_cli.pipelines.hold.FORMS)
    scale: float  # |w|
    start: float  # edit start (fraction of the trajectory)


# chosen on validation faces by bench/claims.py, before its test faces were edited (docs/results-2026-12-05.md)
HOLD_ADD = HoldSetting("source", 3.0, 1.0)
HOLD_REMOVE = HoldSetting("delta", 5.0, 1.0)


@dataclass(frozen=True)
class RareSetting:
    """How the demo edits the rarely named attribute: learned in context, edited as the difference from the
    context, and the same edit written as a prompt for comparison.

    No setting of docs/results.md's ladder moves skin tone on the toy model, for caso or a prompt (at most 26% and
    24% of faces): the model barely draws it from text. The row shows that limit with the oracle's numbers; w 2
    at start 0.6 keeps the other attributes on most faces (there caso 2% / 12%, add / removal, 3 learning seeds)."""

    attr: str = "skin"  # a toy attribute captions seldom name: skin (Dark_skin) or eyes (Narrow_eyes)
    scale: float = 2.0  # w of the in-context difference, for caso and for the prompt alike
    start: float = 0.6
    t_train: int = 201


@dataclass(frozen=True)
class DemoConfig:
    """What the demo does (defaults fit in about 3 minutes on 2 CPU cores)."""

    attr: str = "mustache"  # toy attribute: mustache, glasses or smile
    n_classifier: int = 1000  # labelled renders the classifier is fitted on
    n_train: int = 200  # images the embedding is learned from
    n_edit: int = 32  # held-out faces edited at +scale and -scale
    scale: float = 5.0
    # 500 steps and 25-step edits keep the demo near 3 minutes on 2 cores with four attributes (docs/editing.md)
    learn: LearnConfig = field(default_factory=lambda: LearnConfig(checkpoint_every=0, steps=500))
    edit: EditConfig = field(default_factory=lambda: EditConfig(steps=25))
    seed: int = 0
    # learn every toy attribute together (one run) and also edit with the others held (caso edit --hold all), with
    # the setting of each direction chosen on validation faces (docs/results-2026-12-05.md)
    hold: bool = True
    hold_add: HoldSetting = HOLD_ADD
    hold_remove: HoldSetting = HOLD_REMOVE
    # also learn a rarely named attribute in context and edit the same faces towards its other class, beside the
    # prompt that names it (None: skip)
    rare: RareSetting | None = field(default_factory=RareSetting)


@dataclass
class Rates:
    """Oracle rates of one way of editing the demo's faces."""

    add_success: float  # +scale on faces without the attribute: oracle reads it present
    remove_success: float  # -scale on faces with it: oracle reads it absent
    kept: float  # edited faces whose other attributes all read unchanged


@dataclass
class DemoResult:
    """Numbers and files the demo produced."""

    classifier_accuracy: float
    add_success: float  # the embedding alone (caso edit without --hold)
    remove_success: float
    kept: float
    n_add: int
    n_remove: int
    seconds: dict[str, float]
    sheet: Path
    embedding: str
    files: list[Path] = field(default_factory=list)
    inputs: Path | None = None  # the edited faces as <i>.png, for caso eval
    edits: Path | None = None  # their edits as <i>.<attr>.<scale>.png (caso edit's naming)
    held: Rates | None = None  # the same faces edited with every other attribute held (caso edit --hold all)
    rare: dict[str, Any] | None = None  # the rarely named attribute: caso's and the prompt's rates (_rare_edit)
    # what the numbers repeat on: the same seed, thread count, torch build and CPU kernels give the same bits
    machine: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if k == "files" else v)
               for k, v in self.__dict__.items()}
        out["held"] = None if self.held is None else self.held.__dict__
        return out


RARE_COLUMNS = {"skin": "Dark_skin", "eyes": "Narrow_eyes"}


def _rare_edit(sd: Any, data_dir: Path, config: DemoConfig, faces: np.ndarray, before: Any,
               progress: Callable[[dict[str, Any]], None] | None, say: Callable[[str], None]
               ) -> tuple[dict[str, Any], list[np.ndarray], Any]:
    """Fit the rarely named attribute's classifier, learn its embedding in context (the toy caption contexts, as
    ``embed learn`` does by default on the toy model) and edit ``faces`` towards the other class, caso's vector
    against the prompt naming the class in the same context. Returns the rates, [caso's edits, the prompt's] and
    the classifier."""
    from caso_cli.io.datasets import load_labelled
    from caso_cli.pipelines.classifier_fit import fit_classifier
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.generate import decode_latents, encode_images
    from caso_cli.pipelines.guidance import Contrast
    from caso_cli.pipelines.learn import learn_embedding
    from caso_cli.runtime import cpu_runtime
    from caso_cli.toyworld import captions, measure, oracle
    from caso_cli.toyworld.render import render_faces
    from caso_cli.toyworld.sample import to_uint8, to_unit

    rare = config.rare
    assert rare is not None
    clf, report = fit_classifier(load_labelled(data_dir, data_dir / "list_attr_toy.txt", RARE_COLUMNS[rare.attr]),
                                 FitConfig(attr=rare.attr, batch_size=32, seed=config.seed), cpu_runtime())
    say(f"classifier {rare.attr} ({RARE_COLUMNS[rare.attr]}, a word captions seldom use): validation accuracy "
        f"{report.val_accuracy:.3f}")
    grammar = captions.for_model(sd.name) or captions.DEFAULT
    learn = replace(config.learn, contexts=captions.contexts(rare.attr, grammar=grammar), t_train=rare.t_train)
    train, _ = render_faces(config.n_train, config.seed + 1)
    say(f"learning the {rare.attr} embedding in context from {config.n_train} faces ({learn.steps} steps)")
    vectors = learn_embedding(sd, clf, to_unit(train), learn, progress=progress).vectors
    have = getattr(before, rare.attr)
    todo = have >= 0  # eye shape: only faces whose eyes glasses do not hide
    target = 1 - np.clip(have, 0, 1)
    cfg = replace(config.edit, start=rare.start)
    x = to_unit(faces)
    z_t = invert_latents(sd, encode_images(sd, x), cfg)
    ctx = learn.contexts[0]
    out = {"attr": rare.attr, "n": int(todo.sum()), "scale": rare.scale, "start": rare.start,
           "classifier_accuracy": report.val_accuracy}
    edits = []
    with torch.no_grad():
        base = sd.family.encode_in_context([ctx], None)
    for method in ("caso", "prompt"):
        edited = faces.copy()
        for k in (0, 1):
            rows = todo & (target == k)
            if not rows.any():
                continue
            with torch.no_grad():
                cond = sd.family.encode_in_context([ctx], vectors[k]) if method == "caso" else \
                    sd.family.encode_prompts([ctx.replace("{}", grammar.phrase(rare.attr, k))])
            z = edit_latents(sd, z_t[torch.from_numpy(rows)], Contrast([base, cond], 0, [(rare.scale, 1, 0)]),
                             cfg)
            edited[rows] = to_uint8(decode_latents(sd, z))
        after = oracle.read_attributes(edited[todo])
        out[method] = {"success": float(np.mean(getattr(after, rare.attr) == target[todo])),
                       "kept": float(np.mean(measure.others_kept(measure._subset(before, todo), after, rare.attr)))}
        edits.append(edited)
    return out, edits, clf


def machine_facts(seed: int, threads: int) -> dict[str, Any]:
    """The seed, CPU thread count, torch build and the CPU kernels torch picked (AVX2, AVX512...): the demo's
    numbers repeat bit for bit where all four agree, and may differ where the kernels differ (other rounding
    learns other vectors; docs/editing.md)."""
    import torch

    return {"seed": seed, "threads": threads, "torch": torch.__version__,
            "cpu_kernels": torch.backends.cpu.get_cpu_capability()}


def _rates(before: Any, after: Any, attr: str, has: np.ndarray) -> Rates:
    from caso_cli.toyworld import measure

    got = getattr(after, attr)
    return Rates(add_success=float(np.mean(got[~has] == 1)) if (~has).any() else float("nan"),
                 remove_success=float(np.mean(got[has] == 0)) if has.any() else float("nan"),
                 kept=float(measure.others_kept(before, after, attr).mean()))


def run_demo(out_dir: Path, config: DemoConfig, name: str | None = None, force: bool = False,
             status: Callable[[str], None] | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None) -> DemoResult:
    """Render, fit, learn, edit; write a before/after sheet and the embeddings (registry names ``toy-<attr>``).

    With ``config.hold`` every toy attribute gets a classifier and the embeddings are learned together, so that the
    edit can also run with the other attributes held; the sheet then shows both edits.
    """
    from caso_cli.io.datasets import load_labelled
    from caso_cli.io.files import file_sha256
    from caso_cli.io.grid import image_grid
    from caso_cli.io.png import save_png
    from caso_cli.models.classifier import save_classifier
    from caso_cli.models.loaders import load_model
    from caso_cli.pipelines.classifier_fit import fit_classifier
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.generate import class_conditions, decode_latents, encode_images
    from caso_cli.pipelines.guidance import cfg_guidance
    from caso_cli.pipelines.hold import EditTerm, Token, hold_contrast, read_classes, source_classes
    from caso_cli.pipelines.learn import learn_embedding
    from caso_cli.registry import save_embedding
    from caso_cli.runtime import cpu_runtime, pin_threads
    from caso_cli.toyworld import MODEL_NAME, oracle
    from caso_cli.toyworld.render import ATTRIBUTES, BINARY_ATTRIBUTES, render_faces, write_dataset
    from caso_cli.toyworld.sample import to_uint8, to_unit

    say = status or (lambda _m: None)
    if config.attr not in BINARY_ATTRIBUTES:
        from caso_cli.errors import UsageError

        raise UsageError(f"the demo edits a binary toy attribute ({', '.join(BINARY_ATTRIBUTES)}), not {config.attr!r}")
    attrs = sorted(ATTRIBUTES) if config.hold else [config.attr]  # token order: by name
    if not force:  # before any rendering or fitting
        from caso_cli.errors import UsageError
        from caso_cli.registry import list_names

        taken = [n for n in (name if a == config.attr and name else f"toy-{a}" for a in attrs) if n in list_names()]
        if taken:
            raise UsageError(f"embedding{'s' * (len(taken) > 1)} {', '.join(taken)} exist{'s' * (len(taken) == 1)} "
                             "from an earlier demo; run without --no-force to replace them (or `caso embed rm`)")
    if not config.scale > 0:
        from caso_cli.errors import UsageError

        raise UsageError(f"the demo's scale must be positive (+scale adds, -scale removes), got {config.scale:g}")
    threads = pin_threads()  # one count whatever the load: the same numbers on every run (docs/performance.md)
    say(f"working on the CPU at {threads} thread{'s' * (threads != 1)} (CASO_THREADS=N for another count)")
    seconds: dict[str, float] = {}
    t = time.monotonic()
    data_dir = out_dir / "data"
    say(f"rendering {config.n_classifier} labelled toy faces into {data_dir}")
    write_dataset(data_dir, config.n_classifier, config.seed, overwrite=True)
    clfs, clf_files, accuracy = {}, {}, {}
    for attr in attrs:
        clfs[attr], report = fit_classifier(load_labelled(data_dir, data_dir / "list_attr_toy.txt", attr.capitalize()),
                                            FitConfig(attr=attr, batch_size=32, seed=config.seed), cpu_runtime())
        clf_files[attr] = save_classifier(clfs[attr], out_dir / f"{attr}.classifier.safetensors")
        accuracy[attr] = report.val_accuracy
        say(f"classifier {attr}: validation accuracy {report.val_accuracy:.3f}")
    seconds["classifier"] = time.monotonic() - t

    t = time.monotonic()
    sd = load_model(MODEL_NAME, cpu_runtime())
    train, _ = render_faces(config.n_train, config.seed + 1)
    together = f" together with {', '.join(a for a in attrs if a != config.attr)}" if config.hold else ""
    say(f"learning the {config.attr} embedding{together} from {config.n_train} faces "
        f"({config.learn.total_steps(config.n_train)} steps)")
    result = learn_embedding(sd, [clfs[a] for a in attrs], to_unit(train), config.learn, progress=progress)
    vectors = dict(zip(attrs, result.per_attribute(), strict=True))
    names = {a: (name if a == config.attr and name else f"toy-{a}") for a in attrs}
    for attr in attrs:
        save_embedding(names[attr], vectors[attr], {
            "classes": clfs[attr].classes, "attr": attr, "model": MODEL_NAME,
            **sd.family.record(),
            "classifier": {"path": str(clf_files[attr].resolve()), "sha256": file_sha256(clf_files[attr]),
                           "backbone": clfs[attr].meta.backbone, "val_accuracy": accuracy[attr]},
            **({"learned_with": [names[a] for a in attrs if a != attr]} if config.hold else {}),
            "hyperparameters": {**config.learn.__dict__, "betas": list(config.learn.betas)},
            "data": {"source": "caso demo", "n_images": config.n_train, "seed": config.seed + 1},
            "metrics": {**result.summary(), "steps": result.steps}}, force=force)
    seconds["learn"] = time.monotonic() - t

    t = time.monotonic()
    faces, _ = render_faces(config.n_edit, config.seed + 2)
    x = to_unit(faces)
    before = oracle.read_attributes(faces)
    has = getattr(before, config.attr) == 1
    k = clfs[config.attr].classes.index(config.attr)
    signed = torch.where(torch.from_numpy(has), -config.scale, config.scale).float()
    z_t = invert_latents(sd, encode_images(sd, x), config.edit)
    cond = class_conditions(sd, vectors[config.attr])[k:k + 1]
    edited = to_uint8(decode_latents(sd, edit_latents(sd, z_t, cfg_guidance(sd, cond, signed), config.edit)))
    plain = _rates(before, oracle.read_attributes(edited), config.attr, has)
    rows = [faces, edited]
    held_rates = None
    if config.hold:
        held = [Token(names[a], vectors[a], clfs[a]) for a in attrs if a != config.attr]
        edited_h = edited.copy()
        for todo, setting, sign in ((~has, config.hold_add, 1.0), (has, config.hold_remove, -1.0)):
            if not todo.any():
                continue
            mask = torch.from_numpy(todo)
            cfg_h = replace(config.edit, start=setting.start)
            z_h = invert_latents(sd, encode_images(sd, x[mask]), cfg_h)
            term = EditTerm(Token(names[config.attr], vectors[config.attr]), k, sign * setting.scale)
            contrast = hold_contrast(sd, [term], held, read_classes(held, x[mask]), source_classes([term], x[mask]),
                                     setting.form)
            edited_h[todo] = to_uint8(decode_latents(sd, edit_latents(sd, z_h, contrast, cfg_h)))
        held_rates = _rates(before, oracle.read_attributes(edited_h), config.attr, has)
        rows.append(edited_h)
    seconds["edit"] = time.monotonic() - t
    worded = rows[-1]  # the edits written for caso eval: held where the demo holds
    rare_rates = None
    if config.rare is not None:
        t = time.monotonic()
        rare_rates, rare_rows, rare_clf = _rare_edit(sd, data_dir, config, faces, before, progress, say)
        rows += rare_rows
        clf_files[config.rare.attr] = save_classifier(rare_clf, out_dir / f"{config.rare.attr}.classifier.safetensors")
        seconds["rare"] = time.monotonic() - t

    from PIL import Image

    from caso_cli.attrs import format_scale

    for stale in (out_dir / "edits").glob(f"[0-9][0-9][0-9].{config.attr}.*.png"):  # an earlier run's scale
        stale.unlink()
    def held_scale(h: bool) -> str:
        return format_scale(-config.hold_remove.scale if h else config.hold_add.scale)

    for i, (face, out, h) in enumerate(zip(faces, worded, has, strict=True)):
        save_png(Image.fromarray(face), out_dir / "inputs" / f"{i:03d}.png", overwrite=True)
        scale = held_scale(h) if config.hold else format_scale(-config.scale if h else config.scale)
        # what caso eval groups the edits by (caso:* provenance): +scale and -scale are two edits
        save_png(Image.fromarray(out), out_dir / "edits" / f"{i:03d}.{config.attr}.{scale}.png",
                 {"caso:model": MODEL_NAME, "caso:input": str(out_dir / "inputs" / f"{i:03d}.png"),
                  "caso:embeddings": names[config.attr], "caso:classes": clfs[config.attr].classes[k],
                  "caso:scales": scale,
                  **({"caso:hold_form": (config.hold_remove if h else config.hold_add).form} if config.hold else {})},
                 overwrite=True)
    pics = [Image.fromarray(img[i]) for i in range(len(faces)) for img in rows]
    rare = [] if config.rare is None else [f"{config.rare.attr} caso", f"{config.rare.attr} prompt"]
    captions = [c for h in has for c in (["input", f"{'-' if h else '+'}{config.scale:g}"]
                                         + ([f"hold {held_scale(h)}"] if config.hold else []) + rare)]
    grid = image_grid(pics, captions, ncol=len(rows) * (4 if len(rows) <= 3 else 2))
    sheet = save_png(grid, out_dir / f"{config.attr}.before_after.png",
                     {"caso:embeddings": names[config.attr], "caso:scales": f"+-{config.scale:g}"}, overwrite=True)
    return DemoResult(
        classifier_accuracy=accuracy[config.attr], add_success=plain.add_success,
        remove_success=plain.remove_success, kept=plain.kept, n_add=int((~has).sum()), n_remove=int(has.sum()),
        seconds={k_: round(v, 1) for k_, v in seconds.items()}, sheet=sheet, embedding=names[config.attr],
        files=[sheet, *clf_files.values()], inputs=out_dir / "inputs", edits=out_dir / "edits", held=held_rates,
        rare=rare_rates, machine=machine_facts(config.seed, threads))
