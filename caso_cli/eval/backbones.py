"""The networks behind LPIPS, FID, KID and IS, in plain torch, loaded from weight files the user already has.

torchvision is not needed (on a CPU-only torch it often cannot even be imported), so the two
networks are written out here with the state-dict layout of their reference implementations,
and each file is recognised by its keys, not its name:

- **VGG16** (torchvision's ``vgg16-397923af.pth``, keys ``features.N.*``) and the **LPIPS v0.1
  linear heads** (the ``lpips`` package's ``weights/v0.1/vgg.pth``, keys ``linN.model.1.weight``)
  give LPIPS as ``lpips.LPIPS(net="vgg")`` computes it (Zhang et al. 2018).
- **FID's InceptionV3** (``pt_inception-2015-12-05-6726825d.pth`` of pytorch-fid, also
  torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``): the 2048-d pool features as
  ``pytorch_fid.inception.InceptionV3([3])`` computes them (bilinear resize to 299, inputs to
  [-1, 1]) for FID and KID, and the 1008-way logits without bias (torch-fidelity's
  ``logits_unbiased``) for the Inception Score. torchvision's ImageNet InceptionV3 (1000 classes)
  is a different network and is refused.

tests/test_backbones.py checks both against the reference packages on fixed inputs and weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from caso_cli.errors import InputError

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")

# ---- VGG16 and LPIPS ---------------------------------------------------------------------------

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
LPIPS_TAPS = (4, 9, 16, 23, 30)  # features[:4] ends at relu1_2, [4:9] at relu2_2, ... [23:30] at relu5_3
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # lpips.pretrained_networks.ScalingLayer
LPIPS_SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features``: the same modules at the same indices."""
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(v)
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """LPIPS v0.1 with VGG16 (``lpips.LPIPS(net="vgg", version="0.1")``): images in [-1, 1], one distance each."""

    shift: torch.Tensor  # buffers, registered in __init__
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        x = (x - self.shift) / self.scale
        for end in LPIPS_TAPS:
            for layer in list(self.features)[start:end]:
                x = layer(x)
            out.append(x)
            start = end
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(a.shape[0], device=a.device)
        for fa, fb, head in zip(self._taps(a), self._taps(b), self.heads, strict=True):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total


# ---- FID's InceptionV3 ---------------------------------------------------------------------------


class _Conv(nn.Module):
    """Conv (no bias), batch norm (eps 1e-3), ReLU: torchvision's BasicConv2d."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    """FID's pooling branch: 3x3 average that ignores the padding (TF's behaviour)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _A(nn.Module):
    def __init__(self, cin: int, pool: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _Conv(cin, 48, 1), _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _Conv(64, 96, 3, padding=1), _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class _B(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = _Conv(64, 96, 3, padding=1), _Conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class _C(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1 = _Conv(cin, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _Conv(cin, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _D(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Conv(cin, 192, 1), _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x
        for i in range(1, 5):
            d = getattr(self, f"branch7x7x3_{i}")(d)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), d, F.max_pool2d(x, 3, stride=2)], 1)


class _E(nn.Module):
    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool  # FID's last block pools with max, the one before with an average
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1 = _Conv(cin, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _Conv(cin, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """FID's InceptionV3 (the TF 2015-12-05 graph): images in [-1, 1] -> (2048 pool features, 1008 logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _A(192, 32), _A(256, 64), _A(288, 64)
        self.Mixed_6a = _B(288)
        self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e = _C(768, 128), _C(768, 160), _C(768, 160), \
            _C(768, 192)
        self.Mixed_7a = _D(768)
        self.Mixed_7b, self.Mixed_7c = _E(1280, max_pool=False), _E(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool = x.mean(dim=(2, 3))
        return pool, pool @ self.fc.weight.T


# ---- weight files ------------------------------------------------------------------------------


@dataclass
class Backbones:
    """The networks found among the user's weight files (None where none was found), with where each came from."""

    lpips: LPIPS | None = None
    inception: FIDInception | None = None
    sources: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # metric family -> why it is unavailable


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        raise InputError(f"--weights {path}: not a readable weight file ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model"):  # checkpoints that wrap the state dict
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise InputError(f"--weights {path}: holds no state dict")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _kind(sd: dict[str, torch.Tensor]) -> str | None:
    if "lin0.model.1.weight" in sd and "lin4.model.1.weight" in sd:
        return "lpips_heads"
    if "features.28.weight" in sd and tuple(sd["features.0.weight"].shape) == (64, 3, 3, 3):
        return "vgg16"
    if "Mixed_7c.branch_pool.conv.weight" in sd and "fc.weight" in sd:
        return "inception"
    return None


def is_hub_id(spec: str) -> bool:
    """``owner/name``, as opposed to a relative or absolute path."""
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and all(spec.split("/"))


def _state_dicts(spec: str) -> Iterable[tuple[Path, dict[str, torch.Tensor]]]:
    """The state dicts of a file (which must be readable) or of the weight files under a folder (unreadable
    ones are skipped); a hub id is looked up in the local cache."""
    path = Path(spec).expanduser()
    if not path.exists() and is_hub_id(spec):
        path = _cached_hub_folder(spec)
    if path.is_file():
        yield path, _read_state_dict(path)
    elif path.is_dir():
        for p in sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)):
            try:
                yield p, _read_state_dict(p)
            except InputError:
                continue
    else:
        raise InputError(f"--weights {spec}: no such file or folder")


def _cached_hub_folder(repo_id: str) -> Path:
    """A hub repository already in the local cache; never downloads."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any miss means: not in the cache
        raise InputError(f"--weights {repo_id}: no such file or folder, and not a hub repository in the local cache "
                         "(caso never downloads weights)") from exc


def load_backbones(specs: Iterable[str]) -> Backbones:
    """Find VGG16, the LPIPS heads and FID's InceptionV3 among files, folders or cached hub ids ``specs``."""
    found: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}
    for spec in specs:
        for path, sd in _state_dicts(spec):
            kind = _kind(sd)
            if kind is not None and kind not in found:
                found[kind] = (path, sd)
    out = Backbones()
    if "vgg16" in found and "lpips_heads" in found:
        lpips = LPIPS()
        vgg = {k.removeprefix("features."): v for k, v in found["vgg16"][1].items() if k.startswith("features.")}
        lpips.features.load_state_dict(vgg)
        heads = found["lpips_heads"][1]
        for i, head in enumerate(lpips.heads):
            assert isinstance(head, nn.Conv2d)  # LPIPS.__init__ builds the heads as 1x1 convolutions
            head.weight.data.copy_(heads[f"lin{i}.model.1.weight"])
        out.lpips = lpips.eval().requires_grad_(False)
        out.sources["lpips"] = f"{found['vgg16'][0]} + {found['lpips_heads'][0]}"
    else:
        lacking = [what for kind, what in (("vgg16", "VGG16 weights (torchvision's vgg16-397923af.pth)"),
                                           ("lpips_heads", "LPIPS v0.1 heads (the lpips package's weights/v0.1/"
                                                           "vgg.pth)")) if kind not in found]
        out.missing["lpips"] = "needs " + " and ".join(lacking) + " among --weights"
    if "inception" in found:
        path, sd = found["inception"]
        if tuple(sd["fc.weight"].shape) != (1008, 2048):
            raise InputError(f"--weights {path}: an InceptionV3 with {sd['fc.weight'].shape[0]} classes, not FID's "
                             "(pt_inception-2015-12-05-6726825d.pth, 1008 classes): FID/KID/IS would not be "
                             "comparable with published numbers")
        inception = FIDInception()
        inception.load_state_dict({k: v for k, v in sd.items() if not k.startswith("AuxLogits.")})
        out.inception = inception.eval().requires_grad_(False)
        out.sources["inception"] = str(path)
    else:
        out.missing["inception"] = ("needs FID's InceptionV3 weights (pytorch-fid's pt_inception-2015-12-05-"
                                    "6726825d.pth) among --weights")
    return out
