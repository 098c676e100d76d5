"""Holding attributes: the contrast guidance, held conditions, the registry lookup and `caso edit --hold`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from caso_cli.errors import InputError, UsageError
from caso_cli.io.files import file_sha256
from caso_cli.io.png import read_png_metadata
from caso_cli.models.classifier import load_classifier, save_classifier
from caso_cli.pipelines.guidance import Contrast
from caso_cli.pipelines.hold import EditTerm, Token, held_embeddings, hold_contrast, read_classes
from caso_cli.registry import save_embedding
from tests.tiny import run_main, tiny_classifier


def _token(name: str, k: int, seed: int) -> Token:
    classes = [f"no_{name}", name] if k == 2 else [f"c{i}" for i in range(k)]
    vectors = torch.randn(k, 16, generator=torch.Generator().manual_seed(seed))
    return Token(name, vectors, tiny_classifier(classes, seed))


def test_contrast_is_cfg_in_one_call(tiny_sd) -> None:
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    c_null = tiny_sd.family.null_condition()
    with torch.no_grad():
        c = tiny_sd.family.encode_vectors(torch.randn(1, 16))
        e_null = tiny_sd.eps(z, 500, c_null)
        want = e_null + 3.0 * (tiny_sd.eps(z, 500, c) - e_null)
        got = Contrast([c_null, c], 0, [(3.0, 1, 0)]).eps(tiny_sd, z, 500)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("w", [2.5, -2.0])
@pytest.mark.parametrize("form", ["null", "source", "delta", "auto"])
def test_hold_contrast_forms(tiny_sd, form, w) -> None:
    """Each form's value, term by term, against UNet calls made one image and one condition at a time; a negative
    scale moves from the target class to the source class with the held classes named."""
    edit, held = _token("m", 2, 1), [_token("s", 2, 2), _token("h", 3, 3)]
    read = torch.tensor([[0, 2], [1, 0]])
    source = torch.tensor([[0], [0]])
    contrast = hold_contrast(tiny_sd, [EditTerm(edit, 1, w)], held, read, source, form)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = contrast.eps(tiny_sd, z, 300)

        def cond(m_class: int, i: int) -> torch.Tensor:  # tokens in name order: h, m, s
            rows = torch.stack([held[1].vectors[read[i, 1]], edit.vectors[m_class], held[0].vectors[read[i, 0]]])
            return tiny_sd.family.encode_vectors(rows)

        null = tiny_sd.family.null_condition()
        for i in range(2):
            e_null, e_src, e_tgt = (tiny_sd.eps(z[i:i + 1], 300, c) for c in (null, cond(0, i), cond(1, i)))
            if w > 0:
                want = {"null": e_null + w * (e_tgt - e_null), "source": e_src + w * (e_tgt - e_src),
                        "delta": e_null + w * (e_tgt - e_src), "auto": e_src + w * (e_tgt - e_src)}[form]
            else:
                want = {"null": e_null - w * (e_src - e_null), "source": e_tgt - w * (e_src - e_tgt),
                        "delta": e_null + w * (e_tgt - e_src), "auto": e_null + w * (e_tgt - e_src)}[form]
            assert torch.allclose(got[i:i + 1], want, atol=1e-4), (form, i)


def test_hold_refuses_bad_forms_and_overlaps(tiny_sd) -> None:
    edit = _token("m", 2, 1)
    with pytest.raises(UsageError, match="hold form"):
        hold_contrast(tiny_sd, [EditTerm(edit, 1, 1.0)], [], torch.zeros(1, 0, dtype=torch.long),
                      torch.zeros(1, 1, dtype=torch.long), "bogus")
    with pytest.raises(UsageError, match="edited and held"):
        hold_contrast(tiny_sd, [EditTerm(edit, 1, 1.0)], [edit], torch.zeros(1, 1, dtype=torch.long),
                      torch.zeros(1, 1, dtype=torch.long))


def test_read_classes_is_each_classifiers_argmax() -> None:
    toks = [_token("s", 2, 2), _token("h", 3, 3)]
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got = read_classes(toks, x)
    assert got.shape == (5, 2)
    assert torch.equal(got[:, 1], toks[1].classifier(x).argmax(1))
    with pytest.raises(UsageError, match="no classifier"):
        read_classes([Token("q", torch.zeros(2, 16))], x)


# ---- the registry and the command line ---------------------------------------------------------------------------


@pytest.fixture()
def registry(tiny_sd, tiny_model_dir, tmp_path) -> dict[str, Path]:
    """mustache (edited), smile and hair (held), each with its classifier file; 'orphan' without one."""
    te = tiny_sd.family.encoder_hash()
    files = {}
    for seed, (name, classes) in enumerate([("mustache", ["no_mustache", "mustache"]),
                                            ("smile", ["no_smile", "smile"]), ("hair", ["black", "blond", "red"])]):
        path = save_classifier(tiny_classifier(classes, seed), tmp_path / f"{name}.safetensors")
        files[name] = path
        save_embedding(name, torch.randn(len(classes), 16, generator=torch.Generator().manual_seed(seed)),
                       {"classes": classes, "model": str(tiny_model_dir), "text_encoder_hash": te,
                        "classifier": {"path": str(path), "sha256": file_sha256(path)}})
    save_embedding("orphan", torch.randn(2, 16), {"classes": ["no_o", "o"], "model": str(tiny_model_dir),
                                                  "text_encoder_hash": te})
    save_embedding("other-model", torch.randn(2, 16), {"classes": ["no_q", "q"], "model": "x",
                                                       "text_encoder_hash": "0" * 16,
                                                       "classifier": {"path": str(files["smile"])}})
    return files


def test_hold_all_takes_same_encoder_entries_with_classifiers(registry) -> None:
    from caso_cli.registry import load_embedding

    held, warnings = held_embeddings(["all"], [load_embedding("mustache")])
    assert [e.name for e in held] == ["hair", "smile"]
    assert warnings == ["not holding orphan: its classifier (none recorded) is not reachable"]
    with pytest.raises(UsageError, match="cannot be held too"):
        held_embeddings(["mustache"], [load_embedding("mustache")])


def _photos(tmp_path: Path) -> list[Path]:
    from caso_cli.toyworld.render import render_faces

    faces, _ = render_faces(3, seed=5)
    paths = []
    for i, face in enumerate(faces):
        p = tmp_path / "in" / f"f{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(face).save(p)
        paths.append(p)
    return paths


FAST = ["--steps", "4", "--device", "cpu"]


@pytest.mark.slow
def test_edit_hold_records_the_classes_read(registry, tmp_path, capsys) -> None:
    photos = _photos(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run_main(["edit", *map(str, photos), "--attr", "mustache", "--hold", "all", "--out",
                                  str(out), "--json", *FAST], capsys)
    assert code == 0, err
    assert "not holding orphan" in err
    rows = [json.loads(line) for line in stdout.splitlines()]
    from caso_cli.io.images import load_image, to_tensor

    x = to_tensor([load_image(p) for p in photos])

    for name in ("smile", "hair"):
        clf = load_classifier(registry[name])
        want = [clf.classes[k] for k in clf(x).argmax(1).tolist()]
        assert [r["held"][name] for r in rows] == want
    assert rows[0]["hold_form"] == "auto"
    meta = read_png_metadata(rows[0]["output"])
    assert meta["caso:held"] == f"hair={rows[0]['held']['hair']},smile={rows[0]['held']['smile']}"
    assert meta["caso:hold_form"] == "auto"


@pytest.mark.slow
def test_edit_hold_errors(registry, tmp_path, capsys) -> None:
    photos = _photos(tmp_path)
    base = ["edit", str(photos[0]), "--attr", "mustache", "--out", str(tmp_path / "o"), *FAST]
    code, _, err = run_main([*base, "--hold", "orphan"], capsys)
    assert code == InputError.exit_code and "records no classifier" in err
    registry["smile"].write_bytes(registry["smile"].read_bytes() + b" ")
    code, _, err = run_main([*base, "--hold", "smile"], capsys)
    assert code == InputError.exit_code and "changed since the embedding was learned" in err
    registry["hair"].unlink()
    code, _, err = run_main([*base, "--hold", "hair"], capsys)
    assert code == InputError.exit_code and "is missing" in err
    code, _, err = run_main([*base, "--hold", "smile", "--hold-form", "bogus"], capsys)
    assert code == UsageError.exit_code and "--hold-form" in err


def test_per_latent_scales_match_one_latent_at_a_time(tiny_sd) -> None:
    """A (B, 1, 1, 1) scale tensor (interpolate) gives each latent what its own float scale gives."""
    edit, held = _token("m", 2, 1), [_token("s", 2, 2)]
    read, source = torch.tensor([[1], [1], [1]]), torch.tensor([[0], [0], [0]])
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4)).expand(3, -1, -1, -1)
    scales = [-3.0, 0.0, 2.0]
    for form in ("null", "source", "delta", "auto"):
        with torch.no_grad():
            batch = hold_contrast(tiny_sd, [EditTerm(edit, 1, torch.tensor(scales).view(-1, 1, 1, 1))], held, read,
                                  source, form).eps(tiny_sd, z, 300)
            for i, w in enumerate(scales):
                one = hold_contrast(tiny_sd, [EditTerm(edit, 1, w)], held, read[i:i + 1], source[i:i + 1],
                                    form).eps(tiny_sd, z[i:i + 1], 300)
                assert torch.allclose(batch[i:i + 1], one, atol=1e-4), (form, w)


@pytest.mark.slow
def test_interpolate_hold_reads_once_and_records(registry, tmp_path, capsys) -> None:
    photo = _photos(tmp_path)[0]
    out = tmp_path / "sweep.png"
    code, _, err = run_main(["interpolate", str(photo), "--attr", "mustache", "--hold", "smile", "--scales", "-2,0,2",
                             "--out", str(out), *FAST], capsys)
    assert code == 0, err
    meta = read_png_metadata(out)
    assert meta["caso:held"].startswith("smile=") and meta["caso:hold_form"] == "auto"


def test_hold_all_holds_each_other_attribute_once(tiny_sd, tiny_model_dir, tmp_path) -> None:
    """Entries are grouped by their classifier's attribute: never the edited attribute (whatever the entry's name),
    one entry per other attribute (learned together with the edited one first, else the newest), and an entry whose
    classifier was refitted is left out with a warning instead of stopping the edit."""
    from caso_cli.registry import load_embedding

    te = tiny_sd.family.encoder_hash()
    clf = save_classifier(tiny_classifier(["no_x", "x"], 0), tmp_path / "c.safetensors")
    refit = save_classifier(tiny_classifier(["no_x", "x"], 1), tmp_path / "r.safetensors")
    rec = {"path": str(clf), "sha256": file_sha256(clf)}
    entries = [("toy-mustache", "mustache", [], "2026-01-01"), ("my-mustache", "mustache", [], "2026-01-03"),
               ("j-mustache", "mustache", ["j-glasses"], "2026-01-02"), ("j-glasses", "glasses", ["j-mustache"],
                                                                          "2026-01-02"),
               ("new-glasses", "glasses", [], "2026-01-05"), ("old-smile", "smile", [], "2026-01-01"),
               ("new-smile", "smile", [], "2026-01-04")]
    for name, attr, together, created in entries:
        save_embedding(name, torch.randn(2, 16), {"classes": ["no_x", "x"], "model": str(tiny_model_dir),
                                                  "text_encoder_hash": te, "attr": attr, "learned_with": together,
                                                  "created": created, "classifier": rec})
    save_embedding("refit-hair", torch.randn(2, 16), {"classes": ["no_x", "x"], "model": str(tiny_model_dir),
                                                      "text_encoder_hash": te, "attr": "hair",
                                                      "classifier": {"path": str(refit), "sha256": "0" * 64}})
    held, warnings = held_embeddings(["all"], [load_embedding("j-mustache")])
    assert [e.name for e in held] == ["j-glasses", "new-smile"]
    assert "holding glasses with j-glasses (not new-glasses)" in warnings
    assert "holding smile with new-smile (not old-smile)" in warnings
    assert any(w.startswith("not holding refit-hair: its classifier") and "changed" in w for w in warnings)
    held, _ = held_embeddings(["all"], [load_embedding("toy-mustache")])
    assert [e.name for e in held] == ["new-glasses", "new-smile"]
    # what a newly learned mustache vector encodes is read by the other attributes' classifiers, one each
    from caso_cli.pipelines.embed import registry_classifiers

    assert sorted(registry_classifiers(te, {"new"}, "cpu", attribute="mustache")) == ["new-glasses", "new-smile"]
