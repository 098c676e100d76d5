"""Learn an embedding end to end: load data, model and classifier, learn, store in the registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from caso_cli import __version__
from caso_cli.config import LearnConfig
from caso_cli.pipelines.learn import Checkpoint, LearnResult, ProgressFn, learn_checked


@dataclass(frozen=True)
class EmbedJob:
    """Everything ``caso embed learn`` needs besides the hyperparameters."""

    data: Path  # image folder or CSV
    classifier: Path  # classifier .safetensors
    name: str  # registry name
    model: str | None = None  # --model (None: default)
    model_config: str | None = None  # configs for a single-file model
    size: int | None = None  # image side; default the model's resolution
    max_images: int | None = None  # use at most this many images (sorted order)
    device: str = "auto"
    dtype: str = "auto"
    force: bool = False  # replace an existing entry
    resume: bool = False  # continue from the checkpoint of an interrupted run
    grad_checkpointing: bool = False  # recompute UNet/VAE activations in backward (less memory, slower)
    compile: bool = False  # torch.compile the UNet (opt-in; pays off on long GPU runs)


def check_job(job: EmbedJob) -> None:
    """Refuse a bad or taken registry name before anything is loaded."""
    from caso_cli.errors import UsageError
    from caso_cli.registry import list_names, validate_name

    validate_name(job.name)
    if job.name in list_names() and not job.force:
        raise UsageError(f"embedding {job.name!r} exists (use --force to replace it, or pick another --name)")


def run_embed_job(job: EmbedJob, config: LearnConfig, progress: ProgressFn | None = None,
                  status: Any = None) -> tuple[Path, LearnResult, dict[str, Any]]:
    """Learn and save; returns the registry entry's path, the result and the stored metadata."""
    from caso_cli.datasets import digest_files, image_paths
    from caso_cli.imageio import fit_image, load_image, to_tensor
    from caso_cli.models.classifier import file_digest, load_classifier
    from caso_cli.models.loaders import compile_unet, enable_grad_checkpointing, load_model
    from caso_cli.paths import user_dir
    from caso_cli.registry import save_embedding, text_encoder_hash

    say = status or (lambda _msg: None)
    check_job(job)
    paths = image_paths(job.data)
    if job.max_images:
        paths = paths[: job.max_images]
    from caso_cli.runtime import make_runtime, peak_memory, wait_for_everyone

    runtime = make_runtime(job.device, job.dtype)
    if not runtime.is_main:
        say = lambda _msg: None  # noqa: E731 - one process speaks
    clf = load_classifier(job.classifier, runtime.device)
    say(f"loading model {job.model or 'default'}" + (f" in {runtime.world_size} processes"
                                                     if runtime.world_size > 1 else ""))
    sd = load_model(job.model, runtime, config=job.model_config)
    if job.grad_checkpointing:
        enable_grad_checkpointing(sd)
    if job.compile:
        compile_unet(sd)
    size = job.size or sd.resolution
    say(f"encoding {len(paths)} images at {size}px")
    images = to_tensor([fit_image(load_image(p), size, "crop") for p in paths])
    checkpoint = Checkpoint(user_dir() / "checkpoints" / job.name)
    result = learn_checked(sd, clf, images, config, checkpoint=checkpoint, resume=job.resume, progress=progress)
    meta = {
        "classes": clf.classes,
        "attr": clf.meta.attr,
        "model": sd.name,
        "text_encoder_hash": text_encoder_hash(sd.text_encoder),
        "image_size": size,
        "classifier": {"path": str(Path(job.classifier).resolve()), "sha256": file_digest(job.classifier),
                       "backbone": clf.meta.backbone, "val_accuracy": clf.meta.metrics.get("val_accuracy")},
        "hyperparameters": {**asdict(config), "betas": list(config.betas)},
        "data": {"path": str(Path(job.data).resolve()), "n_images": len(paths), "digest": digest_files(paths)},
        "metrics": {**result.summary(), "steps": result.steps, "seconds": round(result.seconds, 1),
                    **peak_memory(runtime.device), "processes": runtime.world_size,
                    **({"generation_check": result.check} if result.check else {})},
        "caso_version": __version__,
    }
    if runtime.is_main:
        entry = save_embedding(job.name, result.vectors, meta, force=job.force)
        import shutil

        shutil.rmtree(checkpoint.folder, ignore_errors=True)
    wait_for_everyone(runtime)
    if not runtime.is_main:
        from caso_cli.registry import registry_dir

        entry = registry_dir() / job.name
    return entry, result, meta
