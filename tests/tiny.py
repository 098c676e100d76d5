"""Tiny seeded Stable Diffusion components for tests (random weights, built in well under 2 s)."""

from __future__ import annotations

from typing import Any

from caso_cli.models.build import TINY, SDShape, build_components

WORDS = ("a", "face", "with", "mustache", "glasses", "smile")


def tiny_components(seed: int = 0, prediction_type: str = "epsilon") -> dict[str, Any]:
    """vae, unet, text_encoder, tokenizer, scheduler of the TINY shape with a few whole words."""
    shape = SDShape(**{**TINY.__dict__, "words": WORDS, "prediction_type": prediction_type})
    return build_components(shape, seed=seed)


def tiny_classifier(classes: tuple[str, ...] = ("no_x", "x"), seed: int = 0, attr: str = "") -> Any:
    """A seeded small-CNN classifier of 32-px images, frozen, for tests."""
    import torch

    from caso_cli.models.classifier import AttributeClassifier, ClassifierMeta, SmallCNN

    torch.manual_seed(seed)
    meta = ClassifierMeta(classes=list(classes), backbone="small-cnn", input_size=32, mean=[0.5] * 3, std=[0.5] * 3,
                          attr=attr, backbone_config={"widths": [8, 8]})
    return AttributeClassifier(SmallCNN(len(classes), (8, 8)), meta).eval().requires_grad_(False)


def learn_inputs(root: Any) -> tuple[Any, Any]:
    """8 toy faces in ``root/imgs`` and a seeded tiny 2-class classifier ``root/c.safetensors``, for ``embed learn``."""
    import torch
    from PIL import Image

    from caso_cli.models.classifier import AttributeClassifier, ClassifierMeta, SmallCNN, save_classifier
    from caso_cli.toyworld.render import render_faces

    images, _ = render_faces(8, seed=3)
    folder = root / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i}.png")
    torch.manual_seed(0)
    meta = ClassifierMeta(classes=["no_x", "x"], backbone="small-cnn", input_size=32, mean=[0.5] * 3, std=[0.5] * 3,
                          backbone_config={"widths": [8, 8]})
    clf = save_classifier(AttributeClassifier(SmallCNN(2, (8, 8)), meta), root / "c.safetensors")
    return folder, clf


def tiny_xl_components(seed: int = 0) -> dict[str, Any]:
    """vae, unet, text_encoder(_2), tokenizer(_2), scheduler of the TINY_XL (SDXL-shaped) model."""
    from caso_cli.models.build import TINY_XL, SDXLShape, build_sdxl_components

    shape = SDXLShape(**{**TINY_XL.__dict__, "words": WORDS})
    return build_sdxl_components(shape, seed=seed)
