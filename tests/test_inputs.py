"""Expanding batch inputs: files, folders, recursion, globs, stdin, duplicates, missing paths."""

from __future__ import annotations

from pathlib import Path

from caso_cli.inputs import expand_inputs


def _tree(tmp_path: Path) -> Path:
    for rel in ("a.png", "b.jpg", "notes.txt", "sub/c.png", "sub/deeper/d.webp"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return tmp_path


def names(items) -> list[str]:
    return [i.path.name if i.error is None else f"!{i.path.name}" for i in items]


def test_folder_flat_and_recursive(tmp_path) -> None:
    root = _tree(tmp_path)
    assert names(expand_inputs([str(root)])) == ["a.png", "b.jpg"]
    assert names(expand_inputs([str(root)], recursive=True)) == ["a.png", "b.jpg", "c.png", "d.webp"]


def test_globs_missing_and_duplicates(tmp_path) -> None:
    root = _tree(tmp_path)
    items = list(expand_inputs([str(root / "*.png"), str(root / "a.png"), str(root / "nope.png"),
                                str(root / "*.gif")]))
    assert names(items) == ["a.png", "!nope.png", "!*.gif"]
    assert items[1].error == "no such file" and items[2].error == "no file matches this pattern"


def test_stdin_paths(tmp_path) -> None:
    root = _tree(tmp_path)
    lines = [f"{root / 'b.jpg'}\n", "\n", f"{root / 'sub'}\n", f"{root / 'missing.png'}\n"]
    assert names(expand_inputs(["-"], stdin=lines)) == ["b.jpg", "c.png", "!missing.png"]


def test_symlink_loops_and_broken_links_are_error_items(tmp_path) -> None:
    import os

    (tmp_path / "a.png").write_bytes(b"x")
    os.symlink(tmp_path / "l2.png", tmp_path / "l1.png")
    os.symlink(tmp_path / "l1.png", tmp_path / "l2.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    items = list(expand_inputs([str(tmp_path)]))
    assert names(items) == ["a.png", "!dangling.png", "!l1.png", "!l2.png"]
    assert [i.error for i in items[1:]] == ["broken symbolic link (its target does not exist)",
                                            "symbolic link loop", "symbolic link loop"]
    assert names(expand_inputs([str(tmp_path / "l1.png"), str(tmp_path / "a.png")])) == ["!l1.png", "a.png"]
