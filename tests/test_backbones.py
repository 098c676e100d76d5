"""LPIPS and FID's InceptionV3 against the reference packages, on fixed weights and inputs.

The numbers were computed by tests/backbone_reference.py with lpips 0.1.4 (and torchvision's VGG16),
pytorch-fid 0.3.0 and torch-fidelity 0.4.0 from the same random weights (tests/backbone_weights.py);
caso's own networks must load those weights from files laid out as the reference packages save them
and give the same numbers.
"""

from __future__ import annotations

import pytest
import torch

from caso_cli.errors import InputError
from caso_cli.eval.backbones import FIDInception, load_backbones
from tests.backbone_weights import images, random_state_dict, write_weight_files

LPIPS_REF = [0.033933017402887344, 0.034516531974077225, 0.03506964072585106]
PYTORCH_FID_POOL_HEAD = [[5.210695743560791, 0.03346390649676323, 0.0, 5.0292534828186035, 4.1232452392578125, 0.0],
                         [5.23280143737793, 0.04574507474899292, 0.0, 5.0466179847717285, 4.164371967315674, 0.0]]
PYTORCH_FID_POOL_SUM = [5042.63134765625, 5085.81201171875]
FIDELITY_POOL_HEAD = [[6.623996734619141, 0.11253366619348526, 0.0, 5.897647857666016, 5.501523971557617, 0.0],
                      [6.594918251037598, 0.09693946689367294, 0.0, 5.784649848937988, 5.520928859710693, 0.0]]
FIDELITY_LOGITS_HEAD = [[-10.20273208618164, -10.347879409790039, 9.449423789978027, -8.267492294311523,
                         -9.226252555847168, 1.6529593467712402],
                        [-10.064876556396484, -10.403247833251953, 9.438650131225586, -8.212874412536621,
                         -9.064743995666504, 1.8144779205322266]]
FIDELITY_LOGITS_SUM = [-244.4548797607422, -244.63125610351562]


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return write_weight_files(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def nets(weights_dir):
    return load_backbones([str(weights_dir)])


def _signed(x) -> torch.Tensor:
    return torch.from_numpy(x).float() / 127.5 - 1


@pytest.mark.slow
def test_lpips_matches_the_lpips_package(nets) -> None:
    assert nets.lpips is not None and "vgg16-397923af.pth" in nets.sources["lpips"]
    with torch.no_grad():
        d = nets.lpips(_signed(images(3, 32, 32, 1)), _signed(images(3, 32, 32, 2)))
    assert d.tolist() == pytest.approx(LPIPS_REF, rel=1e-4)


def test_lpips_is_zero_for_identical_images_and_symmetric(nets) -> None:
    a, b = _signed(images(2, 32, 32, 5)), _signed(images(2, 32, 32, 6))
    with torch.no_grad():
        assert nets.lpips(a, a).abs().max() < 1e-7
        assert torch.allclose(nets.lpips(a, b), nets.lpips(b, a), atol=1e-7)


def test_inception_pool_features_match_pytorch_fid(nets) -> None:
    x = torch.from_numpy(images(2, 40, 48, 3)).float() / 127.5 - 1  # resized to 299 inside, as pytorch-fid does
    with torch.no_grad():
        pool, _ = nets.inception(x)
    assert pool.shape == (2, 2048)
    assert pool[:, :6].tolist() == [pytest.approx(r, rel=1e-4, abs=1e-5) for r in PYTORCH_FID_POOL_HEAD]
    assert pool.sum(1).tolist() == pytest.approx(PYTORCH_FID_POOL_SUM, rel=1e-5)


def test_inception_logits_match_torch_fidelity_unbiased_logits(nets) -> None:
    # torch-fidelity maps uint8 x to (x - 128) / 128; at 299x299 neither side resizes
    x = (torch.from_numpy(images(2, 299, 299, 4)).float() - 128) / 128
    with torch.no_grad():
        pool, logits = nets.inception(x)
    assert logits.shape == (2, 1008)
    assert pool[:, :6].tolist() == [pytest.approx(r, rel=1e-4, abs=1e-5) for r in FIDELITY_POOL_HEAD]
    assert logits[:, :6].tolist() == [pytest.approx(r, rel=1e-4) for r in FIDELITY_LOGITS_HEAD]
    assert logits.sum(1).tolist() == pytest.approx(FIDELITY_LOGITS_SUM, rel=1e-4)


@pytest.mark.slow
def test_missing_and_wrong_weights_are_explained(weights_dir, tmp_path) -> None:
    only_vgg = load_backbones([str(weights_dir / "vgg16-397923af.pth")])
    assert only_vgg.lpips is None and only_vgg.inception is None
    assert "LPIPS v0.1 heads" in only_vgg.missing["lpips"] and "VGG16" not in only_vgg.missing["lpips"]
    assert "pt_inception" in only_vgg.missing["inception"]
    imagenet = {k: tuple(v.shape) for k, v in FIDInception().state_dict().items()} | {"fc.weight": (1000, 2048),
                                                                                        "fc.bias": (1000,)}
    torch.save(random_state_dict(imagenet), tmp_path / "inception_v3_google.pth")
    with pytest.raises(InputError, match="1000 classes, not FID's"):
        load_backbones([str(tmp_path / "inception_v3_google.pth")])
    (tmp_path / "broken.pth").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a readable weight file"):
        load_backbones([str(tmp_path / "broken.pth")])
    with pytest.raises(InputError, match="not a hub repository in the local cache"):
        load_backbones(["someone/not-cached-anywhere"])
