"""Learning several attributes together: conditions that name every attribute, the CLI, what a vector encodes."""

from __future__ import annotations

import json

import pytest
import torch

from caso_cli.config import LearnConfig
from caso_cli.models.classifier import AttributeClassifier, save_classifier
from caso_cli.pipelines import learn, learn_checks, learn_runs
from tests.tiny import random_images, run_main, tiny_classifier


@pytest.fixture(scope="module")
def classifiers() -> list[AttributeClassifier]:
    return [tiny_classifier(["no_a", "a"], 0), tiny_classifier(["x", "y", "z"], 1)]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return random_images()


@pytest.mark.slow
def test_conditions_name_every_attribute(tiny_sd, classifiers, images, monkeypatch) -> None:
    """Each image's condition holds one row per attribute: the focus one at its target, the rest as read."""
    seen = []
    real = learn.caso_loss

    def recording(sd, clfs, vectors, z0, classes, *args, **kw):
        seen.append((len(clfs), classes.clone()))
        return real(sd, clfs, vectors, z0, classes, *args, **kw)

    monkeypatch.setattr(learn, "caso_loss", recording)
    same = images[:1].expand(6, -1, -1, -1)  # one image six times: every image reads the same classes
    result = learn.learn_embedding(tiny_sd, classifiers, same, LearnConfig(steps=10, batch_size=2,
                                                                          checkpoint_every=0))
    assert result.vectors.shape == (5, 16) and result.split == [2, 3]
    assert [v.shape[0] for v in result.per_attribute()] == [2, 3]
    read = torch.stack([c.read(same[:1], torch.device("cpu"))[0] for c in classifiers])
    assert all(n == 2 for n, _ in seen)  # one loss over both attributes
    classes = torch.cat([c for _, c in seen])  # (20, 2): each image's class per attribute
    differs = classes != read
    assert (differs.sum(1) <= 1).all()  # every attribute but (at most) the focus one stays as read
    # the 5 (attribute, class) targets come round-robin: over 20 images each one appears 4 times
    for a, size in enumerate([2, 3]):
        for k in range(size):
            if k != int(read[a]):
                assert int((classes[:, a] == k).sum()) == 4, (a, k)


@pytest.mark.slow
def test_learning_together_is_bit_reproducible(tiny_sd, classifiers, images) -> None:
    cfg = LearnConfig(steps=6, batch_size=2, checkpoint_every=0, seed=3)
    a = learn.learn_embedding(tiny_sd, classifiers, images, cfg).vectors
    b = learn.learn_embedding(tiny_sd, classifiers, images, cfg).vectors
    c = learn.learn_embedding(tiny_sd, classifiers, images, LearnConfig(steps=6, batch_size=2, checkpoint_every=0,
                                                                        seed=4)).vectors
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.slow
def test_one_classifier_in_a_list_is_the_single_run(tiny_sd, classifiers, images) -> None:
    cfg = LearnConfig(steps=4, batch_size=2, checkpoint_every=0)
    assert torch.equal(learn.learn_embedding(tiny_sd, classifiers[0], images, cfg).vectors,
                       learn.learn_embedding(tiny_sd, [classifiers[0]], images, cfg).vectors)


def test_edit_check_edits_each_class_with_the_others_held(tiny_sd, classifiers, images, monkeypatch) -> None:
    """Per class: only images not read as it are edited, towards it, with the other attribute held as read."""
    read = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 0], [0, 1], [1, 2]])  # (image, attribute) as "read"
    reads = iter([read[:, 0], read[:, 1]])
    seen = []
    real_contrast = learn_checks.hold_contrast

    def contrast(sd, edits, held, held_read, source, *a, **k):
        seen.append((edits[0].token.name, edits[0].index, float(edits[0].scale), held[0].name, held_read[:, 0].tolist(),
                     source[:, 0].tolist()))
        return real_contrast(sd, edits, held, held_read, source, *a, **k)

    def read(clf, x, device, batch=64):
        if len(x) == 6:  # the training images, read once per attribute
            return next(reads)
        return torch.zeros(len(x), dtype=torch.long)  # every edit reads as class 0 of both attributes

    monkeypatch.setattr(AttributeClassifier, "read", read)  # the checks' and hold's readings (the source class)
    monkeypatch.setattr(learn_checks, "hold_contrast", contrast)
    vectors = [torch.randn(2, tiny_sd.token_dim), torch.randn(3, tiny_sd.token_dim)]
    success, kept = learn_checks.edit_check(tiny_sd, classifiers, vectors, images, 2, 4.0)
    # a: class 0 from images 2, 3 (read 1) by removing class 1; class 1 from images 0, 1; b: x from 1, 2; y: 0, 2
    assert [s[:3] for s in seen] == [("0000", 1, -4.0), ("0000", 1, 4.0), ("0001", 0, 4.0), ("0001", 1, 4.0),
                                     ("0001", 2, 4.0)]
    # sources: removal starts from the class removed (hold's convention), a three-class attribute from its reading
    assert seen[0][3:] == ("0001", [2, 0], [0, 0]) and seen[2][3:] == ("0000", [0, 1], [0, 0])
    # every edit reads (0, 0): class 0 of each attribute succeeds; kept where the other attribute was read as 0
    assert success == [1.0, 0.0, 1.0, 0.0, 0.0] and kept == [0.5, 0.5, 0.5, 0.5, 1.0]


def test_learning_together_is_one_run_checked_by_edits(tiny_sd, classifiers, images, monkeypatch) -> None:
    monkeypatch.setattr(learn_runs, "edit_check", lambda *a, **k: ([0.5, 1.0, 1.0, 1.0, 1.0], [0.25] * 5))
    runs = []
    real = learn_runs.learn_embedding
    monkeypatch.setattr(learn_runs, "learn_embedding", lambda *a, **k: runs.append(real(*a, **k)) or runs[-1])
    cfg = LearnConfig(steps=2, batch_size=2, checkpoint_every=0, seed=5, check_samples=3, restarts=2)
    out = learn_runs.learn_checked(tiny_sd, classifiers, images, cfg)  # failing the check: one run, never restarted
    assert len(runs) == 1 and out is runs[0]
    assert out.check == {"kind": "edit", "samples": 3, "scale": 5.0, "runs": 1,
                         "rates": {"no_a": 0.5, "a": 1.0, "x": 1.0, "y": 1.0, "z": 1.0},
                         "kept": dict.fromkeys(["no_a", "a", "x", "y", "z"], 0.25),
                         "seeds": dict.fromkeys(["no_a", "a", "x", "y", "z"], 5), "passed": False}


def test_encoding_report_warns_on_drift(tiny_sd, classifiers, images, monkeypatch) -> None:
    """Samples that the other classifier reads as one class, against data read half and half."""
    monkeypatch.setattr(learn_checks, "samples_per_class",
                        lambda sd, v, n, *a: [torch.zeros(n, 3, 32, 32)] * v.shape[0])
    calls = iter([torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1]), torch.tensor([0, 0])])
    monkeypatch.setattr(AttributeClassifier, "read", lambda *a, **k: next(calls))
    other = tiny_classifier(["no_smile", "smile"], 5)
    report = learn_checks.encoding_report(tiny_sd, torch.zeros(2, 16), ["no_a", "a"], {"smile": other}, images[:4],
                                          2, 5.0)
    assert report["data"] == {"smile": {"no_smile": 0.5, "smile": 0.5}}
    assert report["samples_rates"]["no_a"]["smile"] == {"no_smile": 0.0, "smile": 1.0}
    assert report["warnings"] == ["samples of no_a: smile 100% vs 50% in the data",
                                  "samples of a: smile 0% vs 50% in the data"]


@pytest.mark.slow
def test_embed_learn_together_cli(tmp_path, tiny_model_dir, capsys) -> None:
    from caso_cli.registry import load_embedding
    from tests.tiny import learn_inputs

    folder, clf_a = learn_inputs(tmp_path)
    clf_b = save_classifier(tiny_classifier(["no_b", "b"], 7), tmp_path / "b.safetensors")
    code, stdout, err = run_main(["embed", "learn", str(folder), "-c", str(clf_b), "-n", "bb", "-c", str(clf_a),
                                  "-n", "aa", "--model", str(tiny_model_dir), "--steps", "3", "--check-samples", "2",
                                  "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [r["name"] for r in rows] == ["aa", "bb"]  # token order: by name
    a, b = load_embedding("aa"), load_embedding("bb")
    assert a.meta.learned_with == ["bb"] and b.meta.learned_with == ["aa"]
    assert a.meta.classes == ["no_x", "x"] and b.meta.classes == ["no_b", "b"]
    assert a.meta.classifier is not None and a.meta.classifier.path == str(clf_a.resolve())
    check = a.meta.metrics["edit_check"]  # held edits of the training images: this attribute's classes only
    assert set(check["rates"]) == set(check["kept"]) == {"no_x", "x"} and check["runs"] == 1
    assert check["passed"] == (min(check["rates"].values()) >= 0.9) and "generation_check" not in a.meta.metrics
    assert rows[0]["edit_check"] == check
    assert set(a.meta.metrics["encodes"]["data"]) == {"bb"}
    code, _, err = run_main(["embed", "learn", str(folder), "-c", str(clf_b), "-n", "bb", "-c", str(clf_a), "-n", "aa",
                             "--model", str(tiny_model_dir), "--steps", "2", "--check-samples", "2", "--device", "cpu",
                             "--force"], capsys)
    assert code == 0, err
    assert "edit check: of up to 2 training images edited towards each class with the other attributes held" in err
    assert "no_x " in err and "(kept " in err and "--restarts" not in err
    code, _, err = run_main(["embed", "learn", str(folder), "-c", str(clf_a), "-n", "aa", "-c", str(clf_b),
                             "--model", str(tiny_model_dir)], capsys)
    assert code == 2 and "one --name per --classifier" in err
    code, _, err = run_main(["embed", "learn", str(folder), "-c", str(clf_a), "-n", "cc", "-c", str(clf_b), "-n", "cc",
                             "--model", str(tiny_model_dir)], capsys)
    assert code == 2 and "its own name" in err
