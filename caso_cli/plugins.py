"""Plug-ins: the entry points other packages declare, and the lookups their modules register into.

Two entry point groups, which the toy world (``caso_cli.toyworld``) uses exactly as a third-party package would:

* ``caso_cli.plugins``: modules imported on the first use of any :class:`Lookup` (local model aliases, oracles,
  phrasebooks); importing one registers its entries (``register_local_model``, ``register_oracle``, ...).
* ``caso_cli.commands``: functions that receive the ``caso`` Typer app and add commands to it
  (``caso_cli.cli.app`` calls each after the built-in commands).

A plug-in that fails to load is skipped with one warning line on stderr: a broken package never breaks caso.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, TypeVar

V = TypeVar("V")

#: modules that register into the lookups when imported
PLUGINS = "caso_cli.plugins"
#: functions ``register(app)`` that add commands to the ``caso`` Typer app
COMMANDS = "caso_cli.commands"

_LOADED: dict[str, list[tuple[Any, Any]]] = {}  # group -> (entry point, what it loaded), once per process


def load_entry_points(group: str) -> list[tuple[Any, Any]]:
    """(entry point, the object it names) for each entry point of ``group``, loaded once per process, in name order.
    One that fails to load is skipped with a warning line on stderr."""
    if group in _LOADED:  # loaded, or loading (a plug-in's registration may look something up)
        return _LOADED[group]
    from importlib.metadata import entry_points

    found = _LOADED[group] = []
    seen: set[tuple[str, str]] = set()
    for ep in sorted(entry_points(group=group), key=lambda e: (e.name, e.value)):
        if (ep.name, ep.value) in seen:  # the same distribution found twice on the path
            continue
        seen.add((ep.name, ep.value))
        try:
            found.append((ep, ep.load()))
        except Exception as exc:  # noqa: BLE001 - any failure of someone else's package: skip it, say so
            warn_plugin(ep, group, exc)
    return found


def warn_plugin(ep: Any, group: str, exc: BaseException) -> None:
    """One line on stderr: which plug-in failed, and why (its first line)."""
    why = (str(exc).strip().splitlines() or [""])[0]
    print(f"Warning: plug-in {ep.name!r} ({ep.value}, entry point group {group}) failed and is skipped: "
          f"{type(exc).__name__}{': ' + why if why else ''}", file=sys.stderr)


class Lookup(dict[str, V]):
    """A dict of named entries filled on first use: the built-in ``providers`` modules are imported, then the modules
    of the ``caso_cli.plugins`` entry points (each registers its entries when imported)."""

    def __init__(self, providers: tuple[str, ...] = (), group: str = PLUGINS) -> None:
        super().__init__()
        self.providers = providers
        self.group = group
        self._loaded = False

    def load(self) -> Lookup[V]:
        """Import the built-in providers and the plug-ins once, then return the lookup itself."""
        if not self._loaded:
            self._loaded = True
            for module in self.providers:
                import_module(module)
            load_entry_points(self.group)
        return self
