"""Oracles for ``caso eval --oracle NAME``: attribute readers that judge edits without a classifier.

An oracle reads named attributes from images (each attribute one of a fixed list of class names)
and ``caso eval`` reports, per attribute, how often an edit changed it and how its classes are
spread over the edits. Oracles are found by name through one lookup::

    from caso_cli.eval.oracles import Oracle, register_oracle

    def my_oracle() -> Oracle:              # called when the oracle is first asked for
        return Oracle(name="mine", attributes={"smile": ("no", "yes")}, read=read_smiles)

    register_oracle("mine", my_oracle)      # then: caso eval a/ b/ --oracle mine

The toy world registers ``toy`` (:mod:`caso_cli.toyworld`, a ``caso_cli.plugins`` entry point). This module
imports nothing heavy (no numpy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caso_cli.errors import UsageError
from caso_cli.plugins import Lookup

if TYPE_CHECKING:
    import numpy as np

#: Readings of one image: attribute (or extra key) -> class name, all strings.
Reading = dict[str, str]


@dataclass(frozen=True)
class Oracle:
    """One oracle.

    ``read(images, paths)`` reads uint8 (H, W, 3) images (``paths`` only for messages; raise
    :class:`caso_cli.errors.InputError` for an image it cannot read) and returns one
    :data:`Reading` per image holding at least every attribute of ``attributes``. ``extra(edits)``,
    if given, adds numbers of its own to the summary from the edits' readings.
    """

    name: str
    attributes: Mapping[str, Sequence[str]]  # attribute -> its class names
    read: Callable[[list[np.ndarray], Sequence[Path]], list[Reading]]
    extra: Callable[[list[Reading]], dict[str, Any]] | None = None

    def summary(self, originals: list[Reading], edits: list[Reading]) -> dict[str, Any]:
        """``caso eval``'s ``oracle`` entry: per attribute the share of pairs whose reading changed
        (``changed``) and the share of edits read as each class (``edit_classes``), rounded to 4 places."""
        n = len(edits)
        if n == 0 or len(originals) != n:
            raise ValueError(f"need one reading per original and per edit, got {len(originals)} and {n}")
        changed = {a: round(sum(o[a] != e[a] for o, e in zip(originals, edits, strict=True)) / n, 4)
                   for a in self.attributes}
        classes = {a: {c: round(sum(e[a] == c for e in edits) / n, 4) for c in names}
                   for a, names in self.attributes.items()}
        out: dict[str, Any] = {"available": True, "name": self.name, "changed": changed, "edit_classes": classes}
        if self.extra is not None:
            out.update(self.extra(edits))
        return out


#: name -> factory; plug-ins (the ``caso_cli.plugins`` entry points: the toy world's ``toy``) register theirs when
#: it is first looked up
_FACTORIES: Lookup[Callable[[], Oracle]] = Lookup()
_BUILT: dict[str, Oracle] = {}


def register_oracle(name: str, factory: Callable[[], Oracle]) -> None:
    """Make ``factory()`` the oracle called ``name`` (replacing one of that name); it is called on first use."""
    _FACTORIES.load()  # built-in oracles first, so that a user's registration of the same name wins
    if not name or any(ch.isspace() for ch in name):
        raise ValueError(f"an oracle name must be a non-empty word, got {name!r}")
    _FACTORIES[name] = factory
    _BUILT.pop(name, None)


def oracle_names() -> list[str]:
    """The registered oracle names, sorted."""
    return sorted(_FACTORIES.load())


def get_oracle(name: str) -> Oracle:
    """The oracle called ``name``; an unknown name is a :class:`UsageError` listing the known ones."""
    if name not in _FACTORIES.load():
        raise UsageError(f"unknown oracle {name!r} (known: {', '.join(oracle_names()) or 'none'})")
    if name not in _BUILT:
        _BUILT[name] = _FACTORIES[name]()
    return _BUILT[name]
