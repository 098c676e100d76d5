"""The toy-world measurement helpers run end to end (tiny random model: values are only checked for form)."""

from __future__ import annotations

import pytest
import torch

from caso_cli.config import EditConfig
from caso_cli.toyworld import measure
from caso_cli.toyworld.render import render_faces


def test_class_value_maps_embedding_classes() -> None:
    assert measure.class_value("mustache", "mustache") == 1
    assert measure.class_value("mustache", "no_mustache") == 0
    assert measure.class_value("hair", "red") == 2
    with pytest.raises(ValueError):
        measure.class_value("hair", "green")


def test_uint8_round_trip() -> None:
    images, _ = render_faces(3, seed=1)
    assert (measure.to_uint8(measure.to_unit(images)) == images).all()


@pytest.mark.slow
def test_generation_and_edit_rates_shapes(tiny_sd) -> None:
    vectors = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    classes = ["no_mustache", "mustache"]
    gen = measure.generation_accuracy(tiny_sd, vectors, classes, "mustache", n_per_class=2, steps=3)
    assert set(gen) == set(classes) and all(0.0 <= v <= 1.0 for v in gen.values())
    images, params = render_faces(6, seed=2)
    rates = measure.edit_rates(tiny_sd, vectors, classes, "mustache", images, 3.0, EditConfig(steps=4, start=0.5))
    assert rates["n"] == 6 and 0.0 <= rates["reconstruction_kept"] <= 1.0
    n_without = int((params.mustache == 0).sum())
    if n_without:
        assert rates["mustache"]["n"] == n_without
        assert rates["mustache"]["psnr"] > 0
    if n_without < 6:
        assert rates["-mustache"]["n"] == 6 - n_without
    for key in ("mustache", "-mustache"):
        if key in rates:
            each = rates[key]["kept_each"]
            assert set(each) == {"glasses", "smile", "hair", "skin", "eyes"}
            # all-at-once preservation can be no higher than any single attribute's
            assert rates[key]["kept"] <= min(each.values()) + 1e-9


@pytest.mark.slow
def test_order_invariance_and_guided_reconstruction(tiny_sd) -> None:
    images, _ = render_faces(3, seed=4)
    cfg = EditConfig(steps=3, start=1.0)
    a = torch.randn(16, generator=torch.Generator().manual_seed(1))
    same = measure.order_invariance(tiny_sd, ("mustache", a), ("glasses", a.clone()), images, 4.0, cfg)
    assert same["pixels_differing_any"] == 0.0 and same["oracle_same_all"] == 1.0  # identical tokens: no order
    b = torch.randn(16, generator=torch.Generator().manual_seed(2))
    other = measure.order_invariance(tiny_sd, ("mustache", a), ("glasses", b), images, 4.0, cfg)
    assert 0.0 <= other["pixels_differing_gt4"] <= other["pixels_differing_any"] <= 1.0
    vectors = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    rec = measure.guided_reconstruction(tiny_sd, vectors, ["no_mustache", "mustache"], "mustache", images, 0.0, cfg)
    assert rec["unguided"] == rec["guided w=0"]  # scale 0 is the unguided reconstruction
