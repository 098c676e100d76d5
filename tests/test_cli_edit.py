"""`caso edit` on the tiny model: names, provenance, batches, stdin, resume, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from caso_cli.io.png import read_png_metadata
from caso_cli.registry import save_embedding
from tests.tiny import run_main, tiny_classifier_file


@pytest.fixture()
def embedding(tiny_sd, tiny_model_dir) -> str:
    v = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    save_embedding("mustache", v, {"classes": ["no_mustache", "mustache"], "model": str(tiny_model_dir),
                                   "text_encoder_hash": tiny_sd.family.encoder_hash()})
    save_embedding("hair", torch.randn(3, 16), {"classes": ["black", "blond", "red"], "model": str(tiny_model_dir),
                                                "text_encoder_hash": tiny_sd.family.encoder_hash()})
    return "mustache"


@pytest.fixture()
def photos(tmp_path) -> list[Path]:
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        p = tmp_path / "in" / f"p{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", (40, 48), colour).save(p)
        paths.append(p)
    return paths


FAST = ["--steps", "4", "--device", "cpu"]


def test_edit_writes_named_outputs_with_provenance(embedding, photos, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_main(["edit", str(photos[0]), str(photos[1]), "--attr", "mustache", "--scale", "5",
                                  "--out", str(out), "--json", *FAST], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [Path(r["output"]).name for r in rows] == ["p0.mustache.5.png", "p1.mustache.5.png"]
    assert rows[0]["class"] == ["mustache"] and rows[0]["scale"] == [5.0]
    meta = read_png_metadata(rows[0]["output"])
    assert meta["caso:embeddings"] == "mustache" and meta["caso:classes"] == "mustache"
    assert meta["caso:scales"] == "5" and meta["caso:steps"] == "4" and meta["caso:start"] == "0.6"
    assert meta["caso:inversion_refine"] == "1"
    assert Image.open(rows[0]["output"]).size == (32, 32)
    assert "2 edited, 0 skipped, 0 failed" in err


@pytest.mark.slow
def test_existing_outputs_resume_and_errors(embedding, photos, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["edit", str(photos[0]), "--attr", "mustache=-3", "--out", str(out), *FAST]
    assert run_main(args, capsys)[0] == 0
    target = out / "p0.mustache.-3.png"
    before = target.read_bytes()
    code, stdout, err = run_main([*args, "--json"], capsys)
    assert code == 1 and "exists (use --overwrite or --skip-existing)" in err
    row = json.loads(stdout)  # a failed input's record points at no file, even where one of that name exists
    assert row["status"] == "error" and row["output"] is None
    code, stdout, err = run_main([*args, "--skip-existing", "-q"], capsys)
    assert code == 0 and stdout.strip() == str(target) and "0 edited, 1 skipped, 0 failed" in err
    assert target.read_bytes() == before
    code, _, _ = run_main([*args, "--overwrite"], capsys)
    assert code == 0


def test_bad_input_is_reported_and_the_rest_go_on(embedding, photos, tmp_path, capsys) -> None:
    broken = tmp_path / "in" / "broken.png"
    broken.write_text("not an image")
    out = tmp_path / "out"
    code, stdout, err = run_main(["edit", str(photos[0]), str(broken), str(tmp_path / "missing.png"), "--attr",
                                  "mustache", "--out", str(out), "-q", *FAST], capsys)
    assert code == 1
    assert stdout.splitlines() == [str(out / "p0.mustache.5.png")]
    assert f"Error: {broken}: not an image file" in err and "missing.png: no such file" in err
    assert "1 edited, 0 skipped, 2 failed" in err
    assert not (out / "broken.mustache.5.png").exists()


@pytest.mark.slow
def test_odd_files_in_a_folder_batch(embedding, tmp_path) -> None:
    """A real `caso edit` process on a folder with a 1x1 image, a symlink loop and a non-UTF-8 file name."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "odd"
    folder.mkdir()
    Image.new("RGB", (40, 48), (200, 30, 30)).save(folder / "a.png")
    Image.new("RGB", (1, 1), (30, 200, 30)).save(folder / "dot.png")
    os.symlink(folder / "loop2.png", folder / "loop1.png")
    os.symlink(folder / "loop1.png", folder / "loop2.png")
    raw = os.fsencode(str(folder)) + b"/caf\xe9.png"  # Latin-1 bytes: not a UTF-8 name
    Image.new("RGB", (40, 48), (30, 30, 200)).save(os.fsdecode(raw))
    out = tmp_path / "out"
    # a UTF-8 terminal whose stdout refuses undecodable names (as under en_US.UTF-8)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "caso_cli", "edit", str(folder), "--attr", "mustache", "--out",
                           str(out), "-q", *FAST], env=env, capture_output=True, timeout=300)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert f"Error: {folder / 'loop1.png'}: symbolic link loop\n" in err
    assert f"Error: {folder / 'loop2.png'}: symbolic link loop\n" in err
    assert "3 edited, 0 skipped, 2 failed" in err
    # stdout gives the file names as they are on disk, so `| xargs` finds them
    outputs = [os.fsencode(str(out)) + b"/" + n for n in (b"a.mustache.5.png", b"caf\xe9.mustache.5.png",
                                                          b"dot.mustache.5.png")]
    assert proc.stdout.splitlines() == outputs
    assert sorted(os.listdir(os.fsencode(str(out)))) == sorted(o.rsplit(b"/", 1)[1] for o in outputs)  # no temp
    assert Image.open(os.fsdecode(outputs[2])).size == (32, 32)
    assert read_png_metadata(os.fsdecode(outputs[1]))["caso:input"].endswith("caf\\xe9.png")


@pytest.mark.slow
def test_stdin_paths_and_multi_attr_names(embedding, photos, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(str(p) for p in photos[:2]) + "\n"))
    out = tmp_path / "out"
    code, stdout, err = run_main(["edit", "-", "--attr", "mustache", "--attr", "hair:blond", "--out", str(out),
                                  "-q", *FAST], capsys)
    assert code == 0, err
    assert [Path(p).name for p in stdout.split()] == ["p0.mustache+hair-blond.5.png", "p1.mustache+hair-blond.5.png"]
    code, stdout, _ = run_main(["edit", str(photos[2]), "--attr", "mustache=2", "--attr", "hair:red=4", "--out",
                                str(out), "-q", *FAST], capsys)
    assert code == 0 and Path(stdout.strip()).name == "p2.mustache+hair-red.2,4.png"


def test_an_image_piped_into_dash_is_one_line_before_any_model_load(embedding, photos, tmp_path, capsys,
                                                                    monkeypatch) -> None:
    """`cat photo.png | caso edit - ...` (a natural mistake: '-' reads paths) says so in one line, exit 2."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(photos[0].read_bytes()), encoding="utf-8"))
    code, out, err = run_main(["edit", "-", "--attr", "mustache", "--model", "nobody/none", "--out",
                               str(tmp_path / "o")], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["Error: '-' reads image paths from stdin, one per line, but stdin holds binary "
                                        "data; to edit one image give its path (or use a folder)"]


def test_a_folder_edit_includes_an_animated_gif_and_names_a_directory_that_looks_like_an_image(
        embedding, photos, tmp_path, capsys) -> None:
    folder = photos[0].parent
    frames = [Image.new("RGB", (40, 48), c) for c in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (folder / "shot.png").mkdir()
    out = tmp_path / "out"
    code, stdout, err = run_main(["edit", str(folder), str(folder / "shot.png"), "--attr", "mustache", "--out",
                                  str(out), "--json", *FAST], capsys)
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert code == 1, (stdout, err)  # one input failed
    assert [Path(r["input"]).name for r in rows if r["status"] == "ok"] == ["anim.gif", "p0.png", "p1.png",
                                                                                "p2.png"]
    assert f"{folder / 'shot.png'}: is a directory, not an image file" in err
    assert "4 edited, 0 skipped, 1 failed" in err
    # --json: one record per input, failures included, so a pipeline sees them
    failed = [r for r in rows if r["status"] == "error"]
    assert len(rows) == 5 and len(failed) == 1 and failed[0]["output"] is None
    assert failed[0]["input"] == str(folder / "shot.png") and failed[0]["error"].endswith("not an image file")
    # an edit draws nothing at random, so it takes no --seed and its records carry none
    assert all("seed" not in r for r in rows)
    code, _, err = run_main(["edit", str(folder), "--attr", "mustache", "--seed", "1", "--out", str(out), *FAST],
                            capsys)
    assert code == 2 and "No such option: --seed" in err


@pytest.mark.slow
def test_two_attributes_give_the_same_pixels_in_either_order(embedding, photos, tiny_sd, tmp_path, capsys) -> None:
    """The condition's tokens go in a canonical order, so --attr order changes only the file name..."""
    pixels = []
    for order in (["mustache", "hair:blond"], ["hair:blond", "mustache"]):
        out = tmp_path / "-".join(order)
        code, stdout, err = run_main(["edit", str(photos[0]), *[x for a in order for x in ("--attr", a)], "--scale",
                                      "5", "--out", str(out), "-q", *FAST], capsys)
        assert code == 0, err
        pixels.append(np.asarray(Image.open(stdout.strip())))
    assert np.array_equal(*pixels)
    # ...although the causal text encoder reads the two token orders differently
    from caso_cli.registry import load_embedding

    m, h = load_embedding("mustache").vectors[1], load_embedding("hair").vectors[1]
    ab, ba = (tiny_sd.family.encode_vectors(torch.stack(v)) for v in ((m, h), (h, m)))
    assert (ab.hidden - ba.hidden).abs().max() > 1e-3


@pytest.mark.slow
def test_a_scale_beyond_what_models_can_use_warns_once_and_still_edits(embedding, photos, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_main(["edit", str(photos[0]), "--attr", "mustache", "--scale", "1e6", "--out", str(out),
                                  *FAST], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("Warning: scale")]
    assert warnings == ["Warning: scale 1e+06 is beyond what a model can use (|scale| <= 15); past it images break "
                        "down into noise (docs/editing.md)"]
    code, _, err = run_main(["edit", str(photos[1]), "--attr", "mustache", "--scale", "15", "--out", str(out),
                             *FAST], capsys)
    assert code == 0 and "Warning: scale" not in err


@pytest.mark.slow
def test_photos_far_larger_than_the_model_say_so_once(embedding, photos, tmp_path, capsys) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(2):
        Image.new("RGB", (512, 384), (20, 90 * i, 50)).save(big / f"b{i}.png")
    code, _, err = run_main(["edit", str(big), str(photos[0]), "--attr", "mustache", "--out", str(tmp_path / "o"),
                             *FAST], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(
        "Warning: 2 input(s) were shrunk 12x or more to the model's 32 px (e.g. 512x384)"), err
    code, _, err = run_main(["edit", str(photos[1]), "--attr", "mustache", "--out", str(tmp_path / "o"), *FAST],
                            capsys)
    assert code == 0 and "Warning" not in err


def test_option_errors_before_loading_a_model(embedding, photos, tmp_path, capsys) -> None:
    cases = [
        (["--attr", "mustache", "--scale", "nan"], "--scale must be finite"),
        (["--attr", "hair"], "name one, e.g. --attr hair:red"),
        (["--attr", "hair:green"], "has no class 'green'"),
        (["--attr", "mustach"], "did you mean mustache"),
        (["--attr", "mustache", "--steps", "0"], "--steps must be at least 1, got 0"),
        (["--attr", "mustache", "--start", "1.5"], "--start must be a fraction"),
    ]
    for extra, message in cases:
        code, _, err = run_main(["edit", str(photos[0]), "--out", str(tmp_path / "o"), "--model", "nobody/none",
                                 *extra], capsys)
        assert code in (2, 3) and message in err, (extra, err)


@pytest.mark.slow
def test_start_or_steps_the_models_grid_cannot_take_is_one_line_before_any_input(embedding, tiny_model_dir, photos,
                                                                                 tmp_path, capsys) -> None:
    for extra, message in ((["--start", "1000"], "the start timestep must lie in 1..999 for this model, got 1000"),
                           (["--steps", "1001"], "the steps must lie in 1..1000 for this model, got 1001")):
        code, out, err = run_main(["edit", str(photos[0]), str(photos[1]), "--attr", "mustache", "--model",
                                   str(tiny_model_dir), "--out", str(tmp_path / "o"), *extra], capsys)
        assert code == 2 and err.strip().splitlines() == [f"Error: {message}"], err
        assert not (tmp_path / "o").exists()


def test_text_encoder_mismatch_is_a_clear_error(tiny_model_dir, photos, tmp_path, capsys) -> None:
    save_embedding("other", torch.randn(2, 16), {"classes": ["no_x", "x"], "model": "elsewhere",
                                                 "text_encoder_hash": "0" * 16})
    code, _, err = run_main(["edit", str(photos[0]), "--attr", "other", "--model", str(tiny_model_dir), "--out",
                             str(tmp_path / "o"), *FAST], capsys)
    assert code == 2 and "whose text encoder differs" in err


@pytest.mark.slow
def test_interpolate_one_inversion_all_scales(embedding, photos, tmp_path, capsys, monkeypatch) -> None:
    import caso_cli.pipelines.interpolate as E  # the module that calls it (an earlier test may have imported it)

    calls = []
    real = E.invert_latents
    monkeypatch.setattr(E, "invert_latents", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "sweep.png"
    code, stdout, err = run_main(["interpolate", str(photos[0]), "--attr", "mustache", "--scales", "-4:4:5",
                                  "--out", str(out), "--frames", str(tmp_path / "frames"), "--gif",
                                  str(tmp_path / "s.gif"), "--json", *FAST], capsys)
    assert code == 0, err
    assert calls == [1]
    row = json.loads(stdout)  # --json: one object naming everything written
    assert row["grid"] == str(out) and row["scales"] == [-4, -2, 0, 2, 4] and len(row["frames"]) == 5
    assert row["gif"] == str(tmp_path / "s.gif") and row["held"] == {} and row["input"] == str(photos[0])
    assert "5 scales from one inversion: -4, -2, 0, 2, 4" in err
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == sorted(
        f"p0.mustache.{s}.png" for s in ("-4", "-2", "0", "2", "4"))
    sheet = Image.open(out)
    assert sheet.width > 5 * 96 and read_png_metadata(out)["caso:scales"] == "-4,-2,0,2,4"
    assert Image.open(tmp_path / "s.gif").n_frames == 8


@pytest.mark.slow
def test_reconstruct_unguided_and_guided(embedding, photos, tmp_path, tiny_model_dir, capsys) -> None:
    out = tmp_path / "rec"
    code, stdout, err = run_main(["reconstruct", str(photos[0]), "--out", str(out), "-q", "--model",
                                  str(tiny_model_dir), *FAST], capsys)
    assert code == 0, err
    assert Path(stdout.strip()).name == "p0.recon.png" and "1 reconstructed" in err
    code, stdout, err = run_main(["reconstruct", str(photos[0]), "--attr", "hair:red", "--out", str(out), "-q",
                                  *FAST], capsys)
    assert code == 0 and Path(stdout.strip()).name == "p0.recon.hair-red.2.png"
    a = Image.open(out / "p0.recon.png").tobytes()
    b = Image.open(out / "p0.recon.hair-red.2.png").tobytes()
    assert a != b


@pytest.mark.slow
def test_generate_grid(embedding, tmp_path, capsys) -> None:
    out = tmp_path / "gen.png"
    code, stdout, err = run_main(["generate", "--attr", "mustache", "--n", "3", "--seed", "1", "--out", str(out),
                                  "--frames", str(tmp_path / "g"), *FAST], capsys)
    assert code == 0, err
    assert read_png_metadata(out)["caso:classes"] == "mustache"
    frames = sorted((tmp_path / "g").iterdir())
    assert len(frames) == 3 and Image.open(frames[0]).size == (32, 32)
    # the same seed gives the same images
    again = tmp_path / "gen2.png"
    run_main(["generate", "--attr", "mustache", "--n", "3", "--seed", "1", "--out", str(again), *FAST], capsys)
    assert Image.open(out).tobytes() == Image.open(again).tobytes()
    # --out DIR/: one PNG per image and the grid beside them
    code, stdout, err = run_main(["generate", "--attr", "mustache", "--n", "3", "--seed", "1", "--out",
                                  f"{tmp_path / 'd'}/", "--json", *FAST], capsys)
    row = json.loads(stdout)
    assert code == 0 and row["output"] == str(tmp_path / "d" / "mustache.1.grid.png")
    assert [Path(p).name for p in row["images"]] == [f"mustache.1.00{i}.png" for i in range(3)]
    assert Image.open(row["images"][0]).tobytes() == Image.open(frames[0]).tobytes()


@pytest.mark.slow
def test_inversion_cache_reuses_inversions_across_runs(embedding, photos, tmp_path, capsys, monkeypatch) -> None:
    import caso_cli.pipelines.batch_edit as B
    from caso_cli.io.paths import cache_dir

    calls = []
    real = B.invert_latents
    monkeypatch.setattr(B, "invert_latents", lambda sd, z0, cfg: calls.append(z0.shape[0]) or real(sd, z0, cfg))
    out = tmp_path / "out"
    base = ["edit", str(photos[0]), str(photos[1]), "--out", str(out), "--cache-inversions", "-q", *FAST]
    assert run_main([*base, "--attr", "mustache=2"], capsys)[0] == 0
    assert run_main([*base, "--attr", "mustache=-2"], capsys)[0] == 0
    assert calls == [2]  # the second run found both inversions on disk
    assert len(list((cache_dir() / "inversions").glob("*.safetensors"))) == 2
    uncached = tmp_path / "nocache"
    assert run_main(["edit", str(photos[0]), "--out", str(uncached), "--attr", "mustache=2", "-q", *FAST],
                    capsys)[0] == 0
    assert calls == [2, 1]
    import numpy as np

    cached = np.asarray(Image.open(out / "p0.mustache.2.png"), dtype=int)
    fresh = np.asarray(Image.open(uncached / "p0.mustache.2.png"), dtype=int)
    assert np.abs(cached - fresh).max() <= 1  # batch of 2 vs batch of 1: float rounding only
    # a plain (unrefined) inversion is another cache entry, not a hit on the refined one
    plain = tmp_path / "plain"
    assert run_main(["edit", str(photos[0]), "--out", str(plain), "--cache-inversions", "--inversion-refine", "0",
                     "--attr", "mustache=2", "-q", *FAST], capsys)[0] == 0
    assert calls == [2, 1, 1]
    assert len(list((cache_dir() / "inversions").glob("*.safetensors"))) == 3
    assert read_png_metadata(plain / "p0.mustache.2.png")["caso:inversion_refine"] == "0"


@pytest.fixture()
def nan_unet(monkeypatch):
    """Every UNet call returns NaN, as an fp16 overflow would."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    def forward(self, sample, *args, **kwargs):
        return UNet2DConditionOutput(sample=torch.full_like(sample, float("nan")))

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)


@pytest.mark.slow
def test_nan_never_writes_an_image(embedding, photos, tmp_path, nan_unet, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_main(["edit", str(photos[0]), str(photos[1]), "--attr", "mustache", "--out", str(out),
                                  *FAST], capsys)
    assert code == 1 and stdout == ""
    assert (f"Error: {photos[0]}: the edit produced NaN/inf values, so nothing was written; it happened in fp32, "
            "so check the model's weights\n") in err
    assert "0 edited, 0 skipped, 2 failed" in err
    assert not out.exists() or not list(out.iterdir())
    for args in (["generate", "--attr", "mustache", "--n", "2", "--out", str(tmp_path / "g.png")],
                 ["interpolate", str(photos[0]), "--attr", "mustache", "--scales", "-2,2", "--out",
                  str(tmp_path / "s.png")]):
        code, stdout, err = run_main([*args, *FAST], capsys)
        what = "generation" if args[0] == "generate" else "the sweep"
        assert code == 6 and stdout == "", err
        assert err == (f"Error: {what} produced NaN/inf values in 2 of 2 image(s), so nothing was written; "
                       "it happened in fp32, so check the model's weights\n")
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "s.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files either


def test_fp16_hint_names_fp32(tiny_sd) -> None:
    import dataclasses

    from caso_cli.errors import NumericalError
    from caso_cli.pipelines.generate import require_finite

    half = dataclasses.replace(tiny_sd, runtime=dataclasses.replace(tiny_sd.runtime, dtype=torch.float16))
    with pytest.raises(NumericalError, match=r"in 1 of 2 image\(s\).*try --dtype fp32"):
        require_finite(torch.tensor([[0.0], [float("inf")]]), half, "the edit")
    ok = torch.zeros(2, 3)
    assert require_finite(ok, tiny_sd, "x") is ok


def test_embedding_for_a_wider_text_encoder_is_refused(tiny_model_dir, photos, tmp_path, capsys) -> None:
    save_embedding("wide", torch.randn(2, 768), {"classes": ["no_wide", "wide"], "model": "runwayml/sd15"})
    code, stdout, err = run_main(["edit", str(photos[0]), "--attr", "wide", "--model", str(tiny_model_dir), "--out",
                                  str(tmp_path / "o"), *FAST], capsys)
    assert code == 2 and stdout == ""
    assert err == (f"Error: embedding 'wide' has 768-dim vectors but model {str(tiny_model_dir)!r} takes 16 (made "
                   "for another text encoder; use --model runwayml/sd15)\n")
    assert not (tmp_path / "o").exists()


def test_broken_files_and_options_fail_before_any_model_is_loaded(embedding, photos, tmp_path, capsys,
                                                                  monkeypatch) -> None:
    """One line and the documented exit code; `--model nobody/none` would be exit 4 if a model were loaded."""
    import dataclasses
    import json

    from safetensors.torch import save_file

    from caso_cli import registry as R
    from caso_cli.io.files import file_sha256

    def load_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("caso_cli.models.loaders.load_model", load_model)
    # a corrupted embedding file, and one whose shape does not fit its classes (hash recomputed to match)
    corrupt = R.save_embedding("corrupt", torch.randn(2, 16), {"classes": ["no_c", "c"]})
    (corrupt / R.EMBEDDING_FILE).write_bytes(b"\x00" * 40)
    shaped = R.save_embedding("shaped", torch.randn(2, 16), {"classes": ["no_s", "s"]})
    save_file({R.TENSOR_KEY: torch.randn(3, 16)}, str(shaped / R.EMBEDDING_FILE))
    meta = json.loads((shaped / R.META_FILE).read_text())
    meta["sha256"] = file_sha256(shaped / R.EMBEDDING_FILE)
    (shaped / R.META_FILE).write_text(json.dumps(meta))
    edit = ["edit", str(photos[0]), "--out", str(tmp_path / "o"), "--model", "nobody/none"]
    cases = [
        ([*edit, "--attr", "corrupt"], 3,
         f"{corrupt / R.EMBEDDING_FILE}: does not match its recorded sha256 (corrupted?)"),
        ([*edit, "--attr", "shaped"], 3,
         f"{shaped / R.EMBEDDING_FILE}: shape (3, 16) does not fit classes ['no_s', 's']"),
        ([*edit, "--attr", "mustache", "--scale", "inf"], 2, "--scale must be finite, got 'inf'"),
        ([*edit, "--attr", "mustache=-inf"], 2, "--attr 'mustache=-inf' scale must be finite, got '-inf'"),
        ([*edit, "--attr", "mustache", "--start", "0"], 2,
         "--start must be a fraction in (0, 1] or a whole timestep above 1, got 0"),
        ([*edit, "--attr", "hairr:red"], 3, "no embedding named 'hairr' in the registry (did you mean hair?)"),
    ]
    # classifiers: garbage bytes, and weights that do not fit the architecture its metadata names
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"garbage")
    good = tiny_classifier_file(tmp_path / "good.safetensors")
    from caso_cli.models.classifier import read_classifier_meta

    wrong = tmp_path / "wrong.safetensors"
    save_file({"head.weight": torch.zeros(2, 2)}, str(wrong),
              metadata={"caso_classifier": json.dumps(dataclasses.asdict(read_classifier_meta(good)))})
    learn = ["embed", "learn", str(photos[0].parent), "--name", "new", "--model", "nobody/none", "--device", "cpu"]
    cases += [
        ([*learn, "--classifier", str(garbage)], 3, f"{garbage}: not a safetensors classifier file"),
        ([*learn, "--classifier", str(wrong)], 3, f"{wrong}: weights do not fit the small-cnn architecture"),
    ]
    for args, want_code, message in cases:
        code, stdout, err = run_main(args, capsys)
        assert (code, stdout) == (want_code, ""), (args, err)
        assert err.startswith(f"Error: {message}") and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "o").exists() and "new" not in R.list_names()


@pytest.mark.slow
def test_rerun_into_the_input_folder_edits_no_edit(embedding, photos, capsys) -> None:
    folder = photos[0].parent
    args = ["edit", str(folder), "--attr", "mustache", "--out", str(folder), "--json", *FAST]
    code, stdout, err = run_main(args, capsys)
    assert code == 0, err
    first = sorted(p.name for p in folder.iterdir())
    code, stdout, err = run_main([*args, "--skip-existing"], capsys)
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert code == 0 and {r["status"] for r in rows} == {"skipped"} and len(rows) == len(photos)
    assert sorted(p.name for p in folder.iterdir()) == first  # no <stem>.mustache.5.mustache.5.png


def test_inputs_that_all_fail_are_reported_before_the_model_loads(capsys, monkeypatch, tmp_path) -> None:
    """Missing inputs are known before any model is loaded: one line each, exit 3 (an input error), no load."""
    import caso_cli.pipelines.batch_edit as batch_edit

    save_embedding("m", torch.randn(2, 16), {"classes": ["no_x", "x"], "model": "toy"})
    monkeypatch.setattr(batch_edit, "open_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = run_main(["edit", str(tmp_path / "missing.png"), "--attr", "m"], capsys)
    assert code == 3 and err.strip().splitlines() == [f"Error: {tmp_path / 'missing.png'}: no such file"]
    code, _, err = run_main(["reconstruct", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", "toy"],
                            capsys)
    assert code == 3 and err.strip().splitlines() == [
        f"Error: {tmp_path / 'a.png'}: no such file",
        f"Error: {tmp_path / 'b.png'}: no such file (no input of 2 can be read, so nothing was reconstructed)"]
