"""Reference numbers of tests/test_backbones.py, from the reference packages (not run by pytest).

Needs torchvision, lpips, pytorch-fid and torch-fidelity (not caso dependencies; on this project's CPU-only
machines that means a separate venv with torch's default CUDA build, which runs on the CPU):
``python -m tests.backbone_reference``. Last run: torch 2.15.0, torchvision 0.29.2, lpips 0.1.4,
pytorch-fid 0.3.0, torch-fidelity 0.4.0 (2026-11-26).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import lpips
import pytorch_fid.inception as pfi
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tfi

from tests.backbone_weights import images, random_state_dict


def lpips_reference() -> list[float]:
    net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    vgg = random_state_dict({f"features.{k}": tuple(v.shape) for k, v in torchvision_vgg_features().items()})
    # the package's vgg.pth holds lin<i>.model.1.weight; its module also lists them as lins.<i> (the same tensors)
    heads = random_state_dict({k: tuple(v.shape) for k, v in net.state_dict().items() if k[:3] == "lin"
                               and k[3].isdigit()})
    heads |= {f"lins.{k[3]}{k[4:]}": v for k, v in heads.items()}
    layers = [net.net.slice1, net.net.slice2, net.net.slice3, net.net.slice4, net.net.slice5]
    for sl in layers:
        for name, module in sl.named_children():
            for p in ("weight", "bias"):
                if hasattr(module, p) and getattr(module, p) is not None:
                    getattr(module, p).data.copy_(vgg[f"features.{name}.{p}"])
    net.load_state_dict({**net.state_dict(), **heads})
    a = torch.from_numpy(images(3, 32, 32, 1)).float() / 127.5 - 1
    b = torch.from_numpy(images(3, 32, 32, 2)).float() / 127.5 - 1
    with torch.no_grad():
        return net(a, b).flatten().tolist()


def torchvision_vgg_features() -> dict[str, torch.Tensor]:
    import torchvision

    return torchvision.models.vgg16().features.state_dict()


def inception_state_dict() -> dict[str, torch.Tensor]:
    model = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    return random_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()})


def pytorch_fid_reference(sd: dict[str, torch.Tensor]) -> dict[str, list]:
    pfi.load_state_dict_from_url = lambda *a, **k: sd  # the weights above instead of the download
    net = pfi.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    x = torch.from_numpy(images(2, 40, 48, 3)).float() / 255
    with torch.no_grad():
        pool = net(x)[0].flatten(1)
    return {"pool_head": pool[:, :6].tolist(), "pool_sum": pool.sum(1).tolist()}


def torch_fidelity_reference(sd: dict[str, torch.Tensor]) -> dict[str, list]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "w.pth"
        torch.save(sd, path)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                              feature_extractor_weights_path=str(path)).eval()
    x = torch.from_numpy(images(2, 299, 299, 4))
    with torch.no_grad():
        pool, logits = net(x)
    return {"pool_head": pool[:, :6].tolist(), "logits_head": logits[:, :6].tolist(),
            "logits_sum": logits.sum(1).tolist()}


if __name__ == "__main__":
    sd = inception_state_dict()
    print(json.dumps({"lpips": lpips_reference(), "pytorch_fid": pytorch_fid_reference(sd),
                      "torch_fidelity": torch_fidelity_reference(sd),
                      "n_inception_keys": len(sd), "vgg_keys": sorted(torchvision_vgg_features())[:3]}, indent=1))
