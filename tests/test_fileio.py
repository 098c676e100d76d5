"""caso_cli.io.files: the one sha256 helper and the one atomic writer."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from caso_cli.io.files import atomic_path, atomic_write, file_sha256


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_file_sha256_matches_hashlib_over_chunks(tmp_path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # more than one 1 MiB chunk, not a multiple of it
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == file_sha256(path)
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(("mode", "content"), [("wb", b"\x00\x01bytes"), ("w", "text \u00e9\n")])
def test_atomic_write_lands_content(tmp_path, mode, content) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_write(path, mode) as fh:
        fh.write(content)
        assert path.read_bytes() == b"old"  # nothing visible until the block ends
        assert len(_leftovers(tmp_path)) == 1 and _leftovers(tmp_path)[0].startswith(".out.bin.")
    got = path.read_bytes() if mode == "wb" else path.read_text(encoding="utf-8")
    assert got == content
    assert _leftovers(tmp_path) == []


def test_atomic_write_error_leaves_old_file_and_no_temp(tmp_path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path, "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    # a new file that fails is not created at all
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "new.json", "w"):
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_atomic_write_without_overwrite_refuses_existing(tmp_path) -> None:
    path = tmp_path / "a.png"
    with atomic_write(path, overwrite=False) as fh:
        fh.write(b"first")
    with pytest.raises(FileExistsError), atomic_write(path, overwrite=False) as fh:
        fh.write(b"second")
    assert path.read_bytes() == b"first" and _leftovers(tmp_path) == []
    # appearing while the body writes still refuses
    other = tmp_path / "b.png"
    with pytest.raises(FileExistsError), atomic_write(other, overwrite=False) as fh:
        fh.write(b"mine")
        other.write_bytes(b"theirs")
    assert other.read_bytes() == b"theirs" and _leftovers(tmp_path) == []


def test_atomic_write_without_hard_links_still_refuses(tmp_path, monkeypatch) -> None:
    def no_links(*_a, **_k):
        raise PermissionError("no hard links here")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "c.bin"
    with atomic_write(path, overwrite=False) as fh:
        fh.write(b"one")
    assert path.read_bytes() == b"one"
    with pytest.raises(FileExistsError), atomic_write(path, overwrite=False) as fh:
        fh.write(b"two")
    assert path.read_bytes() == b"one" and _leftovers(tmp_path) == []


def test_atomic_write_mode_and_umask(tmp_path) -> None:
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "perm") as fh:
            fh.write(b"x")
    finally:
        os.umask(old)
    if os.name == "posix":
        assert (tmp_path / "perm").stat().st_mode & 0o777 == 0o644  # an ordinary file, not mkstemp's 0600


def test_atomic_path_for_writers_that_take_a_name(tmp_path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    path = tmp_path / "t.safetensors"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".t.safetensors.") and tmp.exists()
        save_file({"x": torch.arange(3.0)}, str(tmp))
        assert not path.exists()
    assert torch.equal(load_file(str(path))["x"], torch.arange(3.0)) and _leftovers(tmp_path) == []
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert torch.equal(load_file(str(path))["x"], torch.arange(3.0)) and _leftovers(tmp_path) == []


def test_atomic_path_files_get_the_umask_mode(tmp_path) -> None:
    """safetensors' save_file writes 0600 whatever the umask; what caso stores takes the mode open() gives."""
    import os

    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.safetensors") as tmp:
            save_file({"a": torch.zeros(1)}, str(tmp))
        assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        with atomic_path(tmp_path / "y.safetensors") as tmp:
            save_file({"a": torch.zeros(1)}, str(tmp))
        assert (tmp_path / "y.safetensors").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
