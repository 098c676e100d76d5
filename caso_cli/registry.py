"""The local embedding registry: one folder per learned embedding under ``<user dir>/embeddings``.

An entry ``<name>/`` holds ``embedding.safetensors`` (one tensor ``embedding`` of shape
K x d: row k is the token vector of class k) and ``meta.json`` (:class:`EmbeddingMeta`: schema_version,
name, classes, token names, model family, model, text-encoder hash, classifier, hyperparameters, data
digest, dates, metrics, the embedding file's sha256; entries of schema 1 read as family ``sd``).
Entries are written into a temporary folder (files fsynced) and renamed into place under a lock,
so a reader sees the old entry or the new one, never half of one. Replacing an entry takes two renames
(old entry aside, new one in);
a save killed between them leaves the old entry aside in ``.<name>.*.old/``, from where the
next access to the registry puts it back. Hidden ``.*.tmp`` folders of killed saves are ignored.
Exports to and imports from textual-inversion files: :mod:`caso_cli.textual_inversion`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caso_cli.errors import InputError, UsageError
from caso_cli.io.files import file_sha256, fsync_dir

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 2  # 2: records the model family (schema 1 entries are SD 1.x/2.x)
EMBEDDING_FILE = "embedding.safetensors"
META_FILE = "meta.json"
TENSOR_KEY = "embedding"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def registry_dir() -> Path:
    """``<user dir>/embeddings``, created on demand."""
    from caso_cli.io.paths import user_dir

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


@dataclass
class ClassifierRecord:
    """The classifier an embedding was learned with: where it is and its sha256, so that it can be read again."""

    path: str | None = None
    sha256: str | None = None
    backbone: str | None = None
    val_accuracy: float | None = None


@dataclass
class EmbeddingMeta:
    """An entry's meta.json, typed. Keys this version does not know are kept in ``extra`` and written back."""

    classes: list[str]  # class k names row k
    name: str = ""
    tokens: list[str] = field(default_factory=list)  # textual-inversion token of each class
    token_dim: int = 0  # width of one vector
    family: str = "sd"  # model family (caso_cli.families) the vectors were learned for
    widths: list[int] = field(default_factory=list)  # each text encoder's part of a vector (default [token_dim])
    model: str | None = None  # what --model named when learning
    text_encoder_hash: str | None = None  # the family's encoder hash at learning time
    attr: str | None = None  # the classifier's attribute
    classifier: ClassifierRecord | None = None
    learned_with: list[str] = field(default_factory=list)  # entries learned together with this one
    imported_from: list[str] = field(default_factory=list)  # textual-inversion files it was built from
    image_size: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    caso_version: str | None = None
    sha256: str | None = None  # of embedding.safetensors
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def contexts(self) -> list[str]:
        """The word contexts the vectors were learned in (empty: the paper's whole prompt; docs/method.md §10)."""
        return [str(c) for c in self.hyperparameters.get("contexts") or []]

    @property
    def placement(self) -> str:
        """Where vectors learned in context enter the text encoder: ``token`` or ``output``."""
        return str(self.hyperparameters.get("placement") or "token")

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> EmbeddingMeta:
        """Read a meta.json record (any schema up to this version's); wrong types raise ``ValueError``."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {"schema_version": 1, **{k: v for k, v in record.items() if k in known}}
        if int(values["schema_version"]) > SCHEMA_VERSION:
            raise ValueError(f"schema {values['schema_version']} is newer than this caso reads ({SCHEMA_VERSION}); "
                             "upgrade caso")
        if not isinstance(values.get("classes"), list) or not all(isinstance(c, str) for c in values["classes"]):
            raise ValueError(f"classes must be a list of names, got {values.get('classes')!r}")
        rec = values.get("classifier")
        if isinstance(rec, Mapping):
            rec = ClassifierRecord(**{k: v for k, v in rec.items() if k in {f.name for f in fields(ClassifierRecord)}})
        elif rec is not None:
            raise ValueError(f"classifier must be a record, got {rec!r}")
        values["classifier"] = rec
        return cls(**values, extra={k: v for k, v in record.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        """The meta.json record: known fields (empty optional ones left out), then the kept unknown keys."""
        out = {k: v for k, v in asdict(self).items() if k != "extra" and v not in (None, [], {})}
        return {**out, **self.extra}


@dataclass
class Embedding:
    """A learned embedding: K token vectors and what is known about them."""

    name: str
    vectors: torch.Tensor  # (K, d) float32
    meta: EmbeddingMeta

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

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


def save_embedding(name: str, vectors: torch.Tensor, meta: EmbeddingMeta | Mapping[str, Any],
                   force: bool = False) -> Path:
    """Write an entry atomically; an existing entry is replaced only with ``force``.

    ``meta`` is an :class:`EmbeddingMeta` or its meta.json keys (at least ``classes``); the name, tokens, width,
    schema, date and file hash are filled in here.
    """
    from safetensors.torch import save_file

    validate_name(name)
    record = meta.to_json() if isinstance(meta, EmbeddingMeta) else dict(meta)
    typed = EmbeddingMeta.from_json({"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record,
                                     "schema_version": SCHEMA_VERSION, "name": name})
    root = registry_dir()
    final = root / name
    if vectors.dim() != 2 or vectors.shape[0] != len(typed.classes):
        raise ValueError(f"vectors must be (K, d) with K = {len(typed.classes)} classes, got {tuple(vectors.shape)}")
    typed.tokens = [token_name(c) for c in typed.classes]
    typed.token_dim = int(vectors.shape[1])
    typed.widths = typed.widths or [typed.token_dim]
    if sum(typed.widths) != typed.token_dim:
        raise ValueError(f"widths {typed.widths} do not add up to the vectors' {typed.token_dim}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    try:
        emb_path = tmp / EMBEDDING_FILE
        save_file({TENSOR_KEY: vectors.detach().to("cpu").float().contiguous()}, str(emb_path))
        typed.sha256 = file_sha256(emb_path)
        (tmp / META_FILE).write_text(json.dumps(typed.to_json(), indent=2, default=str) + "\n")
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
    """An entry's meta.json as stored (:func:`load_embedding` gives it typed)."""
    path = _entry(name) / META_FILE
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: corrupt metadata ({exc})") from exc


def load_embedding(name: str) -> Embedding:
    """Load an entry, checking the file's hash and shape against its metadata."""
    from safetensors.torch import load_file

    path = _entry(name)
    try:
        meta = EmbeddingMeta.from_json(read_meta(name))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path / META_FILE}: {exc}") from exc
    emb_path = path / EMBEDDING_FILE
    if meta.sha256 and file_sha256(emb_path) != meta.sha256:
        raise InputError(f"{emb_path}: does not match its recorded sha256 (corrupted?)")
    try:
        vectors = load_file(str(emb_path))[TENSOR_KEY]
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{emb_path}: unreadable ({str(exc).splitlines()[0]})") from exc
    if vectors.dim() != 2 or vectors.shape[0] != len(meta.classes):
        raise InputError(f"{emb_path}: shape {tuple(vectors.shape)} does not fit classes {meta.classes}")
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
