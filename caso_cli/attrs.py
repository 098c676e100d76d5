"""``--attr`` specs: ``NAME[:CLASS][=SCALE]`` resolved against the embedding registry."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from caso_cli.errors import UsageError

if TYPE_CHECKING:
    from caso_cli.registry import Embedding

_SPEC_RE = re.compile(r"^(?P<name>[^:=\s]+)(?::(?P<cls>[^:=\s]+))?(?:=(?P<scale>[^=\s]+))?$")


@dataclass(frozen=True)
class AttrSpec:
    """One ``--attr`` as typed."""

    name: str  # registry name
    cls: str | None  # class; None: the embedding's positive class
    scale: float | None  # None: the command's --scale


def parse_scale(text: str, what: str = "scale") -> float:
    """A finite float; NaN and inf are usage errors."""
    try:
        value = float(text)
    except ValueError as exc:
        raise UsageError(f"{what} must be a number, got {text!r}") from exc
    if not math.isfinite(value):
        raise UsageError(f"{what} must be finite, got {text!r}")
    return value


def parse_attr(text: str) -> AttrSpec:
    """``mustache``, ``mustache=-3``, ``hair:blond``, ``hair:blond=5``."""
    m = _SPEC_RE.match(text.strip())
    if not m:
        raise UsageError(f"bad --attr {text!r}: use NAME, NAME:CLASS, NAME=SCALE or NAME:CLASS=SCALE")
    scale = parse_scale(m["scale"], f"--attr {text!r} scale") if m["scale"] is not None else None
    return AttrSpec(m["name"], m["cls"], scale)


@dataclass(frozen=True)
class ResolvedAttr:
    """An ``--attr`` with its embedding, class row and scale."""

    spec: AttrSpec
    embedding: Embedding
    index: int  # row of the class in the embedding
    scale: float

    @property
    def cls(self) -> str:
        return self.embedding.classes[self.index]

    @property
    def label(self) -> str:
        """File-name label: ``mustache``, or ``hair-blond`` when a class was named."""
        return self.spec.name if self.spec.cls is None else f"{self.spec.name}-{self.cls}"


def positive_class(emb: Embedding) -> int:
    """The class an attribute name alone means: for ``no_x``/``x`` pairs, ``x``; otherwise CLASS is required."""
    classes = [c.lower() for c in emb.classes]
    if len(classes) == 2:
        for k, c in enumerate(classes):
            other = classes[1 - k]
            if other in (f"no_{c}", f"not_{c}", f"no-{c}", f"non_{c}"):
                return k
    raise UsageError(f"embedding {emb.name!r} has classes {', '.join(emb.classes)}: name one, e.g. "
                     f"--attr {emb.name}:{emb.classes[-1]}")


def resolve_attrs(texts: list[str], default_scale: float) -> list[ResolvedAttr]:
    """Parse and resolve every ``--attr`` against the registry (no model is loaded)."""
    from caso_cli.registry import load_embedding

    if not texts:
        raise UsageError("give at least one --attr NAME (see `caso embed list`)")
    out = []
    for text in texts:
        spec = parse_attr(text)
        emb = load_embedding(spec.name)
        index = emb.index(spec.cls) if spec.cls is not None else positive_class(emb)
        out.append(ResolvedAttr(spec, emb, index, default_scale if spec.scale is None else spec.scale))
    dims = {a.embedding.vectors.shape[1] for a in out}
    if len(dims) > 1:
        raise UsageError(f"the embeddings were made for text encoders of different sizes: {sorted(dims)}")
    return out


def format_scale(value: float) -> str:
    """``5.0`` -> ``5``, ``-2.5`` -> ``-2.5``: for file names."""
    return f"{value:g}"
