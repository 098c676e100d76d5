"""The local embedding registry: one folder per learned embedding under ``<user dir>/embeddings``.

An entry ``<name>/`` holds ``embedding.safetensors`` (one tensor ``embedding`` of shape
K x d: row k is the token vector of class k) and ``meta.json`` (schema_version, name,
classes, token names, model, text-encoder hash, classifier, hyperparameters, data digest,
dates, metrics, the embedding file's sha256). Entries are written into a temporary folder
(files fsynced) and renamed into place under a lock, so a reader sees the old entry or the new
one, never half of one. Replacing an entry takes two renames (old entry aside, new one in);
a save killed between them leaves the old entry aside in ``.<name>.*.old/``, from where the
next access to the registry puts it back. Hidden ``.*.tmp`` folders of killed saves are ignored.
Exports are textual-inversion files that any Stable Diffusion tool loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caso_cli.errors import InputError, UsageError
from caso_cli.fileio import atomic_path, file_sha256, fsync_dir

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 1
EMBEDDING_FILE = "embedding.safetensors"
META_FILE = "meta.json"
TENSOR_KEY = "embedding"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def registry_dir() -> Path:
    """``<user dir>/embeddings``, created on demand."""
    from caso_cli.paths import user_dir

    path = user_dir() / "embeddings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def validate_name(name: str) -> str:
    """Names are 1-64 characters of a-z, 0-9, '_', '-', '.', starting with a letter or digit."""
    if not _NAME_RE.match(name or "") or ".." in name:
        raise UsageError(f"invalid embedding name {name!r}: use 1-64 characters a-z, 0-9, '_', '-', '.' "
                         "starting with a letter or digit")
    return name


def token_name(cls: str) -> str:
    """The textual-inversion token of a class: ``<mustache>``, ``<no_mustache>``."""
    return "<" + re.sub(r"[^a-z0-9_]+", "_", cls.lower()).strip("_") + ">"


def text_encoder_hash(text_encoder: Any) -> str:
    """Identifies a text encoder by its token-embedding table (16 hex digits of sha256)."""
    import torch

    weight = text_encoder.get_input_embeddings().weight.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]


@dataclass
class Embedding:
    """A learned embedding: K token vectors and what is known about them."""

    name: str
    vectors: torch.Tensor  # (K, d) float32
    meta: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def index(self, cls: str) -> int:
        """Row of class ``cls`` (case-insensitive), with a helpful error."""
        lowered = [c.lower() for c in self.classes]
        if cls.lower() in lowered:
            return lowered.index(cls.lower())
        raise UsageError(f"embedding {self.name!r} has no class {cls!r} (classes: {', '.join(self.classes)})")


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the registry (a lock file), so concurrent writers take turns."""
    with (root / ".lock").open("a") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: renames are still atomic, only the exists-check can race
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _restore_set_aside(root: Path) -> None:
    """Under the lock: put back entries that a killed save had set aside, and drop the leftovers."""
    for aside in root.glob(".*.old"):
        for entry in list(aside.iterdir()) if aside.is_dir() else []:
            final = root / entry.name
            if not final.exists() and (entry / META_FILE).is_file() and (entry / EMBEDDING_FILE).is_file():
                os.replace(entry, final)
        shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(root)


def _recover(root: Path) -> None:
    """Restore entries left aside by a save that was killed between its two renames (see the module doc)."""
    if any(root.glob(".*.old")):
        with _locked(root):
            _restore_set_aside(root)


def save_embedding(name: str, vectors: torch.Tensor, meta: dict[str, Any], force: bool = False) -> Path:
    """Write an entry atomically; an existing entry is replaced only with ``force``."""
    from safetensors.torch import save_file

    validate_name(name)
    root = registry_dir()
    final = root / name
    if vectors.dim() != 2 or vectors.shape[0] != len(meta["classes"]):
        raise ValueError(f"vectors must be (K, d) with K = {len(meta['classes'])} classes, got {tuple(vectors.shape)}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    try:
        emb_path = tmp / EMBEDDING_FILE
        save_file({TENSOR_KEY: vectors.detach().to("cpu").float().contiguous()}, str(emb_path))
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        full = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "tokens": [token_name(c) for c in meta["classes"]],
            "token_dim": int(vectors.shape[1]),
            "created": now,
            **meta,
            "sha256": file_sha256(emb_path),
        }
        (tmp / META_FILE).write_text(json.dumps(full, indent=2, default=str) + "\n")
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        with _locked(root):
            _restore_set_aside(root)
            if final.exists() and not force:
                raise UsageError(f"embedding {name!r} exists (use --force to replace it, or pick another --name)")
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=root))
                os.replace(final, old / name)
                os.replace(tmp, final)
                fsync_dir(root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
                fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _entry(name: str) -> Path:
    path = registry_dir() / validate_name(name)
    if not (path / META_FILE).is_file():
        _recover(path.parent)
    if not (path / META_FILE).is_file():
        import difflib

        close = difflib.get_close_matches(name, list_names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see `caso embed list`)"
        raise InputError(f"no embedding named {name!r} in the registry{hint}")
    return path


def read_meta(name: str) -> dict[str, Any]:
    """An entry's meta.json."""
    path = _entry(name) / META_FILE
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: corrupt metadata ({exc})") from exc


def load_embedding(name: str) -> Embedding:
    """Load an entry, checking the file's hash and shape against its metadata."""
    from safetensors.torch import load_file

    path = _entry(name)
    meta = read_meta(name)
    emb_path = path / EMBEDDING_FILE
    if meta.get("sha256") and file_sha256(emb_path) != meta["sha256"]:
        raise InputError(f"{emb_path}: does not match its recorded sha256 (corrupted?)")
    try:
        vectors = load_file(str(emb_path))[TENSOR_KEY]
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{emb_path}: unreadable ({str(exc).splitlines()[0]})") from exc
    if vectors.dim() != 2 or vectors.shape[0] != len(meta.get("classes", [])):
        raise InputError(f"{emb_path}: shape {tuple(vectors.shape)} does not fit classes {meta.get('classes')}")
    return Embedding(name=name, vectors=vectors, meta=meta)


def list_names() -> list[str]:
    """Names of all entries, sorted."""
    _recover(registry_dir())
    return sorted(p.name for p in registry_dir().iterdir() if (p / META_FILE).is_file() and not p.name.startswith("."))


def verify() -> dict[str, str]:
    """Check every entry (metadata readable, file hash, shape); returns name -> "ok" or the problem."""
    out = {}
    _recover(registry_dir())
    for path in sorted(p for p in registry_dir().iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            load_embedding(path.name)
            out[path.name] = "ok"
        except InputError as exc:
            out[path.name] = str(exc)
    return out


def remove(name: str) -> None:
    """Delete an entry."""
    shutil.rmtree(_entry(name))


def export(name: str, out_dir: str | Path, fmt: str = "diffusers", overwrite: bool = False) -> list[Path]:
    """Write one textual-inversion file per class: ``<token>.safetensors``.

    ``diffusers``: ``{"<token>": (d,)}``, loadable with ``pipe.load_textual_inversion(file)``.
    ``a1111``: ``{"emb_params": (1, d)}``, the safetensors layout AUTOMATIC1111 and ComfyUI read;
    the file name (without suffix) is the token there.
    """
    from safetensors.torch import save_file

    if fmt not in ("diffusers", "a1111"):
        raise UsageError(f"unknown export format {fmt!r} (diffusers or a1111)")
    emb = load_embedding(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, token in enumerate(emb.meta["tokens"]):
        stem = token.strip("<>") if fmt == "a1111" else token
        path = out / f"{stem}.safetensors"
        if path.exists() and not overwrite:
            raise InputError(f"{path}: exists (use --overwrite)")
        vec = emb.vectors[k].contiguous()
        tensors = {token: vec} if fmt == "diffusers" else {"emb_params": vec.unsqueeze(0)}
        try:
            with atomic_path(path, overwrite=overwrite) as tmp:
                save_file(tensors, str(tmp), metadata={"caso_embedding": name, "class": emb.classes[k],
                                                       "model": str(emb.meta.get("model", ""))})
        except FileExistsError as exc:  # appeared while writing
            raise InputError(f"{path}: exists (use --overwrite)") from exc
        written.append(path)
    return written


def read_textual_inversion(path: str | Path) -> tuple[str, torch.Tensor]:
    """(class name, vector (d,)) from a one-token textual-inversion safetensors file of either format."""
    from safetensors.torch import load_file

    p = Path(path)
    if p.suffix.lower() != ".safetensors":
        raise InputError(f"{p}: only .safetensors textual-inversion files are imported (pickles can run code)")
    try:
        state = load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{p}: unreadable ({str(exc).splitlines()[0]})") from exc
    if len(state) != 1:
        raise InputError(f"{p}: expected one tensor, found {len(state)} ({', '.join(list(state)[:4])})")
    key, tensor = next(iter(state.items()))
    if tensor.dim() == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 1:
        raise InputError(f"{p}: holds {tuple(tensor.shape)}; caso imports one vector per file")
    label = key if key != "emb_params" else p.stem
    return label.strip("<>"), tensor.float()


def import_files(paths: list[str | Path], name: str, meta: dict[str, Any] | None = None,
                 force: bool = False) -> Path:
    """Build an entry from one textual-inversion file per class (the classes in the given order)."""
    import torch

    if len(paths) < 2:
        raise UsageError("an embedding needs one file per class, at least 2")
    pairs = [read_textual_inversion(p) for p in paths]
    dims = {v.shape[0] for _, v in pairs}
    if len(dims) != 1:
        raise InputError(f"the files hold vectors of different sizes: {sorted(dims)}")
    classes = [c for c, _ in pairs]
    if len(set(classes)) != len(classes):
        raise InputError(f"two files carry the same class name: {classes}")
    info = {"classes": classes, "imported_from": [str(Path(p).resolve()) for p in paths], **(meta or {})}
    return save_embedding(name, torch.stack([v for _, v in pairs]), info, force=force)
