"""The toy-world renderer: determinism, balance, settable probabilities, nuisances, data on disk."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from caso_cli.errors import InputError, UsageError
from caso_cli.toyworld import render as R


def _luma(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def test_same_seed_same_pixels_other_seed_other_pixels() -> None:
    a, pa = R.render_faces(64, seed=7)
    b, pb = R.render_faces(64, seed=7)
    c, _ = R.render_faces(64, seed=8)
    assert a.shape == (64, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert all(np.array_equal(getattr(pa, f.name), getattr(pb, f.name)) for f in dataclasses.fields(pa))
    # different seeds: nearly every image differs
    differs = (a != c).any(axis=(1, 2, 3)).mean()
    assert differs == 1.0


def test_prefix_stable_and_render_is_a_pure_function_of_params() -> None:
    big = R.sample_params(50, seed=3)
    small = R.sample_params(10, seed=3)
    assert np.array_equal(big.subset(slice(0, 10)).background, small.background)
    assert np.array_equal(R.render(big)[:10], R.render(small))


def test_binary_attributes_and_hair_are_balanced_and_independent() -> None:
    p = R.sample_params(2000, seed=11)
    for name in R.BINARY_ATTRIBUTES:
        assert abs(getattr(p, name).mean() - 0.5) < 0.04, name  # 3.5 sigma at n = 2000
    counts = np.bincount(p.hair, minlength=3) / 2000
    assert np.all(np.abs(counts - 1 / 3) < 0.04), counts
    # independence: every pair of binary attributes co-occurs about 25% of the time
    for i, x in enumerate(R.BINARY_ATTRIBUTES):
        for y in R.BINARY_ATTRIBUTES[i + 1:]:
            both = (getattr(p, x) & getattr(p, y)).mean()
            assert abs(both - 0.25) < 0.035, (x, y, both)


def test_probabilities_are_honoured_and_touch_nothing_else() -> None:
    base = R.sample_params(500, seed=5)
    never = R.sample_params(500, seed=5, config=R.RenderConfig(p_mustache=0.0, p_smile=1.0))
    assert never.mustache.sum() == 0 and never.smile.min() == 1
    assert np.array_equal(never.glasses, base.glasses) and np.array_equal(never.hair, base.hair)
    assert np.array_equal(never.cx, base.cx) and np.array_equal(never.background, base.background)
    always = R.sample_params(500, seed=5, config=R.RenderConfig(p_glasses=1.0, hair_probs=(0.0, 1.0, 0.0)))
    assert always.glasses.min() == 1 and set(always.hair.tolist()) == {1}
    skewed = R.sample_params(2000, seed=6, config=R.RenderConfig(p_mustache=0.1, hair_probs=(0.6, 0.2, 0.2)))
    assert abs(skewed.mustache.mean() - 0.1) < 0.025
    assert abs((skewed.hair == 0).mean() - 0.6) < 0.04


@pytest.mark.parametrize("kwargs", [
    {"p_mustache": 1.5}, {"p_smile": -0.1}, {"hair_probs": (0.5, 0.5)}, {"hair_probs": (0.5, 0.6, -0.1)},
    {"jitter": 5.0}, {"face_w_range": (9.0, 8.0)}, {"skin_range": (0.2, 1.2)},
])
def test_bad_config_is_a_usage_error(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        R.RenderConfig(**kwargs)


def test_nuisance_factors_vary() -> None:
    p = R.sample_params(2000, seed=12)
    assert p.cx.std() > 0.9 and p.cy.std() > 0.9  # uniform +-2 px: std 1.15
    assert np.ptp(p.cx) > 3.5 and np.ptp(p.cy) > 3.5
    assert np.ptp(p.face_w) > 1.8 and p.face_w.min() >= 7.5 and p.face_w.max() <= 9.5
    assert p.skin_tone.std() > 0.25  # uniform [0, 1]: std 0.29
    assert np.all(p.background.std(axis=0) > 12)
    assert 0.45 < p.eye_shape.mean() < 0.55
    # two faces with the same labels still look different
    images = R.render(p.subset(slice(0, 200)))
    same = np.flatnonzero((p.mustache[:200] == p.mustache[0]) & (p.glasses[:200] == p.glasses[0])
                          & (p.smile[:200] == p.smile[0]) & (p.hair[:200] == p.hair[0]))
    assert len(same) >= 5
    diff = np.abs(images[same[0]].astype(int) - images[same[1]].astype(int)).sum(-1)
    assert (diff > 30).mean() > 0.3


def test_face_stays_inside_a_flat_background_border() -> None:
    images, p = R.render_faces(500, seed=13)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert np.abs(border.astype(np.float32) - np.rint(p.background)[:, None, :]).max() <= 0.5


@pytest.mark.parametrize("attr, min_pixels, min_change", [
    # counterfactual pairs: pixels (at 32x32) whose colour changes by more than 40, and their mean change
    ("mustache", 14, 90.0), ("glasses", 30, 90.0), ("smile", 14, 60.0),
])
def test_each_attribute_is_a_bold_visible_change(attr: str, min_pixels: int, min_change: float) -> None:
    p = R.sample_params(300, seed=14)
    off = R.render(p.replace(**{attr: 0})).astype(np.float32)
    on = R.render(p.replace(**{attr: 1})).astype(np.float32)
    dist = np.linalg.norm(on - off, axis=-1)  # (N, 32, 32)
    changed = dist > 40
    assert changed.sum(axis=(1, 2)).min() >= min_pixels
    assert (dist * changed).sum() / changed.sum() >= min_change
    if attr != "smile":  # mustache and glasses darken what they cover
        assert (_luma(on) - _luma(off))[changed].mean() < -60


def test_hair_colour_change_covers_the_cap() -> None:
    p = R.sample_params(100, seed=15)
    images = [R.render(p.replace(hair=k)).astype(np.float32) for k in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            changed = np.linalg.norm(images[i] - images[j], axis=-1) > 100
            assert changed.sum(axis=(1, 2)).min() >= 40


def test_replace_and_subset() -> None:
    p = R.sample_params(8, seed=1)
    q = p.replace(mustache=1, hair=[0, 1, 2, 0, 1, 2, 0, 1])
    assert q.mustache.tolist() == [1] * 8 and q.hair.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert np.array_equal(q.cx, p.cx) and p.mustache is not q.mustache
    assert len(p.subset([1, 3])) == 2


def test_write_dataset_is_parseable_celeba_style(tmp_path) -> None:
    out = tmp_path / "toy"
    params = R.write_dataset(out, n=20, seed=21)
    lines = (out / R.LIST_ATTR_FILE).read_text().splitlines()
    assert lines[0] == "20"
    header = lines[1].split()
    assert header == ["Mustache", "Glasses", "Smile", "Hair_black", "Hair_blond", "Hair_red", "Dark_skin",
                      "Narrow_eyes"]
    assert len(lines) == 22
    for i, line in enumerate(lines[2:]):
        name, *vals = line.split()
        assert name == f"{i:06d}.png" and (out / "images" / name).is_file()
        values = [int(v) for v in vals]
        assert len(values) == 8 and set(values) <= {1, -1}
        assert values[:3] == [1 if getattr(params, a)[i] else -1 for a in ("mustache", "glasses", "smile")]
        assert values[3:6].count(1) == 1 and values[3 + int(params.hair[i])] == 1
        assert values[6:] == [1 if params.skin_tone[i] > R.DARK_SKIN else -1, 1 if params.eye_shape[i] else -1]

    with (out / R.LABELS_FILE).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and tuple(rows[0].keys()) == R.LABEL_COLUMNS
    assert rows[3]["path"] == "images/000003.png"
    assert rows[3]["hair"] == R.ATTRIBUTES["hair"][int(params.hair[3])]

    # the PNGs hold exactly the rendered pixels, and labels.csv reads back to the same faces
    from PIL import Image

    pixels = np.stack([np.asarray(Image.open(out / "images" / f"{i:06d}.png").convert("RGB"))
                       for i in range(20)])
    assert np.array_equal(pixels, R.render(params))
    back = R.read_dataset(out)
    assert back.paths[0] == out / "images" / "000000.png"
    assert back.params is not None
    assert np.array_equal(R.render(back.params), pixels)


def test_write_dataset_refuses_non_empty_then_overwrites_own_files(tmp_path) -> None:
    out = tmp_path / "toy"
    R.write_dataset(out, n=12, seed=1)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        R.write_dataset(out, n=5, seed=2)
    R.write_dataset(out, n=5, seed=2, overwrite=True)
    assert len(list((out / "images").glob("*.png"))) == 5  # stale images from the first run are gone
    assert (out / "notes.txt").read_text() == "mine"  # files it did not write are kept
    assert (out / R.LIST_ATTR_FILE).read_text().splitlines()[0] == "5"


def test_list_attr_reads_with_the_project_dataset_reader(tmp_path) -> None:
    from caso_cli.io.datasets import from_list_attr

    out = tmp_path / "toy"
    params = R.write_dataset(out, n=30, seed=4)
    hair = from_list_attr(out / R.LIST_ATTR_FILE, "Hair", out)
    assert hair.classes == ("black", "blond", "red")
    assert list(hair.labels) == params.hair.tolist()
    assert hair.paths[0] == out / "images" / "000000.png"
    smile = from_list_attr(out / R.LIST_ATTR_FILE, "Smile", out)
    assert list(smile.labels) == params.smile.tolist()
