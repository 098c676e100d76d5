"""``caso eval --oracle NAME``: oracles are found through one lookup that the toy world, or a user, registers into."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caso_cli.cli.app import main
from caso_cli.errors import UsageError
from caso_cli.eval.oracles import Oracle, get_oracle, oracle_names, register_oracle


@pytest.fixture()
def restore_oracles():
    from caso_cli.eval import oracles
    oracles.oracle_names()  # the built-in oracles are registered first
    saved = dict(oracles._FACTORIES), dict(oracles._BUILT)
    yield
    for registry, old in zip((oracles._FACTORIES, oracles._BUILT), saved, strict=True):
        registry.clear()
        registry.update(old)


def _brightness(images: list[np.ndarray], paths: list[Path]) -> list[dict[str, str]]:
    return [{"bright": "yes" if im.mean() > 127 else "no", "red": "yes" if im[..., 0].mean() > 127 else "no"}
            for im in images]


def test_toy_oracle_is_registered_by_the_toy_world() -> None:
    assert "toy" in oracle_names()
    toy = get_oracle("toy")
    assert toy.name == "toy" and toy is get_oracle("toy")  # built once
    assert dict(toy.attributes) == {"mustache": ("no", "yes"), "glasses": ("no", "yes"), "smile": ("no", "yes"),
                                    "hair": ("black", "blond", "red")}


def test_unknown_oracle_is_one_line_listing_the_known(capsys, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^unknown oracle 'celeba' \(known: .*toy.*\)$"):
        get_oracle("celeba")
    for d in ("o", "e"):
        (tmp_path / d).mkdir()
        Image.new("RGB", (32, 32)).save(tmp_path / d / "a.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tmp_path / "o"), str(tmp_path / "e"), "--oracle", "celeba"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "unknown --oracle 'celeba' (known: toy" in err


def test_summary_counts_changes_and_edit_classes() -> None:
    o = Oracle("b", {"bright": ("no", "yes")}, _brightness, extra=lambda edits: {"n_edits": len(edits)})
    s = o.summary([{"bright": "no"}] * 3, [{"bright": "yes"}, {"bright": "no"}, {"bright": "yes"}])
    assert s == {"available": True, "name": "b", "changed": {"bright": 0.6667},
                 "edit_classes": {"bright": {"no": 0.3333, "yes": 0.6667}}, "n_edits": 3}
    with pytest.raises(ValueError, match="one reading per original"):
        o.summary([], [])


def test_a_user_oracle_runs_in_caso_eval(tmp_path: Path, restore_oracles) -> None:
    from caso_cli.config import EvalConfig
    from caso_cli.eval.evaluate import evaluate
    from caso_cli.eval.pairing import pair_by_name
    from caso_cli.eval.report import render_report

    calls = []

    def factory() -> Oracle:
        calls.append(1)
        return Oracle("bright", {"bright": ("no", "yes"), "red": ("no", "yes")}, _brightness)

    register_oracle("bright", factory)
    assert "bright" in oracle_names() and not calls  # built on first use only
    for d, colours in (("o", [(0, 0, 0), (250, 250, 250)]), ("e", [(250, 10, 10), (250, 250, 250)])):
        (tmp_path / d).mkdir()
        for i, c in enumerate(colours):
            Image.new("RGB", (16, 16), c).save(tmp_path / d / (f"{i}.png" if d == "o" else f"{i}.x.png"))
    result = evaluate(pair_by_name(tmp_path / "o", tmp_path / "e"), EvalConfig(oracle="bright"))
    assert result.metrics["oracle"] == {"available": True, "name": "bright",
                                        "changed": {"bright": 0.0, "red": 0.5},
                                        "edit_classes": {"bright": {"no": 0.5, "yes": 0.5},
                                                         "red": {"no": 0.0, "yes": 1.0}},
                                        # one edit group, "x" (from the file names), that names no attribute
                                        "groups": {"x": {"n": 2, "target": None,
                                                         "changed": {"bright": 0.0, "red": 0.5}}}}
    assert result.oracle_attributes == ["bright", "red"] and result.pairs[0].oracle_edit == {"bright": "no",
                                                                                              "red": "yes"}
    assert "red: no → yes" in render_report(result)
    register_oracle("bright", lambda: Oracle("bright2", {}, _brightness))  # a name registered again is replaced
    assert get_oracle("bright").name == "bright2"
    with pytest.raises(ValueError, match="non-empty word"):
        register_oracle("two words", factory)
