"""Fixed random weights and inputs shared by tests/test_backbones.py and tests/backbone_reference.py.

Every tensor is drawn by numpy from a seed derived from its state-dict key, so both sides build the
same weights whatever their torch version or module order.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def random_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Weights that keep activations of a deep conv net in range: He-scaled convs, batch norms near identity."""
    out = {}
    for key, shape in shapes.items():
        rng = _rng(key)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
            continue
        if key.endswith("running_var") or (key.endswith("bn.weight")):
            a = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(("running_mean", "bias")):
            a = rng.normal(0.0, 0.1, shape)
        elif key.startswith("lin"):  # LPIPS heads are non-negative
            a = rng.uniform(0.0, 0.2, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        out[key] = torch.from_numpy(a.astype(np.float32))
    return out


def images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """(n, 3, h, w) uint8 images: smooth gradients plus noise, not pure noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * yy + k) * np.cos(5 * xx - k) for k in range(3)])
    x = 127.5 + 90 * base[None] + rng.normal(0, 20, (n, 3, h, w))
    return np.clip(x, 0, 255).astype(np.uint8)


def write_weight_files(d: Path) -> Path:
    """The three weight files as the reference packages store them in ``d``: torchvision's VGG16 state dict
    (with its classifier, which caso ignores), lpips' heads (lin<i>.model.1.weight) and pytorch-fid's
    InceptionV3, plus one file that is not a weight file (skipped in a folder)."""
    from caso_cli.eval.backbones import LPIPS, FIDInception

    with torch.device("meta"):  # the networks for their shapes only: no initialisation (about 0.2 s)
        net, inception_net = LPIPS(), FIDInception()
    vgg = random_state_dict({f"features.{k}": tuple(v.shape) for k, v in net.features.state_dict().items()})
    torch.save(vgg | {"classifier.0.weight": torch.zeros(2, 2)}, d / "vgg16-397923af.pth")
    heads = {f"lin{i}.model.1.weight": tuple(h.weight.shape) for i, h in enumerate(net.heads)}
    torch.save(random_state_dict(heads), d / "vgg.pth")
    inception = {k: tuple(v.shape) for k, v in inception_net.state_dict().items()}
    torch.save(random_state_dict(inception), d / "pt_inception-2015-12-05-6726825d.pth")
    (d / "notes.bin").write_bytes(b"not a weight file")
    return d
