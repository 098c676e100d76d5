"""Attribute classifiers: a small CNN or a transformers image classifier, with differentiable preprocessing.

A classifier file is one ``.safetensors`` holding the weights and, in its header, the JSON
metadata (``schema_version``, classes, backbone, input size, mean/std, validation accuracy).
:class:`AttributeClassifier` takes images in [-1, 1] of any size, resizes and normalises them
with tensor ops (so gradients flow back to the pixels, as learning needs) and returns logits.
Only safetensors are read: loading a classifier never runs code from the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from caso_cli.config import SMALL_CNN
from caso_cli.errors import InputError, UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SCHEMA_VERSION = 1
META_KEY = "caso_classifier"


@dataclass
class ClassifierMeta:
    """What a classifier file says about itself."""

    classes: list[str]  # class names; logit k is classes[k]
    backbone: str  # "small-cnn", "vgg16" or "hf:<hub id or folder>"
    input_size: int  # side of the square input the backbone sees
    mean: list[float]  # per-channel normalisation applied to [0, 1] pixels
    std: list[float]
    attr: str = ""  # the attribute name the classifier was fitted for
    backbone_config: dict[str, Any] = field(default_factory=dict)  # to rebuild the architecture
    metrics: dict[str, Any] = field(default_factory=dict)  # validation accuracy etc.
    schema_version: int = SCHEMA_VERSION


class SmallCNN(nn.Module):
    """Four stride-2 conv blocks, global average pooling, a linear head."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (32, 64, 128, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for w in widths:
            layers += [nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
                       nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU()]
            c_in = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, C): what the head's class weights align with (docs/method.md §3)."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _HFBackbone(nn.Module):
    """A transformers image classifier returning plain logits; features from its pooled output."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x, output_hidden_states=True)
        h = out.hidden_states[-1]
        return h.mean(dim=(2, 3)) if h.dim() == 4 else h[:, 0]


class _VGG16(nn.Module):
    """torchvision's VGG16 (the paper's classifier) with a new K-way last layer."""

    def __init__(self, num_classes: int, pretrained: bool) -> None:
        super().__init__()
        try:
            from torchvision.models import VGG16_Weights, vgg16
        except Exception as exc:  # missing, or built for another torch (fails at import with RuntimeError)
            raise UsageError("the vgg16 backbone needs a torchvision that matches your torch: pip install "
                             f"'caso[vgg]' ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                             ) from exc
        # ImageNet weights come from torchvision's cache ($TORCH_HOME), fetched there on first use.
        self.model = vgg16(weights=VGG16_Weights.IMAGENET1K_V1 if pretrained else None)
        self.model.classifier[6] = nn.Linear(4096, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(self.model.avgpool(self.model.features(x)), 1)
        return self.model.classifier[:-1](h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.classifier[-1](self.features(x))


class AttributeClassifier(nn.Module):
    """Preprocessing (resize + normalise, differentiable) in front of a backbone."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, backbone: nn.Module, meta: ClassifierMeta) -> None:
        super().__init__()
        self.backbone = backbone
        self.meta = meta
        self.register_buffer("mean", torch.tensor(meta.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(meta.std).view(1, 3, 1, 1), persistent=False)

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> the backbone's normalised input."""
        import torch.nn.functional as F

        x = (images.float() + 1) / 2
        s = self.meta.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) for images in [-1, 1]."""
        return self.backbone(self.preprocess(images))

    def read(self, images: torch.Tensor, device: torch.device | str, batch: int = 64) -> torch.Tensor:
        """The class of each image (N, 3, H, W) in [-1, 1], read on ``device`` without gradients, on the CPU.

        Learning reads the training images (the keep term, the classes held when attributes are learned together),
        the checks read samples and edits, and holding reads the input image's classes (docs/editing.md)."""
        with torch.no_grad():
            return torch.cat([self(images[i:i + batch].to(device)).argmax(1).cpu()
                              for i in range(0, images.shape[0], batch)])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, C) for images in [-1, 1]."""
        features = self.backbone.features
        assert callable(features)  # a method of every backbone: SmallCNN, _VGG16 and _HFBackbone
        return features(self.preprocess(images))


def build_backbone(meta: ClassifierMeta, pretrained: bool = False) -> nn.Module:
    """The architecture named by ``meta``; ``pretrained`` loads a transformers backbone's weights."""
    k = len(meta.classes)
    if meta.backbone == SMALL_CNN:
        widths = tuple(meta.backbone_config.get("widths", (32, 64, 128, 128)))
        return SmallCNN(k, widths)
    if meta.backbone == "vgg16":
        return _VGG16(k, pretrained)
    if meta.backbone.startswith("hf:"):
        from transformers import AutoConfig, AutoModelForImageClassification

        source = meta.backbone[3:]
        if pretrained:
            try:
                model = AutoModelForImageClassification.from_pretrained(
                    source, num_labels=k, ignore_mismatched_sizes=True, trust_remote_code=False)
            except (OSError, ValueError) as exc:
                from caso_cli.errors import ModelLoadError

                if "trust_remote_code" in str(exc):
                    raise ModelLoadError(f"could not load image classifier {source!r}: it needs its own Python "
                                         "code (trust_remote_code), which caso does not run") from exc
                raise ModelLoadError(f"could not load image classifier {source!r}: "
                                     f"{str(exc).strip().splitlines()[0]}") from exc
            meta.backbone_config = {"hf_config": model.config.to_dict()}
        else:
            cfg_dict = dict(meta.backbone_config["hf_config"])
            model_type = cfg_dict.pop("model_type")
            config = AutoConfig.for_model(model_type, **cfg_dict)
            model = AutoModelForImageClassification.from_config(config)
        return _HFBackbone(model)
    raise UsageError(f"unknown classifier backbone {meta.backbone!r} (use {SMALL_CNN}, vgg16 or hf:<id or folder>)")


def save_classifier(clf: AttributeClassifier, path: str | Path) -> Path:
    """Write weights + metadata to one safetensors file, atomically."""
    import dataclasses

    from safetensors.torch import save_file

    from caso_cli.io.files import atomic_path

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in clf.backbone.state_dict().items()}
    meta = json.dumps(dataclasses.asdict(clf.meta))
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: meta})
    return out


def read_classifier_meta(path: str | Path) -> ClassifierMeta:
    """The metadata of a classifier file, without loading its weights."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such classifier file")
    if p.suffix.lower() != ".safetensors" and p.read_bytes()[:2] == b"PK":
        raise InputError(f"{p}: looks like a pickle (torch.save) file; caso reads classifiers from safetensors only")
    try:
        with safe_open(str(p), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(META_KEY)
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{p}: not a safetensors classifier file ({str(exc).splitlines()[0]})") from exc
    if raw is None:
        raise InputError(f"{p}: a safetensors file without caso classifier metadata")
    try:
        data = json.loads(raw)
        meta = ClassifierMeta(**data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{p}: corrupt classifier metadata ({exc})") from exc
    if meta.schema_version > SCHEMA_VERSION:
        raise InputError(f"{p}: written by a newer caso (schema {meta.schema_version}); upgrade caso")
    if len(meta.classes) < 2 or len(meta.mean) != 3 or len(meta.std) != 3:
        raise InputError(f"{p}: corrupt classifier metadata (classes/mean/std)")
    return meta


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> AttributeClassifier:
    """Load a classifier file: frozen, eval mode, on ``device``."""
    from safetensors.torch import load_file

    meta = read_classifier_meta(path)
    backbone = build_backbone(meta)
    try:
        state = load_file(str(path))
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the {meta.backbone} architecture "
                         f"({str(exc).splitlines()[0]})") from exc
    clf = AttributeClassifier(backbone, meta).to(device).eval()
    clf.requires_grad_(False)
    return clf
