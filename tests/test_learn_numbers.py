"""`caso embed learn` shows one set of numbers: the progress bar ends on what the summary says (issue 17 item 8)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from caso_cli.pipelines.learn import SUMMARY_TAIL, LearnResult, progress_text, tail_means, tail_text
from tests.tiny import run_main

NUMBERS = re.compile(r"mean of (?:run \d+'s )?last (\d+) steps?: loss (\d+\.\d{3}), accuracy on estimates (\d\.\d\d)")


def test_summary_is_the_running_mean_the_bar_shows() -> None:
    history = [{"step": i + 1, "loss": 1.0 / (i + 1), "accuracy": float(i % 2)} for i in range(25)]
    means = tail_means(history)
    assert means["last_steps"] == SUMMARY_TAIL == 20
    assert means["loss"] == pytest.approx(sum(1.0 / s for s in range(6, 26)) / 20)
    assert means["accuracy"] == 0.5  # steps 6..25: ten of them odd-indexed
    row = {**history[-1], "total": 25, "mean_loss": means["loss"], "mean_accuracy": means["accuracy"], "mean_of": 20}
    result = LearnResult(vectors=None, steps=25, seconds=0.0, history=history)  # type: ignore[arg-type]
    assert progress_text(row) == tail_text(result.summary()) == "mean of last 20 steps: loss 0.077, accuracy on " \
                                                                 "estimates 0.50"
    assert progress_text({**row, "run": 2, "runs": 3}).startswith("run 2/3 mean of last 20 steps")
    assert tail_text(tail_means(history[:1])) == "mean of last 1 step: loss 1.000, accuracy on estimates 0.00"
    assert tail_means([])["last_steps"] == 0


class _Texts:
    """What the progress bar (which draws only on a terminal) was given to show."""

    texts: list[str] = []

    @staticmethod
    def update(self: Any, completed: int, info: str = "", total: int | None = None) -> None:
        _Texts.texts.append(info)


@pytest.mark.slow
def test_bar_and_summary_agree_on_the_last_number(tmp_path, tiny_model_dir, capsys, monkeypatch) -> None:
    from caso_cli.cli.output import Progress
    from tests.tiny import learn_inputs

    folder, clf = learn_inputs(tmp_path)
    monkeypatch.setattr(Progress, "update", _Texts.update)
    _Texts.texts = []
    base = ["embed", "learn", str(folder), "-c", str(clf), "--model", str(tiny_model_dir), "--steps", "23",
            "--batch-size", "2", "--check-samples", "2", "--restarts", "0", "--device", "cpu", "--t-train", "201"]
    code, out, err = run_main([*base, "-n", "a"], capsys)
    assert code == 0, err
    assert len(_Texts.texts) == 23
    bar = NUMBERS.search(_Texts.texts[-1])
    summary = NUMBERS.search(err)
    assert bar and summary, (_Texts.texts[-1], err)
    assert bar.groups() == summary.groups() and bar.group(1) == "20"  # the same quantity, to the digit
    assert NUMBERS.search(_Texts.texts[0]).group(1) == "1"  # type: ignore[union-attr]  # early on: the steps so far
    assert "one-step estimates at t* 201 the classifier reads as their target class" in err
    assert "generation check: of 2 samples per class generated from noise" in err
    assert "the classifier reads as their class no_x " in err
    # the registry keeps the same numbers, and how many steps they average
    code, out, err = run_main([*base, "-n", "b", "--json"], capsys)
    m = json.loads(out)
    assert m["last_steps"] == 20 and f"{m['loss']:.3f}" == bar.group(2) and f"{m['accuracy']:.2f}" == bar.group(3)


def test_restarted_summary_is_the_last_runs(monkeypatch) -> None:
    """With restarts the bar ends on the last run; the summary describes that run too."""
    import torch

    from caso_cli.config import LearnConfig
    from caso_cli.pipelines import learn_runs as L

    runs: list[dict[str, Any]] = []

    def fake_learn(sd, clf, images, config, checkpoint=None, resume=False, progress=None) -> LearnResult:
        history = [{"step": i + 1, "loss": float(config.seed + 1), "accuracy": 0.5} for i in range(3)]
        runs.append({"seed": config.seed})
        return LearnResult(vectors=torch.zeros(2, 4), steps=3, seconds=0.0, history=history)

    monkeypatch.setattr(L, "learn_embedding", fake_learn)
    monkeypatch.setattr(L, "generation_check", lambda *a, **k: [0.0, 1.0])  # class 0 always fails: every run goes

    class Clf:
        classes = ["no_x", "x"]

    result = L.learn_checked(None, Clf(), None, LearnConfig(steps=3, restarts=2, check_samples=2))  # type: ignore[arg-type]
    assert len(runs) == 3 and result.check["runs"] == 3  # type: ignore[index]
    assert result.summary()["loss"] == 3.0  # run 3 (seed 2)
