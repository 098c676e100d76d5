"""Learn an embedding end to end: load data, model and classifier, learn, store in the registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from caso_cli import __version__
from caso_cli.config import T_SCREEN, LearnConfig
from caso_cli.pipelines.checkpoint import Checkpoint
from caso_cli.pipelines.learn import LearnResult, ProgressFn
from caso_cli.pipelines.learn_checks import CHECK_PASS, edit_context, encoding_report
from caso_cli.pipelines.learn_runs import learn_checked


@dataclass(frozen=True)
class EmbedJob:
    """Everything ``caso embed learn`` needs besides the hyperparameters."""

    data: Path  # image folder or CSV
    classifier: Path  # classifier .safetensors
    name: str  # registry name
    model: str | None = None  # --model (None: default)
    model_config: str | None = None  # configs for a single-file model
    allow_pickle: bool = False  # load a legacy .ckpt/.pt single file (--allow-pickle)
    size: int | None = None  # image side; default the model's resolution
    max_images: int | None = None  # use at most this many images (sorted order)
    device: str = "auto"
    dtype: str = "auto"
    force: bool = False  # replace an existing entry
    resume: bool = False  # continue from the checkpoint of an interrupted run
    grad_checkpointing: bool = False  # recompute UNet/VAE activations in backward (less memory, slower)
    compile: bool = False  # torch.compile the UNet (opt-in; pays off on long GPU runs)
    # more (name, classifier) pairs learned together with this one: every training condition names each attribute
    # at a class (the learned one at its target, the others as their classifiers read the image; docs/learning.md)
    together: tuple[tuple[str, Path], ...] = ()

    def attributes(self) -> list[tuple[str, Path]]:
        """Every (name, classifier) learned, in token order (by name)."""
        return sorted([(self.name, self.classifier), *self.together])


def check_job(job: EmbedJob) -> None:
    """Refuse bad, repeated or taken registry names before anything is loaded."""
    from caso_cli.errors import UsageError
    from caso_cli.registry import list_names, validate_name

    names = [n for n, _ in job.attributes()]
    if len(set(names)) != len(names):
        raise UsageError(f"each attribute learned together needs its own name, got {', '.join(names)}")
    for name in names:
        validate_name(name)
        if name in list_names() and not job.force:
            raise UsageError(f"embedding {name!r} exists (use --force to replace it, or pick another --name)")


def auto_t_screen(check_samples: int, together: bool) -> tuple[tuple[int, int], ...]:
    """What ``--t-train auto`` screens (``LearnConfig.t_screen``): the candidates :data:`T_SCREEN`, each scored by
    the generation check; none (t* stays ``LearnConfig.t_train``) without a check, or for attributes learned
    together, whose check is the edit check."""
    return T_SCREEN if check_samples and not together else ()


def learn_contexts(spec: str, classifiers: Sequence[Path], model: str | None = None) -> tuple[str, ...]:
    """The word contexts ``--contexts SPEC`` learns in (``LearnConfig.contexts``; docs/method.md §10); () is the
    paper's whole prompt (``whole``).

    ``auto`` learns in context where that was measured better (docs/results.md): one attribute of a toy model's
    caption grammar on that toy model (``toy``), else the whole prompt. Learning in context takes one attribute (one
    classifier) at a time. ``model`` None is the default model."""
    from caso_cli.contexts import CAPTION_CONTEXTS, OWN_WORDS, caption_contexts, resolve
    from caso_cli.errors import UsageError
    from caso_cli.models.loaders import default_model

    model = model or default_model()
    attribute: str | None = None
    own_words = model in CAPTION_CONTEXTS.load()
    if len(classifiers) == 1 and (spec == OWN_WORDS or (spec == "auto" and own_words)):
        from caso_cli.models.classifier import read_classifier_meta

        attribute = read_classifier_meta(classifiers[0]).attr
    if spec == "auto":
        spec = OWN_WORDS if own_words and caption_contexts(model, attribute) is not None else "whole"
    if spec == "whole":
        return ()
    if len(classifiers) > 1:
        raise UsageError("--contexts learns one attribute at a time; give one --classifier (or --contexts whole)")
    return resolve(spec, attribute, model)


def run_embed_job(job: EmbedJob, config: LearnConfig, progress: ProgressFn | None = None,
                  status: Any = None) -> tuple[list[Path], LearnResult, list[dict[str, Any]]]:
    """Learn and save; returns each registry entry's path (in token order), the result and the stored metadata."""
    from caso_cli.io.datasets import digest_files, image_paths
    from caso_cli.io.files import file_sha256
    from caso_cli.io.images import fit_image, load_image, to_tensor
    from caso_cli.io.paths import user_dir
    from caso_cli.models.classifier import load_classifier
    from caso_cli.models.loaders import compile_net, enable_grad_checkpointing, load_model
    from caso_cli.registry import save_embedding

    say = status or (lambda _msg: None)
    check_job(job)
    paths = image_paths(job.data)
    if job.max_images:
        paths = paths[: job.max_images]
    from caso_cli.runtime import make_runtime, peak_memory, pin_threads, wait_for_everyone

    runtime = make_runtime(job.device, job.dtype)
    threads = pin_threads()  # recorded: on the CPU the thread count changes the learned bits
    if not runtime.is_main:
        say = lambda _msg: None  # noqa: E731 - one process speaks
    pairs = job.attributes()
    clfs = [load_classifier(path, runtime.device) for _, path in pairs]
    say(f"loading model {job.model or 'default'}" + (f" in {runtime.world_size} processes"
                                                     if runtime.world_size > 1 else ""))
    sd = load_model(job.model, runtime, config=job.model_config, allow_pickle=job.allow_pickle)
    if job.grad_checkpointing:
        enable_grad_checkpointing(sd)
    if job.compile:
        compile_net(sd)
    size = job.size or sd.resolution
    say(f"encoding {len(paths)} images at {size}px")
    images = to_tensor([fit_image(load_image(p), size, "crop") for p in paths])
    checkpoint = Checkpoint(user_dir() / "checkpoints" / "+".join(n for n, _ in pairs))
    result = learn_checked(sd, clfs if len(clfs) > 1 else clfs[0], images, config, checkpoint=checkpoint,
                           resume=job.resume, progress=progress)
    # what each vector encodes besides its class, read by the other attributes' classifiers: those learned
    # together, else those of the registry's embeddings for this text encoder
    others = dict(zip([n for n, _ in pairs], clfs, strict=True)) if len(clfs) > 1 else \
        registry_classifiers(sd.family.encoder_hash(), exclude={job.name}, device=runtime.device,
                             attribute=clfs[0].meta.attr)
    metas = []
    for (name, path), clf, vectors in zip(pairs, clfs, result.per_attribute(), strict=True):
        say(f"reading what the {name} vectors encode")
        encodes = encoding_report(sd, vectors, clf.classes, {n: c for n, c in others.items() if n != name}, images,
                                  config.check_samples, config.check_scale, edit_context(config), config.placement) \
            if config.check_samples and others else None
        check = result.check
        if check and len(clfs) > 1:  # this attribute's classes only
            check = {**check, **{key: {c: check[key][c] for c in clf.classes}
                                 for key in ("rates", "kept", "seeds") if key in check},
                     "passed": min(check["rates"][c] for c in clf.classes) >= CHECK_PASS}
        metas.append({
            "classes": clf.classes,
            "attr": clf.meta.attr,
            "model": sd.name,
            **sd.family.record(),
            "image_size": size,
            "classifier": {"path": str(Path(path).resolve()), "sha256": file_sha256(path),
                           "backbone": clf.meta.backbone, "val_accuracy": clf.meta.metrics.get("val_accuracy")},
            **({"learned_with": [n for n, _ in pairs if n != name]} if len(pairs) > 1 else {}),
            "hyperparameters": {**asdict(result.config or config), "betas": list(config.betas)},
            "data": {"path": str(Path(job.data).resolve()), "n_images": len(paths), "digest": digest_files(paths)},
            "metrics": {**result.summary(), "steps": result.steps, "seconds": round(result.seconds, 1),
                        **peak_memory(runtime.device), "processes": runtime.world_size, "cpu_threads": threads,
                        **({("edit_check" if check.get("kind") == "edit" else "generation_check"): check}
                           if check else {}),
                        **({"encodes": encodes} if encodes else {})},
            "caso_version": __version__,
        })
    if runtime.is_main:
        entries = [save_embedding(name, vectors, meta, force=job.force)
                   for (name, _), vectors, meta in zip(pairs, result.per_attribute(), metas, strict=True)]
        import shutil

        shutil.rmtree(checkpoint.folder, ignore_errors=True)
    wait_for_everyone(runtime)
    if not runtime.is_main:
        from caso_cli.registry import registry_dir

        entries = [registry_dir() / name for name, _ in pairs]
    return entries, result, metas


def registry_classifiers(te_hash: str, exclude: set[str], device: Any, attribute: str | None = None) -> dict[str, Any]:
    """name -> classifier of every registry embedding for this text encoder whose classifier is reachable and
    unchanged, one per other attribute (what `--hold all` would hold; none of ``attribute`` itself)."""
    from caso_cli.errors import CasoError
    from caso_cli.pipelines.hold import embedding_classifier, learned_for, one_per_attribute

    out = {}
    found = [e for e in learned_for({te_hash}, exclude)[0] if not attribute or e.meta.attr != attribute]
    for emb in one_per_attribute(found, [])[0]:
        try:
            out[emb.name] = embedding_classifier(emb, device)
        except CasoError:  # changed since: not read
            continue
    return out
