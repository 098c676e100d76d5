"""What a newcomer reads: CLI messages say flags, failures exit with their documented code, output has no reprs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.tiny import readme_pipe_examples, run_main, tiny_classifier_file

ROOT = Path(__file__).resolve().parent.parent


def test_render_into_a_used_folder_names_the_flag_and_the_library_the_value(tmp_path, capsys) -> None:
    from caso_cli.errors import OutputExists
    from caso_cli.toyworld.render import write_dataset

    out = tmp_path / "toy"
    assert run_main(["toyworld", "render", str(out), "--n", "2"], capsys)[0] == 0
    code, _, err = run_main(["toyworld", "render", str(out), "--n", "2"], capsys)
    assert code == 3
    assert err == f"Error: {out}: not empty (use --overwrite to replace the files a previous render wrote)\n"
    with pytest.raises(OutputExists, match="overwrite=True") as raised:
        write_dataset(out, 2, seed=0)
    assert "--overwrite" not in str(raised.value)


def test_oracle_exits_1_when_an_image_has_no_face(tmp_path, capsys) -> None:
    from PIL import Image

    from caso_cli.errors import EXIT_CHECK_FAILED
    from caso_cli.toyworld.render import write_dataset

    write_dataset(tmp_path / "toy", 1, seed=0)
    face = str(tmp_path / "toy" / "images" / "000000.png")
    blank = str(tmp_path / "photo.png")
    Image.new("RGB", (32, 32), "white").save(blank)
    code, out, err = run_main(["toyworld", "oracle", face], capsys)
    assert code == 0 and "face=not-found" not in out and err == ""
    for extra in ([], ["--json"]):
        code, out, err = run_main(["toyworld", "oracle", face, blank, *extra], capsys)
        assert code == EXIT_CHECK_FAILED and len(out.splitlines()) == 2, err  # both images are still read
        assert err.splitlines() == [f"Error: {blank}: no toy face found, so its readings mean nothing (the oracle "
                                    "reads the toy world's 32x32 faces)"]


def test_attr_with_two_classes_is_a_bad_attr(tmp_path, capsys) -> None:
    from caso_cli.attrs import parse_attr
    from caso_cli.errors import UsageError

    message = "bad --attr 'a:b:c': use NAME, NAME:CLASS, NAME=SCALE or NAME:CLASS=SCALE"
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_attr("a:b:c")
    code, _, err = run_main(["edit", str(tmp_path / "x.png"), "--attr", "a:b:c"], capsys)
    assert code == 2 and err == f"Error: {message}\n"
    assert parse_attr("hair:blond=5") == parse_attr(" hair:blond=5 ")  # the documented forms still parse


def test_learn_names_every_bad_value_with_its_flag(tmp_path, capsys, monkeypatch) -> None:
    import caso_cli.pipelines.embed as embed
    from caso_cli.config import LearnConfig
    from caso_cli.errors import UsageError

    monkeypatch.setattr(embed, "run_embed_job", lambda *a, **k: pytest.fail("learning started"))
    base = ["embed", "learn", str(tmp_path / "no-data"), "--classifier", str(tmp_path / "no.safetensors"), "--name",
            "x"]
    code, _, err = run_main([*base, "--batch-size", "0", "--steps", "0", "--checkpoint-every", "-1", "--lr", "0"],
                            capsys)
    assert code == 2 and err == ("Error: --batch-size must be at least 1, got 0; --steps must be at least 1, got 0; "
                                 "--checkpoint-every must be 0 or more, got -1; --lr must be positive, got 0\n")
    with pytest.raises(UsageError, match=r"^batch_size must be at least 1, got 0; epochs must be positive, got 0$"):
        LearnConfig(batch_size=0, epochs=0).check()


def _classifier_file(path: Path) -> Path:
    return tiny_classifier_file(path, ("no_smile", "smile"), attr="smile",
                                metrics={"val_accuracy": 0.975, "n_val": 40})


def test_classifier_file_as_model_is_refused_before_loading(tmp_path, capsys, monkeypatch) -> None:
    import caso_cli.models.loaders as loaders

    monkeypatch.setattr(loaders, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    clf = _classifier_file(tmp_path / "smile.safetensors")
    for model in ("mustache.clf", "mustache.clf.safetensors", str(clf)):
        code, out, err = run_main(["model", "info", "--model", model], capsys)
        assert code == 2 and out == "", err
        assert err.startswith(f"Error: {model}: that is a classifier file; --model takes a Stable Diffusion model")
        assert "Hugging Face" not in err and err.count("\n") == 1
    monkeypatch.setenv("CASO_MODEL", "mustache.clf")
    assert run_main(["model", "info"], capsys)[0] == 2


def test_classifier_show_prints_key_value_lines(tmp_path, capsys) -> None:
    clf = _classifier_file(tmp_path / "smile.safetensors")
    code, out, err = run_main(["classifier", "show", str(clf)], capsys)
    assert code == 0, err
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())
    assert fields["classes"] == "no_smile, smile" and fields["mean"] == "0.5, 0.5, 0.5"
    assert fields["metrics.val_accuracy"] == "0.975" and fields["metrics.n_val"] == "40"
    assert not re.search(r"[\[\]{}']", out), out  # no list, dict or string reprs


def test_embed_list_has_a_header(capsys, monkeypatch) -> None:
    import caso_cli.registry as registry

    metas = {"toy-mustache": {"classes": ["no_mustache", "mustache"], "model": "toy"}}
    monkeypatch.setattr(registry, "list_names", lambda: list(metas))
    monkeypatch.setattr(registry, "read_meta", lambda name: metas[name])
    code, out, _ = run_main(["embed", "list"], capsys)
    assert code == 0 and [line.split() for line in out.splitlines()] == [
        ["NAME", "CLASSES", "MODEL"], ["toy-mustache", "no_mustache,", "mustache", "toy"]]
    assert run_main(["embed", "list", "--json"], capsys)[1].startswith('{"name": "toy-mustache"')
    metas.clear()
    code, out, err = run_main(["embed", "list"], capsys)
    assert code == 0 and out == "" and "no embeddings" in err


def test_one_scale_is_singular(tmp_path, capsys, monkeypatch) -> None:
    import caso_cli.attrs as attrs
    import caso_cli.pipelines.batch_edit as batch_edit
    import caso_cli.pipelines.interpolate as interpolate

    attr = SimpleNamespace(embedding=SimpleNamespace(name="x"))
    monkeypatch.setattr(attrs, "resolve_attrs", lambda texts, scale: [attr])
    monkeypatch.setattr(batch_edit, "open_model", lambda choice, attrs: None)
    monkeypatch.setattr(interpolate, "run_sweep", lambda sd, job: SimpleNamespace(captions=["+3"], grid=job.out))
    code, out, err = run_main(["interpolate", str(tmp_path / "x.png"), "--attr", "x", "--scales", "3", "--out",
                               str(tmp_path / "sweep.png")], capsys)
    assert code == 0 and out.strip() == str(tmp_path / "sweep.png")
    assert "1 scale from one inversion: +3" in err


def test_demo_force_pair_and_plain_output(tmp_path, capsys, monkeypatch) -> None:
    import caso_cli.toyworld.demo as demo

    seen: list[bool] = []

    def fake_run_demo(out_dir: Path, config: object, force: bool = False, **_: object) -> demo.DemoResult:
        seen.append(force)
        return demo.DemoResult(classifier_accuracy=1.0, add_success=0.5, remove_success=0.5, kept=0.5, n_add=2,
                               n_remove=2, seconds={"classifier": 1.5, "learn": 20.0, "edit": 3.0},
                               sheet=out_dir / "sheet.png", embedding="toy-mustache", inputs=out_dir / "inputs",
                               edits=out_dir / "edits", machine=demo.machine_facts(0, 1))

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    out_dir = tmp_path / "demo"
    code, out, err = run_main(["demo", "--out", str(out_dir), "--no-hold"], capsys)
    assert code == 0 and out.strip() == str(out_dir / "sheet.png")
    assert "seconds: classifier 1.5, learn 20, edit 3" in err and "{" not in err + out  # no dict reprs
    assert f"--out {out_dir}/edited" in err  # the suggested edit writes under the demo folder
    kernels = demo.machine_facts(0, 1)["cpu_kernels"]  # what the numbers repeat on is printed to compare machines
    assert f"seed 0, 1 CPU thread, torch {torch.__version__}, {kernels} kernels: these numbers repeat" in err
    assert run_main(["demo", "--out", str(out_dir), "--no-force"], capsys)[0] == 0
    assert seen == [True, False]


@pytest.mark.slow  # over a second on 2 cores
@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_is_cleared_before_a_line_is_printed(tmp_path) -> None:
    """On a terminal the bar (stderr) never shares a line with a printed path (stdout); stdout carries only data."""
    import pty

    script = tmp_path / "bar.py"
    script.write_text(textwrap.dedent("""
        import time, typer
        from caso_cli.cli.output import Progress
        with Progress("edit", 3) as bar:
            bar.info("loading")
            for i in range(3):
                time.sleep(0.15)
                bar.update(i + 1)
                with bar.paused():
                    typer.echo(f"out/{i}.png")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for stdout_is_terminal in (True, False):
        leader, follower = pty.openpty()
        proc = subprocess.run([sys.executable, str(script)], stdin=subprocess.DEVNULL, stderr=follower,
                              stdout=follower if stdout_is_terminal else subprocess.PIPE, env=env, timeout=60)
        os.close(follower)
        screen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal is drained
                break
            if not chunk:
                break
            screen += chunk
        os.close(leader)
        assert proc.returncode == 0
        if not stdout_is_terminal:
            assert proc.stdout.decode().split() == ["out/0.png", "out/1.png", "out/2.png"]
        assert b"edit" in screen  # the bar was drawn
        pieces = [p for p in re.split(r"[\r\n]+", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode())) if p]
        printed = [p for p in pieces if "out/" in p or "loading" in p]
        expected = ["loading", "out/0.png", "out/1.png", "out/2.png"] if stdout_is_terminal else ["loading"]
        assert printed == expected, pieces


def test_readme_follow_up_commands_write_under_the_demo_folder() -> None:
    outs = [out for line in readme_pipe_examples() for out in re.findall(r"--out (\S+)", line)]
    assert len(outs) == 2 and all(out.startswith("caso-demo/") for out in outs), outs


def test_demo_refuses_before_any_work(tmp_path, capsys) -> None:
    """--no-force with an earlier demo's entries, and a scale of 0, are refused before rendering or fitting."""
    import time

    import torch

    from caso_cli.registry import save_embedding

    save_embedding("toy-mustache", torch.randn(2, 32), {"classes": ["no_mustache", "mustache"]})
    t0 = time.monotonic()
    code, _, err = run_main(["demo", "--out", str(tmp_path / "d"), "--no-force"], capsys)
    assert code == 2 and err.count("\n") == 1 and "toy-mustache exists from an earlier demo" in err
    assert "--name" not in err and not (tmp_path / "d").exists()
    code, _, err = run_main(["demo", "--out", str(tmp_path / "d"), "--scale", "0"], capsys)
    assert code == 2 and "scale must be positive" in err and not (tmp_path / "d").exists()
    assert time.monotonic() - t0 < 10
