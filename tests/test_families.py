"""The model-family seam: conditions that carry every UNet input, and a family added as one module."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
import torch

from caso_cli import conditioning
from caso_cli.errors import ModelLoadError, UsageError
from caso_cli.families import Condition, family_for_pipeline, family_named, register_family
from caso_cli.families.sd import SD
from caso_cli.runtime import cpu_runtime


def _cond(rows: int, seed: int = 0, extra: bool = True) -> Condition:
    g = torch.Generator().manual_seed(seed)
    more = {"text_embeds": torch.randn(rows, 8, generator=g), "time_ids": torch.randn(rows, 6, generator=g)}
    return Condition(torch.randn(rows, 5, 4, generator=g), more if extra else {})


def test_a_condition_batches_expands_and_slices_every_input_together() -> None:
    a, b = _cond(1, 0), _cond(3, 1)
    both = Condition.cat([a.expand(2), b])
    assert both.batch == 5 and both.extra["time_ids"].shape == (5, 6)
    assert torch.equal(both.hidden[1], a.hidden[0])
    assert torch.equal(both.extra["text_embeds"][2:], b.extra["text_embeds"])
    assert torch.equal(both[3:4].extra["time_ids"], b.extra["time_ids"][1:2])
    assert b.expand(3) is b
    with pytest.raises(ValueError, match="3 rows cannot guide 2"):
        b.expand(2)
    with pytest.raises(ValueError, match="different families"):
        Condition.cat([a, _cond(1, extra=False)])


def test_sd_family_is_the_clip_encoding_and_found_by_its_pipeline(tiny_sd) -> None:
    assert isinstance(tiny_sd.family, SD) and tiny_sd.describe()["family"] == "sd"
    assert family_for_pipeline("StableDiffusionPipeline") is SD and family_for_pipeline(None) is SD
    assert family_for_pipeline("KandinskyPipeline") is None and family_named(None) is SD
    v = torch.randn(2, tiny_sd.token_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = tiny_sd.family.encode_vectors(v)
        ref = conditioning.encode_vectors(tiny_sd.family.text_encoder, tiny_sd.family.tokenizer, v)
    assert torch.equal(ours.hidden, ref) and not ours.extra
    assert tiny_sd.family.encoder_hash() == conditioning.table_hash(tiny_sd.family.text_encoder)
    assert tiny_sd.family.token_table().shape[1] == tiny_sd.token_dim == tiny_sd.family.vector_dim
    with pytest.raises(UsageError, match="single-token word"):
        tiny_sd.family.word_vector("a b c")


def test_a_pipeline_no_family_loads_is_one_clear_line(tiny_model_dir, tmp_path) -> None:
    from caso_cli.models.loaders import load_model

    folder = shutil.copytree(tiny_model_dir, tmp_path / "kandinsky")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    with pytest.raises(ModelLoadError, match=r"a KandinskyPipeline, which caso cannot load \(model families: sd"):
        load_model(str(folder), cpu_runtime())


class Shifted(SD):
    """A family added from outside caso: SD whose conditions come out shifted, to see that everything goes
    through the family (and not around it to the text encoder)."""

    name = "shifted"
    pipelines = ("ShiftedPipeline",)
    calls: list[str] = []

    def encode_vectors(self, vectors: torch.Tensor) -> Condition:
        Shifted.calls.append("vectors")
        return Condition(super().encode_vectors(vectors).hidden + 1.0)

    def null_condition(self) -> Condition:
        Shifted.calls.append("null")
        return Condition(super().null_condition().hidden + 1.0)

    @classmethod
    def export_tensors(cls, token: str, vector: torch.Tensor, fmt: str, widths: list[int]) -> dict[str, Any]:
        return {"shifted": vector}


@pytest.fixture
def shifted_family():
    from caso_cli.families import _FAMILIES

    register_family(Shifted)
    yield Shifted
    _FAMILIES.pop(Shifted.name)


def test_a_family_registered_from_outside_is_loaded_learned_for_edited_and_refused_elsewhere(
        shifted_family, tiny_model_dir, tiny_sd, tmp_path) -> None:
    from caso_cli.attrs import AttrSpec, ResolvedAttr
    from caso_cli.config import EditConfig
    from caso_cli.models.loaders import load_model
    from caso_cli.pipelines.edit import edit_latents, invert_latents
    from caso_cli.pipelines.guidance import attribute_guidance, cfg_guidance, check_model
    from caso_cli.registry import load_embedding, save_embedding
    from caso_cli.textual_inversion import export

    folder = shutil.copytree(tiny_model_dir, tmp_path / "shifted")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "ShiftedPipeline"}))
    sd = load_model(str(folder), cpu_runtime())
    assert isinstance(sd.family, Shifted) and sd.describe()["family"] == "shifted"

    save_embedding("sh", torch.randn(2, sd.token_dim), {"classes": ["no_x", "x"], "family": sd.family.name,
                                                        "text_encoder_hash": sd.family.encoder_hash()})
    emb = load_embedding("sh")
    attrs = [ResolvedAttr(spec=AttrSpec("sh", "x", 3.0), embedding=emb, index=1, scale=3.0)]
    check_model(attrs, sd)
    with pytest.raises(UsageError, match="learned for a model of family 'shifted'.*of family 'sd'"):
        check_model(attrs, tiny_sd)  # same text encoder, other family: refused
    Shifted.calls.clear()
    config = EditConfig(steps=4, start=1.0)
    z0 = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    edited = edit_latents(sd, invert_latents(sd, z0, config), attribute_guidance(sd, attrs), config)
    assert Shifted.calls.count("vectors") == 1 and Shifted.calls.count("null") == 2  # inversion and edit
    # the shift reaches the UNet: the same edit through the SD family differs
    with torch.no_grad():
        plain = edit_latents(tiny_sd, invert_latents(tiny_sd, z0, config), cfg_guidance(tiny_sd,
                             tiny_sd.family.encode_vectors(emb.vectors[1:2]), 3.0), config)
    assert (edited - plain).abs().max() > 1e-4
    from safetensors.torch import load_file

    files = export("sh", tmp_path / "ti")
    assert set(load_file(str(files[1]))) == {"shifted"}  # the family's own file layout
