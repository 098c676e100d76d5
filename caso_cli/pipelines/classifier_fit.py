"""Fit an attribute classifier on labelled images (the frozen judge that CASO learns from)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from caso_cli.config import FitConfig
from caso_cli.io.datasets import LabelledImages, check_classes, stratified_split
from caso_cli.models.classifier import _VGG16, AttributeClassifier, ClassifierMeta, _HFBackbone, build_backbone
from caso_cli.runtime import Runtime

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class FitReport:
    """What fitting measured."""

    val_accuracy: float
    train_accuracy: float
    epochs_run: int
    best_epoch: int
    seconds: float
    n_train: int
    n_val: int
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


ProgressFn = Callable[[dict[str, Any]], None]


def load_pixels(data: LabelledImages, size: int, indices: list[int] | None = None) -> torch.Tensor:
    """Images as a uint8 tensor (N, 3, size, size), centre-cropped to a square."""
    import numpy as np

    from caso_cli.io.images import fit_image, load_image

    idx = range(len(data)) if indices is None else indices
    arrays = [np.asarray(fit_image(load_image(data.paths[i]), size, "crop")) for i in idx]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


@torch.no_grad()
def accuracy(clf: AttributeClassifier, pixels: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of images whose arg-max class is the label."""
    clf.eval()
    device = next(clf.parameters()).device
    correct = 0
    for s in range(0, len(labels), batch_size):
        logits = clf(_to_unit(pixels[s:s + batch_size]).to(device))
        correct += int((logits.argmax(1).cpu() == labels[s:s + batch_size]).sum())
    return correct / max(1, len(labels))


def fit_classifier(data: LabelledImages, config: FitConfig, runtime: Runtime,
                   progress: ProgressFn | None = None) -> tuple[AttributeClassifier, FitReport]:
    """Fit on a train split, early-stop on validation accuracy, return the best epoch's classifier."""
    t0 = time.monotonic()
    check_classes(data, min_per_class=2)
    hf = config.backbone.startswith("hf:")
    imagenet = hf or config.backbone == "vgg16"  # pretrained on ImageNet: its input statistics
    size = config.input_size or (224 if imagenet else 32)
    meta = ClassifierMeta(classes=list(data.classes), backbone=config.backbone, input_size=size,
                          mean=IMAGENET_MEAN if imagenet else [0.5] * 3, std=IMAGENET_STD if imagenet else [0.5] * 3,
                          attr=config.attr)
    torch.manual_seed(config.seed)
    backbone = build_backbone(meta, pretrained=True)
    if hf and config.input_size is None:
        assert isinstance(backbone, _HFBackbone)  # what build_backbone makes for every "hf:" backbone
        size = int(getattr(backbone.model.config, "image_size", 224) or 224)
        meta.input_size = size
    if config.mode not in ("finetune", "frozen"):
        from caso_cli.errors import UsageError

        raise UsageError(f"unknown mode {config.mode!r} (finetune or frozen)")
    clf = AttributeClassifier(backbone, meta).to(runtime.device)
    params = list(clf.parameters())
    if config.mode == "frozen" and imagenet:
        head: nn.Module | None
        if hf:
            assert isinstance(backbone, _HFBackbone)  # what build_backbone makes for every "hf:" backbone
            head = backbone.model.get_output_embeddings() or getattr(backbone.model, "classifier", None)
        else:
            assert isinstance(backbone, _VGG16)  # the other ImageNet backbone
            head = backbone.model.classifier[-1]
        if head is None:
            from caso_cli.errors import UsageError

            raise UsageError(f"{config.backbone}: no classification head found to fit alone (--mode frozen); "
                             "use --mode finetune")
        clf.requires_grad_(False)
        head.requires_grad_(True)
        params = list(head.parameters())
    lr = config.lr or ((1e-3 if config.mode == "frozen" else 1e-4) if imagenet else 1e-3)

    if data.split is not None and any(s == 1 for s in data.split):
        train_idx = [i for i, s in enumerate(data.split) if s == 0]
        val_idx = [i for i, s in enumerate(data.split) if s == 1]
    else:
        train_idx, val_idx = stratified_split(data.labels, config.val_fraction, config.seed)
    pixels = load_pixels(data, size)
    labels = torch.tensor(data.labels)
    x_tr, y_tr, x_va, y_va = pixels[train_idx], labels[train_idx], pixels[val_idx], labels[val_idx]

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    best = (-1.0, 0, {k: v.detach().clone() for k, v in clf.state_dict().items()})
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        clf.train()
        order = torch.randperm(len(y_tr), generator=gen)
        total, seen = 0.0, 0
        for s in range(0, len(order), config.batch_size):
            b = order[s:s + config.batch_size]
            x = _to_unit(x_tr[b])
            if config.augment:
                x = _augment(x, gen)
            loss = torch.nn.functional.cross_entropy(clf(x.to(runtime.device)), y_tr[b].to(runtime.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            seen += len(b)
        val_acc = accuracy(clf, x_va, y_va)
        if val_acc > best[0]:
            best = (val_acc, epoch, {k: v.detach().clone() for k, v in clf.state_dict().items()})
        if progress:
            progress({"epoch": epoch, "epochs": config.epochs, "loss": total / max(1, seen), "val_accuracy": val_acc,
                      "best": best[0]})
        out_of_time = config.max_minutes is not None and time.monotonic() - t0 > 60 * config.max_minutes
        # A small CNN can sit at chance for a few epochs before it finds the feature: patience
        # counts only once validation accuracy is clearly above chance.
        above_chance = best[0] > 1 / len(data.classes) + 0.05
        if (above_chance and epoch - best[1] >= config.patience) or out_of_time or best[0] >= 1.0:
            break
    clf.load_state_dict(best[2])
    clf.eval().requires_grad_(False)
    report = FitReport(val_accuracy=best[0], train_accuracy=accuracy(clf, x_tr, y_tr), epochs_run=epoch,
                       best_epoch=best[1], seconds=round(time.monotonic() - t0, 2), n_train=len(train_idx),
                       n_val=len(val_idx), counts=data.counts())
    meta.metrics = {"val_accuracy": report.val_accuracy, "train_accuracy": report.train_accuracy,
                    "n_train": report.n_train, "n_val": report.n_val}
    return clf, report
