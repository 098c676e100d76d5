"""Named lookups that other modules register into (local model aliases, oracles): the toy world is one such user."""

from __future__ import annotations

from importlib import import_module
from typing import TypeVar

V = TypeVar("V")


class Lookup(dict[str, V]):
    """A dict of named entries; the modules in ``providers`` are imported (and register theirs) on first use."""

    def __init__(self, providers: tuple[str, ...]) -> None:
        super().__init__()
        self.providers = providers
        self._loaded = False

    def load(self) -> Lookup[V]:
        """Import the built-in providers once, then return the lookup itself."""
        if not self._loaded:
            self._loaded = True
            for module in self.providers:
                import_module(module)
        return self
