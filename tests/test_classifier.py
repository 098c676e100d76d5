"""Classifier files: save/load, differentiable preprocessing, transformers backbones, safety."""

from __future__ import annotations

import pytest
import torch

from caso_cli.config import FitConfig
from caso_cli.errors import InputError
from caso_cli.io.datasets import LabelledImages
from caso_cli.models.classifier import (
    AttributeClassifier,
    ClassifierMeta,
    load_classifier,
    read_classifier_meta,
    save_classifier,
)
from caso_cli.pipelines.classifier_fit import fit_classifier
from caso_cli.runtime import cpu_runtime
from tests.tiny import tiny_classifier


def _small(k: int = 3) -> AttributeClassifier:
    return tiny_classifier([f"c{i}" for i in range(k)], attr="demo", widths=(8, 16))


def test_save_load_same_logits_and_frozen(tmp_path) -> None:
    clf = _small()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    path = save_classifier(clf, tmp_path / "c.safetensors")
    back = load_classifier(path)
    assert torch.equal(back(x), clf(x).detach())
    assert not back.training and not any(p.requires_grad for p in back.parameters())
    meta = read_classifier_meta(path)
    assert meta.classes == ["c0", "c1", "c2"] and meta.attr == "demo" and meta.input_size == 32


def test_preprocessing_is_differentiable_and_resizes() -> None:
    clf = _small().requires_grad_(False)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    clf(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert clf.preprocess(x).shape == (2, 3, 32, 32)
    assert clf.features(x).shape == (2, 16)


def test_wrong_shape_weights_and_pickles_are_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    clf = _small()
    path = save_classifier(clf, tmp_path / "c.safetensors")
    meta = read_classifier_meta(path)
    bad = tmp_path / "bad.safetensors"
    import dataclasses
    import json

    save_file({"head.weight": torch.zeros(2, 2)}, str(bad), metadata={"caso_classifier": json.dumps(
        dataclasses.asdict(meta))})
    with pytest.raises(InputError, match="weights do not fit"):
        load_classifier(bad)
    pickle = tmp_path / "c.pt"
    torch.save(clf.state_dict(), pickle)
    with pytest.raises(InputError, match="pickle"):
        load_classifier(pickle)


@pytest.mark.slow  # over a second on 2 cores
def test_transformers_backbone_fit_save_load(tmp_path) -> None:
    """A local transformers image classifier (tiny ResNet, random weights) as the backbone, new 2-class head."""
    from PIL import Image
    from transformers import ResNetConfig, ResNetForImageClassification

    folder = tmp_path / "tiny-resnet"
    ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5,
                                              image_size=32)).save_pretrained(folder)
    paths, labels = [], []
    for i in range(16):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (32, 32), (255, 255, 255) if i % 2 else (0, 0, 0)).save(p)
        paths.append(p)
        labels.append(i % 2)
    data = LabelledImages(tuple(paths), tuple(labels), ("dark", "light"))
    cfg = FitConfig(attr="light", backbone=f"hf:{folder}", mode="frozen", input_size=32, epochs=3, batch_size=8,
                    lr=1e-2)
    clf, report = fit_classifier(data, cfg, cpu_runtime())
    assert clf.classes == ["dark", "light"] and report.n_train + report.n_val == 16
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    path = save_classifier(clf, tmp_path / "hf.safetensors")
    back = load_classifier(path)
    assert torch.allclose(back(x), clf(x), atol=1e-6)
    assert back(x).shape == (2, 2) and back.features(x).shape[0] == 2


def test_vgg16_backbone_needs_torchvision_or_builds() -> None:
    from caso_cli.errors import UsageError
    from caso_cli.models.classifier import build_backbone

    meta = ClassifierMeta(classes=["a", "b"], backbone="vgg16", input_size=64, mean=[0.5] * 3, std=[0.5] * 3)
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or a build that does not match torch (as on our CPU machines)
        with pytest.raises(UsageError, match="caso\\[vgg\\]"):
            build_backbone(meta)
        return
    net = build_backbone(meta)
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
    assert net.features(torch.zeros(1, 3, 64, 64)).shape == (1, 4096)


def test_hf_backbone_with_custom_code_is_refused_without_running_it(tmp_path) -> None:
    import json

    from caso_cli.errors import ModelLoadError
    from caso_cli.models.classifier import build_backbone

    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evilnet", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                     "AutoModelForImageClassification": "modeling_evil.EvilModel"}}))
    marker = tmp_path / "ran"
    code = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    (folder / "configuration_evil.py").write_text(code)
    (folder / "modeling_evil.py").write_text(code)
    meta = ClassifierMeta(classes=["a", "b"], backbone=f"hf:{folder}", input_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(ModelLoadError) as err:
        build_backbone(meta, pretrained=True)
    assert str(err.value) == (f"could not load image classifier {str(folder)!r}: it needs its own Python code "
                              "(trust_remote_code), which caso does not run")
    assert not marker.exists()
