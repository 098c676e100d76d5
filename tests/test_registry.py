"""The embedding registry: atomic entries, names, exports that load in diffusers, imports."""

from __future__ import annotations

import json

import pytest
import torch

from caso_cli import registry as R
from caso_cli import textual_inversion as TI
from caso_cli.conditioning import encode_vectors
from caso_cli.errors import InputError, UsageError


def _vectors(k: int = 2, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, d, generator=torch.Generator().manual_seed(seed))


def test_save_load_roundtrip_with_metadata() -> None:
    v = _vectors()
    path = R.save_embedding("mustache", v, {"classes": ["no_mustache", "mustache"], "model": "toy"})
    assert (path / R.EMBEDDING_FILE).is_file() and (path / R.META_FILE).is_file()
    emb = R.load_embedding("mustache")
    assert torch.equal(emb.vectors, v)
    assert emb.meta.tokens == ["<no_mustache>", "<mustache>"] and emb.meta.schema_version == R.SCHEMA_VERSION
    assert emb.meta.token_dim == 16 and len(emb.meta.sha256 or "") == 64 and emb.meta.family == "sd"
    assert emb.meta.model == "toy" and R.read_meta("mustache")["family"] == "sd"
    assert emb.index("MUSTACHE") == 1
    with pytest.raises(UsageError, match="no class 'beard'.*no_mustache, mustache"):
        emb.index("beard")
    assert R.list_names() == ["mustache"]
    assert [p.name for p in R.registry_dir().iterdir() if p.name.startswith(".")] == [".lock"]  # no temp leftovers


def test_metadata_is_typed_reads_schema_1_entries_and_keeps_unknown_keys() -> None:
    path = R.save_embedding("old", _vectors(), {"classes": ["no_x", "x"], "text_encoder_hash": "ab" * 8,
                                                "classifier": {"path": "/c.clf", "sha256": "f" * 64},
                                                "from_a_plugin": {"kept": True}})
    record = json.loads((path / R.META_FILE).read_text())
    record.pop("family")  # as schema 1 entries are: no family
    record["schema_version"] = 1
    (path / R.META_FILE).write_text(json.dumps(record))
    meta = R.load_embedding("old").meta
    assert meta.family == "sd" and meta.schema_version == 1 and meta.text_encoder_hash == "ab" * 8
    assert meta.classifier == R.ClassifierRecord(path="/c.clf", sha256="f" * 64)
    assert meta.extra == {"from_a_plugin": {"kept": True}} and meta.to_json()["from_a_plugin"] == {"kept": True}
    record["schema_version"] = R.SCHEMA_VERSION + 1
    (path / R.META_FILE).write_text(json.dumps(record))
    with pytest.raises(InputError, match="newer than this caso reads"):
        R.load_embedding("old")
    record.update(schema_version=1, classes="no_x,x")
    (path / R.META_FILE).write_text(json.dumps(record))
    with pytest.raises(InputError, match="classes must be a list"):
        R.load_embedding("old")


def test_existing_entry_needs_force() -> None:
    R.save_embedding("a", _vectors(seed=1), {"classes": ["x", "y"]})
    with pytest.raises(UsageError, match="--force"):
        R.save_embedding("a", _vectors(seed=2), {"classes": ["x", "y"]})
    assert torch.equal(R.load_embedding("a").vectors, _vectors(seed=1))
    R.save_embedding("a", _vectors(seed=2), {"classes": ["x", "y"]}, force=True)
    assert torch.equal(R.load_embedding("a").vectors, _vectors(seed=2))
    assert sorted(p.name for p in R.registry_dir().iterdir()) == [".lock", "a"]


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "A", "x" * 65, ".hidden", "a..b", "sp ace"])
def test_names_cannot_escape(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid embedding name"):
        R.save_embedding(bad, _vectors(), {"classes": ["x", "y"]})


def test_missing_entry_suggests_close_names() -> None:
    R.save_embedding("mustache", _vectors(), {"classes": ["no", "yes"]})
    with pytest.raises(InputError, match="did you mean mustache"):
        R.load_embedding("mustach")


def test_corrupted_file_is_detected() -> None:
    path = R.save_embedding("c", _vectors(), {"classes": ["x", "y"]})
    data = bytearray((path / R.EMBEDDING_FILE).read_bytes())
    data[-1] ^= 0xFF
    (path / R.EMBEDDING_FILE).write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        R.load_embedding("c")


def test_diffusers_export_loads_with_load_textual_inversion(tiny_model_dir, tmp_path) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), safety_checker=None,
                                                   requires_safety_checker=False)
    v = _vectors(d=16, seed=3)
    R.save_embedding("mustache", v, {"classes": ["no_mustache", "mustache"]})
    files = TI.export("mustache", tmp_path / "ti", "diffusers")
    assert [f.name for f in files] == ["<no_mustache>.safetensors", "<mustache>.safetensors"]
    with torch.no_grad():
        ours = encode_vectors(pipe.text_encoder, pipe.tokenizer, v[1:2])
        for f in files:
            pipe.load_textual_inversion(str(f))
        ref = pipe.encode_prompt("<mustache>", "cpu", 1, False)[0]
    assert (ours - ref).abs().max().item() <= 1e-5


def test_a1111_export_round_trips_through_import(tmp_path) -> None:
    v = _vectors(k=3, seed=4)
    R.save_embedding("hair", v, {"classes": ["black", "blond", "red"], "model": "toy"})
    files = TI.export("hair", tmp_path / "a1111", "a1111")
    assert [f.name for f in files] == ["black.safetensors", "blond.safetensors", "red.safetensors"]
    from safetensors.torch import load_file

    assert list(load_file(str(files[0]))) == ["emb_params"] and load_file(str(files[0]))["emb_params"].shape == (1, 16)
    TI.import_files(files, "hair2")
    back = R.load_embedding("hair2")
    assert torch.equal(back.vectors, v) and back.classes == ["black", "blond", "red"]
    with pytest.raises(InputError, match="exists"):
        TI.export("hair", tmp_path / "a1111", "a1111")


def test_import_refuses_pickles_and_mixed_sizes(tmp_path) -> None:
    from safetensors.torch import save_file

    (tmp_path / "x.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match="pickles"):
        TI.import_files([tmp_path / "x.pt", tmp_path / "x.pt"], "x")
    save_file({"<a>": torch.zeros(16)}, str(tmp_path / "a.safetensors"))
    save_file({"<b>": torch.zeros(8)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(InputError, match="different sizes"):
        TI.import_files([tmp_path / "a.safetensors", tmp_path / "b.safetensors"], "ab")


def test_meta_is_json_with_provenance() -> None:
    path = R.save_embedding("p", _vectors(), {"classes": ["x", "y"], "hyperparameters": {"lr": 0.01}})
    meta = json.loads((path / R.META_FILE).read_text())
    assert meta["hyperparameters"] == {"lr": 0.01} and meta["name"] == "p" and "created" in meta


def test_verify_reports_broken_entries(capsys) -> None:
    from tests.tiny import run_main

    R.save_embedding("good", _vectors(), {"classes": ["x", "y"]})
    path = R.save_embedding("bad", _vectors(), {"classes": ["x", "y"]})
    (path / R.EMBEDDING_FILE).write_bytes(b"broken")
    assert R.verify() == {"bad": f"{path / R.EMBEDDING_FILE}: does not match its recorded sha256 (corrupted?)",
                          "good": "ok"}
    code, out, err = run_main(["embed", "verify"], capsys)
    assert code == 1 and "1 ok, 1 broken" in err


@pytest.mark.slow
def test_concurrent_saves_leave_one_valid_entry(tmp_path) -> None:
    """Four processes save the same name at once: one wins, the others fail with a clear error."""
    import os
    import subprocess
    import sys

    code = ("import sys, torch; from caso_cli.registry import save_embedding; from caso_cli.errors import CasoError\n"
            "try:\n    save_embedding('same', torch.full((2, 16), float(sys.argv[1])), {'classes': ['x', 'y']})\n"
            "except CasoError as e:\n    print(e); sys.exit(2)\n")
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, stdout=subprocess.PIPE, text=True)
             for i in range(4)]
    results = [(p.wait(timeout=120), p.stdout.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2, 2, 2]
    assert all("exists (use --force" in out for rc, out in results if rc == 2)
    emb = R.load_embedding("same")
    winner = next(i for i, (rc, _) in enumerate(results) if rc == 0)
    assert torch.equal(emb.vectors, torch.full((2, 16), float(winner)))
    assert [p.name for p in R.registry_dir().iterdir() if p.name != ".lock"] == ["same"]


_KILLER = """
import os, shutil, signal, sys, torch
from caso_cli.registry import save_embedding
kill_at, value = int(sys.argv[1]), float(sys.argv[2])
count = 0
def counted(fn):
    def wrapper(*args, **kwargs):
        global count
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapper
os.fsync, os.replace, shutil.rmtree = counted(os.fsync), counted(os.replace), counted(shutil.rmtree)
save_embedding('x', torch.full((2, 16), value), {'classes': ['no_x', 'x']}, force=True)
"""


def _entry_value() -> float:
    """The entry's value after a (possibly killed) save: it loads, verifies and holds one constant."""
    assert R.list_names() == ["x"]
    assert R.verify() == {"x": "ok"}
    vectors = R.load_embedding("x").vectors
    assert vectors.shape == (2, 16) and bool((vectors == vectors[0, 0]).all())
    return float(vectors[0, 0])


@pytest.mark.slow
def test_kill_9_at_every_step_of_a_save_leaves_old_or_new_entry() -> None:
    """A real process replaces an entry and SIGKILLs itself before its k-th fsync/rename/rmtree, for every k."""
    import os
    import subprocess
    import sys

    R.save_embedding("x", torch.full((2, 16), 1.0), {"classes": ["no_x", "x"]})
    seen = set()
    for k in range(1, 20):
        proc = subprocess.run([sys.executable, "-c", _KILLER, str(k), "2"], env={**os.environ}, timeout=120,
                              capture_output=True, text=True)
        if proc.returncode == 0:  # k is past the last step: the save completed
            assert _entry_value() == 2.0
            break
        assert proc.returncode == -9, proc.stderr
        value = _entry_value()
        seen.add(value)
        R.save_embedding("x", torch.full((2, 16), 1.0), {"classes": ["no_x", "x"]}, force=True)
    else:
        raise AssertionError("the save never completed")
    assert k > 4 and seen == {1.0, 2.0}  # killed before and after the new entry went in
    assert not list(R.registry_dir().glob(".*.old"))


@pytest.mark.slow
def test_kill_9_at_random_moments_of_saves_in_a_loop() -> None:
    import os
    import random
    import subprocess
    import sys
    import time

    loop = ("import sys, torch\nfrom caso_cli.registry import save_embedding\nprint('go', flush=True)\ni = 0\n"
            "while True:\n    i += 1\n    save_embedding('x', torch.full((2, 16), float(i % 7)), "
            "{'classes': ['no_x', 'x']}, force=True)\n")
    R.save_embedding("x", torch.full((2, 16), 0.0), {"classes": ["no_x", "x"]})
    rng = random.Random(8)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", loop], env={**os.environ}, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()
        assert _entry_value() in {float(v) for v in range(7)}
