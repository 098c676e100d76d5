"""Expanding batch inputs: files, folders, recursion, globs, stdin, duplicates, missing paths."""

from __future__ import annotations

from pathlib import Path

from caso_cli.io.inputs import expand_inputs


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


def test_folders_include_gifs_and_say_when_they_hold_no_image(tmp_path) -> None:
    root = _tree(tmp_path)
    (root / "anim.gif").write_bytes(b"x")
    assert names(expand_inputs([str(root)])) == ["a.png", "anim.gif", "b.jpg"]
    (root / "shot.png").mkdir()  # a directory named like an image
    (root / "empty").mkdir()
    items = list(expand_inputs([str(root / "shot.png"), str(root / "empty")]))
    assert [i.error for i in items] == [
        "is a directory, not an image file",
        "no images in this folder (.png, .jpg, .jpeg, .webp, .bmp, .tif, .tiff, .gif; -r also searches its "
        "sub-folders)"]


def test_binary_data_on_stdin_is_one_usage_error(tmp_path) -> None:
    import io

    import pytest
    from PIL import Image

    from caso_cli.errors import UsageError

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="PNG")
    data = buf.getvalue()
    strict = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")  # as sys.stdin reads in a UTF-8 locale
    lenient = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")  # POSIX locale
    for stdin in (strict, lenient):
        with pytest.raises(UsageError, match=r"^'-' reads image paths from stdin, one per line, but stdin holds "
                                             r"binary data; to edit one image give its path"):
            list(expand_inputs(["-"], stdin=stdin))
    with pytest.raises(UsageError, match="a line of 5000 characters"):
        list(expand_inputs(["-"], stdin=["x" * 5000 + "\n"]))


def test_a_name_that_is_not_utf8_on_stdin_is_one_input(tmp_path) -> None:
    """One file name in another encoding must not refuse the whole batch."""
    import io
    import os

    latin = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.png")  # 'café' in Latin-1: not UTF-8
    with open(os.fsencode(latin), "wb") as fh:
        fh.write(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    data = os.fsencode(str(tmp_path / "a.png")) + b"\n" + os.fsencode(latin) + b"\n"
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")
    items = list(expand_inputs(["-"], stdin=stdin))
    assert [i.error for i in items] == [None, None] and items[1].path.exists()


def test_a_name_too_long_for_the_file_system_is_an_error_item(tmp_path) -> None:
    items = list(expand_inputs([str(tmp_path / ("x" * 300 + ".png"))]))
    assert len(items) == 1 and items[0].error == "file name too long"


def test_folders_leave_out_caso_outputs(tmp_path) -> None:
    """A rerun into the input folder must not edit its edits: folders skip PNGs with caso provenance, while a file
    named on the command line is taken as given."""
    from PIL import Image

    from caso_cli.io.png import save_png

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    save_png(Image.new("RGB", (8, 8)), tmp_path / "a.mustache.5.png", {"caso:version": "0"})
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    assert names(expand_inputs([str(tmp_path)])) == ["a.png", "b.jpg"]
    assert names(expand_inputs([str(tmp_path / "a.mustache.5.png")])) == ["a.mustache.5.png"]
