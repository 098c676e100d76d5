"""Textual-inversion files: an embedding's classes exported as the files Stable Diffusion tools load, and such files
imported as an embedding. The layout is the model family's (:meth:`caso_cli.families.Family.export_tensors`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caso_cli.errors import InputError, UsageError
from caso_cli.io.files import atomic_path
from caso_cli.registry import load_embedding, save_embedding

if TYPE_CHECKING:
    import torch


def export(name: str, out_dir: str | Path, fmt: str = "diffusers", overwrite: bool = False) -> list[Path]:
    """Write one textual-inversion file per class: ``<token>.safetensors``.

    The tensors are the layout of the entry's model family (:meth:`caso_cli.families.Family.export_tensors`);
    for SD 1.x/2.x, ``diffusers``: ``{"<token>": (d,)}``, loadable with ``pipe.load_textual_inversion(file)``;
    ``a1111``: ``{"emb_params": (1, d)}``, the safetensors layout AUTOMATIC1111 and ComfyUI read;
    the file name (without suffix) is the token there.
    """
    from safetensors.torch import save_file

    from caso_cli.families import family_named

    if fmt not in ("diffusers", "a1111"):
        raise UsageError(f"unknown export format {fmt!r} (diffusers or a1111)")
    emb = load_embedding(name)
    if emb.meta.contexts and emb.meta.placement == "output":
        raise UsageError(f"embedding {name!r} was learned as a delta on the text encoder's output, which no "
                         "textual-inversion file can hold; only entries learned as tokens export")
    try:
        family = family_named(emb.meta.family)
    except KeyError as exc:
        raise InputError(f"embedding {name!r}: {exc.args[0]}") from exc
    out = Path(out_dir)
    from caso_cli.io.files import check_writable

    check_writable(out, "textual-inversion files")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, token in enumerate(emb.meta.tokens):
        stem = token.strip("<>") if fmt == "a1111" else token
        path = out / f"{stem}.safetensors"
        if path.exists() and not overwrite:
            raise InputError(f"{path}: exists (use --overwrite)")
        vec = emb.vectors[k].contiguous()
        tensors = family.export_tensors(token, vec, fmt, emb.meta.widths or [emb.meta.token_dim])
        try:
            with atomic_path(path, overwrite=overwrite) as tmp:
                save_file(tensors, str(tmp), metadata={"caso_embedding": name, "class": emb.classes[k],
                                                       "model": emb.meta.model or ""})
        except FileExistsError as exc:  # appeared while writing
            raise InputError(f"{path}: exists (use --overwrite)") from exc
        written.append(path)
    return written


@dataclass(frozen=True)
class TIFile:
    """What one textual-inversion file holds: a class name, one vector, and the family whose layout it has."""

    label: str
    vector: torch.Tensor  # (d,) float32: the text encoders' parts side by side
    family: str
    widths: list[int]


def read_textual_inversion(path: str | Path) -> TIFile:
    """One token's vector from a textual-inversion safetensors file in any layout a family reads (SD 1.x/2.x:
    diffusers' ``{"<token>": (d,)}`` or A1111's ``{"emb_params": (1, d)}``; SDXL: ``clip_l`` + ``clip_g``).
    The class is the token name, or the file name where the layout has none."""
    from safetensors.torch import load_file

    from caso_cli.families import families

    p = Path(path)
    if p.suffix.lower() != ".safetensors":
        raise InputError(f"{p}: only .safetensors textual-inversion files are imported (pickles can run code)")
    try:
        state = load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{p}: unreadable ({str(exc).splitlines()[0]})") from exc
    for family in families():
        try:
            found = family.read_file_tensors(state)
        except ValueError as exc:
            raise InputError(f"{p}: {exc}") from exc
        if found is None:
            continue
        key, tensor, widths = found
        if tensor.dim() != 1:
            raise InputError(f"{p}: holds {tuple(tensor.shape)}; caso imports one vector per file")
        return TIFile((key or p.stem).strip("<>"), tensor.float(), family.name, widths)
    raise InputError(f"{p}: expected one tensor (or clip_l and clip_g), found {len(state)} "
                     f"({', '.join(list(state)[:4])})")


def import_files(paths: list[str | Path], name: str, meta: dict[str, Any] | None = None,
                 force: bool = False) -> Path:
    """Build an entry from one textual-inversion file per class (the classes in the given order)."""
    import torch

    if len(paths) < 2:
        raise UsageError("an embedding needs one file per class, at least 2")
    files = [read_textual_inversion(p) for p in paths]
    layouts = {(f.family, *f.widths) for f in files}
    if len(layouts) != 1:
        raise InputError(f"the files hold vectors of different sizes or models: {sorted(layouts)}")
    classes = [f.label for f in files]
    if len(set(classes)) != len(classes):
        raise InputError(f"two files carry the same class name: {classes}")
    info = {"classes": classes, "family": files[0].family, "widths": files[0].widths,
            "imported_from": [str(Path(p).resolve()) for p in paths], **(meta or {})}
    return save_embedding(name, torch.stack([f.vector for f in files]), info, force=force)
