"""Learning and guiding a vector in context (docs/method.md §10): contexts, conditions, the loss, the norm cap."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from caso_cli import conditioning
from caso_cli.config import LearnConfig
from caso_cli.contexts import TEMPLATES, resolve, split, with_slot, words
from caso_cli.errors import UsageError
from caso_cli.models.classifier import AttributeClassifier
from caso_cli.pipelines.learn import learn_embedding
from caso_cli.pipelines.learn_loss import caso_loss
from caso_cli.toyworld.captions import contexts, held_context
from tests.tiny import random_images, tiny_classifier, tiny_classifier_file


def test_context_text() -> None:
    assert with_slot("a face") == "a face {}" and with_slot("a {} face") == "a {} face"
    with pytest.raises(UsageError, match="2 slots"):
        with_slot("{} and {}")
    assert split("a face with {} and red hair") == ("a face with", "and red hair")
    # the context in words: the slot and the joining word that went with it removed
    assert words("a face with {} and red hair") == "a face with red hair"
    assert words("a face with a smile and {}") == "a face with a smile"
    assert words("a face with {}") == "a face"
    assert words("a close-up photo of a face, {}") == "a close-up photo of a face"
    assert all("{}" in c for ts in TEMPLATES.values() for c in ts)


def test_contexts_file(tmp_path) -> None:
    f = tmp_path / "ctx.txt"
    f.write_text("# faces\na photo of {}\n\na face\n")
    assert resolve(str(f)) == ("a photo of {}", "a face {}")
    assert resolve("faces") == TEMPLATES["faces"]
    with pytest.raises(UsageError, match="neither a built-in set"):
        resolve(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UsageError, match="holds no context"):
        resolve(str(tmp_path / "empty.txt"))


def test_toy_contexts() -> None:
    got = contexts("mustache", 40, seed=1)
    assert got[0] == "a face with {}" and len(got) == 40 and got == contexts("mustache", 40, seed=1)
    assert all(c.count("{}") == 1 and "mustache" not in c for c in got)
    assert len({c.index("{}") for c in got}) > 3  # the slot moves among the phrases
    assert held_context("glasses", {"mustache": 1, "glasses": 0, "smile": 0, "hair": 2}) == \
        "a face with {} and a mustache and no smile and red hair"


def test_token_in_context_is_the_word_in_the_prompt(tiny_sd) -> None:
    """A word's own embedding in the slot gives exactly the prompt with that word: a learned vector in a context is
    a textual-inversion token in that prompt."""
    fam = tiny_sd.family
    ctx = ["a face with {}", "a {} face with glasses"]
    vec = torch.stack([fam.word_vector("mustache"), fam.word_vector("smile")])
    got = fam.encode_in_context(ctx, vec).hidden
    want = fam.encode_prompts(["a face with mustache", "a smile face with glasses"]).hidden
    assert torch.equal(got, want)
    words_only = fam.encode_prompts(["a face", "a face with glasses"]).hidden
    assert torch.equal(fam.encode_in_context(ctx, None).hidden, words_only)


def test_output_delta_touches_its_slot_only(tiny_sd) -> None:
    fam = tiny_sd.family
    ctx = ["a face with {} and glasses", "{} a face"]
    base = fam.encode_in_context(ctx, None, "output").hidden
    delta = torch.randn(2, fam.context_width("output"), generator=torch.Generator().manual_seed(0))
    got = fam.encode_in_context(ctx, delta, "output").hidden
    changed = (got - base).abs().sum(-1) > 0
    ids, pos = conditioning.context_ids(tiny_sd.family.tokenizer, ctx)
    assert pos.tolist() == [4, 1]
    assert changed.sum(1).tolist() == [1, 1] and changed[0, 4] and changed[1, 1]
    assert torch.allclose(got[0, 4] - base[0, 4], delta[0], atol=1e-6)


def test_placement_and_family_checks(tiny_sd, tiny_xl) -> None:
    with pytest.raises(UsageError, match="placement"):
        tiny_sd.family.encode_in_context(["a {}"], None, "middle")
    with pytest.raises(UsageError, match="not available for sdxl"):
        tiny_xl.family.encode_in_context(["a {}"], None)
    assert LearnConfig(placement="x", max_norm=0).problems() == [
        ("placement", "must be token or output, got 'x'"), ("max_norm", "must be positive, got 0")]


@pytest.fixture(scope="module")
def classifier() -> AttributeClassifier:
    return tiny_classifier()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return random_images(4)


def test_in_context_loss_is_the_difference_from_the_context(tiny_sd, classifier, images) -> None:
    """With w = 1 the estimate is the class branch alone, whatever the base; with w = 0 it is the context's own
    estimate, so the loss no longer depends on the vectors (zero gradient)."""
    from caso_cli.pipelines.generate import encode_images

    z0 = encode_images(tiny_sd, images[:2])
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 1])
    ctx = ["a face with {}", "a face with {} and glasses"]
    c_null = tiny_sd.family.null_condition()
    v = torch.randn(2, 16, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    cfg = LearnConfig(contexts=tuple(ctx), train_scale=0.0)
    loss, _ = caso_loss(tiny_sd, classifier, v, z0, targets, noise, c_null, cfg, contexts=ctx)
    loss.backward()
    assert v.grad is not None and v.grad.abs().max() == 0
    v.grad = None
    loss, _ = caso_loss(tiny_sd, classifier, v, z0, targets, noise, c_null, dataclasses.replace(cfg, train_scale=3.0),
                        contexts=ctx)
    loss.backward()
    assert v.grad.abs().sum() > 0
    # w = 1: the estimate of the context with the vector in its slot, whatever the base
    from caso_cli.diffusion import add_noise, predict_x0

    got, _ = caso_loss(tiny_sd, classifier, v, z0, targets, noise, c_null, dataclasses.replace(cfg, train_scale=1.0),
                       contexts=ctx)
    t, level = cfg.t_train, tiny_sd.schedule.level(cfg.t_train)
    z_t = add_noise(z0, noise, level)
    eps = tiny_sd.eps(z_t, t, tiny_sd.family.encode_in_context(ctx, v[targets]))
    x = tiny_sd.decode_latents(predict_x0(z_t, eps, level))
    assert torch.isclose(got, torch.nn.functional.cross_entropy(classifier(x), targets), atol=1e-5)


@pytest.mark.slow
def test_learning_in_context_with_a_norm_cap(tiny_sd, classifier, images) -> None:
    word = float(tiny_sd.family.token_table().norm(dim=1).mean())
    cfg = LearnConfig(steps=6, batch_size=2, checkpoint_every=0, contexts=("a face with {}", "a {} face"),
                      max_norm=0.5, lr=0.5)
    res = learn_embedding(tiny_sd, classifier, images, cfg)
    assert res.vectors.shape == (2, 16)
    assert torch.allclose(res.vectors.norm(dim=1), torch.full((2,), 0.5 * word), rtol=1e-4)
    free = learn_embedding(tiny_sd, classifier, images, dataclasses.replace(cfg, max_norm=None)).vectors
    assert (free.norm(dim=1) > 0.5 * word).all()
    out = learn_embedding(tiny_sd, classifier, images, dataclasses.replace(cfg, placement="output", max_norm=None))
    assert out.vectors.shape == (2, tiny_sd.family.context_width("output"))
    with pytest.raises(UsageError, match="together cannot be learned in context"):
        learn_embedding(tiny_sd, [classifier, classifier], images, cfg)


# ---- entries learned in context, through the registry and the command line --------------------------------------


@pytest.fixture()
def ctx_registry(tiny_sd, tiny_model_dir, tmp_path) -> dict[str, object]:
    """'ctx-mustache' learned in context (token), 'ctx-out' as an output delta, 'whole' as the paper's whole prompt,
    and 'smile' (held; classifier attribute 'smile')."""
    from caso_cli.io.files import file_sha256
    from caso_cli.registry import save_embedding

    te = tiny_sd.family.encoder_hash()
    clf = tiny_classifier_file(tmp_path / "smile.safetensors", ("no_smile", "smile"), 5, "smile")
    common = {"model": str(tiny_model_dir), "text_encoder_hash": te}
    g = torch.Generator().manual_seed(0)
    vec = {"ctx-mustache": torch.randn(2, 16, generator=g), "ctx-out": torch.randn(2, 16, generator=g),
           "whole": torch.randn(2, 16, generator=g), "smile": torch.randn(2, 16, generator=g)}
    save_embedding("ctx-mustache", vec["ctx-mustache"], {**common, "classes": ["no_mustache", "mustache"],
                   "hyperparameters": {"contexts": ["a face with {}", "a {} face"], "placement": "token"}})
    save_embedding("ctx-out", vec["ctx-out"], {**common, "classes": ["no_mustache", "mustache"],
                   "hyperparameters": {"contexts": ["a face with {}"], "placement": "output"}})
    save_embedding("whole", vec["whole"], {**common, "classes": ["no_glasses", "glasses"]})
    save_embedding("smile", vec["smile"], {**common, "classes": ["no_smile", "smile"],
                   "classifier": {"path": str(clf), "sha256": file_sha256(clf)}})
    return {"vectors": vec, "smile_clf": clf}


def test_context_guidance_is_the_difference_from_the_context(tiny_sd, ctx_registry) -> None:
    from caso_cli.attrs import resolve_attrs
    from caso_cli.pipelines.batch_edit import edit_guidance, prepare_holding
    from caso_cli.registry import load_embedding

    attrs = resolve_attrs(["ctx-mustache"], 3.0)
    contrast, held = edit_guidance(tiny_sd, attrs, None)
    assert held == [] and contrast.terms == [(3.0, 1, 0)]
    fam = tiny_sd.family
    v = ctx_registry["vectors"]["ctx-mustache"]
    assert torch.equal(contrast.conds[0].hidden, fam.encode_prompts(["a face"]).hidden)  # the entry's first context
    assert torch.equal(contrast.conds[1].hidden, fam.encode_in_context(["a face with {}"], v[1]).hidden)
    contrast, _ = edit_guidance(tiny_sd, attrs, None, context="a smile face")  # no slot: the token goes last
    assert torch.equal(contrast.conds[1].hidden, fam.encode_in_context(["a smile face {}"], v[1]).hidden)
    # held: each image's context names the held classes its classifier reads, in words
    holding = prepare_holding(tiny_sd, attrs, [load_embedding("smile")])
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    contrast, held = edit_guidance(tiny_sd, attrs, holding, x)
    words = [{"no_smile": "no smile", "smile": "smile"}[h["smile"]] for h in held]
    rows = [f"a face with {{}} and {w}" for w in words]
    assert torch.equal(contrast.conds[0].hidden, fam.encode_in_context(rows, None).hidden)
    assert torch.equal(contrast.conds[1].hidden, fam.encode_in_context(rows, v[1]).hidden)
    with pytest.raises(UsageError, match="one at a time"):
        edit_guidance(tiny_sd, resolve_attrs(["ctx-mustache", "whole"], 3.0), None)
    with pytest.raises(UsageError, match="cannot be edited together"):
        edit_guidance(tiny_sd, resolve_attrs(["ctx-mustache", "ctx-out"], 3.0), None)


def test_output_entries_do_not_export(ctx_registry, tmp_path) -> None:
    from caso_cli.textual_inversion import export

    with pytest.raises(UsageError, match="no textual-inversion file can hold"):
        export("ctx-out", tmp_path / "x")
    assert [p.name for p in export("ctx-mustache", tmp_path / "y")] == ["<no_mustache>.safetensors",
                                                                        "<mustache>.safetensors"]


@pytest.mark.slow
def test_cli_learns_and_edits_in_context(ctx_registry, tiny_model_dir, tmp_path, capsys) -> None:
    import json

    from PIL import Image

    from caso_cli.io.png import read_png_metadata
    from caso_cli.toyworld.render import render_faces
    from tests.tiny import learn_inputs, run_main

    folder, clf = learn_inputs(tmp_path)
    ctx_file = tmp_path / "ctx.txt"
    ctx_file.write_text("a face with {}\na {} face with glasses\n")
    code, out, err = run_main(["embed", "learn", str(folder), "-c", str(clf), "-n", "learned", "--model",
                               str(tiny_model_dir), "--steps", "2", "--check-samples", "1", "--restarts", "0",
                               "--contexts", str(ctx_file), "--max-norm", "3", "--json"], capsys)
    assert code == 0, err
    code, out, _ = run_main(["embed", "show", "learned"], capsys)  # key-value lines, as classifier show prints
    lines = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines() if len(line.split()) > 1}
    assert lines["hyperparameters.placement"] == "token" and lines["classes"] == "no_x, x"
    assert "{" not in out.replace("{}", "")  # no JSON or dict reprs (a context's slot aside)
    code, out, _ = run_main(["embed", "show", "learned", "--json"], capsys)
    hp = json.loads(out)["hyperparameters"]
    assert hp["contexts"] == ["a face with {}", "a {} face with glasses"] and hp["placement"] == "token"
    assert hp["max_norm"] == 3.0
    code, _, err = run_main(["embed", "learn", str(folder), "-c", str(clf), "-n", "x", "--model",
                             str(tiny_model_dir), "--contexts", "nowhere.txt"], capsys)
    assert code == UsageError.exit_code and "neither a built-in set" in err
    # the default, auto: the toy caption grammar for a toy attribute on the toy model, else the whole prompt
    toy_clf = tiny_classifier_file(tmp_path / "m.safetensors", ("no_mustache", "mustache"), 0, "mustache")
    for name, args, want in (("auto-toy", ["--model", "toy"], contexts("mustache")),
                             ("auto-tiny", ["--model", str(tiny_model_dir)], ())):
        code, _, err = run_main(["embed", "learn", str(folder), "-c", str(toy_clf), "-n", name, *args, "--steps", "1",
                                 "--check-samples", "0"], capsys)
        assert code == 0, err
        code, out, _ = run_main(["embed", "show", name, "--json"], capsys)
        assert json.loads(out)["hyperparameters"]["contexts"] == list(want)

    face = tmp_path / "face.png"
    Image.fromarray(render_faces(1, seed=4)[0][0]).save(face)
    code, out, err = run_main(["edit", str(face), "--attr", "ctx-mustache", "--hold", "smile", "--context",
                               "a face with {}", "--out", str(tmp_path / "o"), "--json", "--steps", "4"], capsys)
    assert code == 0, err
    row = json.loads(out)
    assert set(row["held"]) == {"smile"} and Path(row["output"]).is_file()
    meta = read_png_metadata(row["output"])
    assert meta["caso:embeddings"] == "ctx-mustache" and meta["caso:context"] == "a face with {}"
