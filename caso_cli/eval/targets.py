"""What an edit group aims at, for ``caso eval``'s per-group numbers: the class a classifier should read, or the
attribute and class an oracle should, and whether the edit moves towards it or away."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from caso_cli.eval.pairing import EditGroup


def _matches(key: str, name: str) -> bool:
    """``key`` (a class or embedding name, lower case) names ``name``: ``mustache``, ``toy-mustache``."""
    return key == name or key.endswith("-" + name)


def _direction(group: EditGroup, found: Callable[[str | None, str], tuple[str, int] | None]
               ) -> tuple[str, int, bool] | None:
    """What ``found(class, embedding name)`` makes of the one attribute of ``group`` it knows, and whether the edit
    moves towards it (positive scale) or away (negative); ``None`` with no such attribute, several, or scale 0."""
    scales = group.scale_values()
    hits = [(i, hit) for i, (name, cls) in enumerate(zip(group.names, group.classes, strict=True))
            if (hit := found(cls, name)) is not None]
    if scales is None or len(hits) != 1 or scales[hits[0][0]] == 0:
        return None
    i, (what, k) = hits[0]
    return what, k, scales[i] > 0


def classifier_target(group: EditGroup, classes: Sequence[str]) -> tuple[str, int, bool] | None:
    """``(target, k, towards)`` of an edit group for a classifier of ``classes``: success is the share of edits in
    class k (towards) or out of it (away; the target is then the other class of a binary classifier, else
    ``not <class>``). The edited class is the group's recorded class, or one whose name the embedding's name ends
    with (``toy-mustache``, ``hair-blond``)."""
    def found(cls: str | None, name: str) -> tuple[str, int] | None:
        if cls is not None:
            return (cls, classes.index(cls)) if cls in classes else None
        ks = [k for k, c in enumerate(classes) if _matches(name.lower(), c.lower())]
        return (classes[ks[0]], ks[0]) if len(ks) == 1 else None

    d = _direction(group, found)
    if d is None:
        return None
    cls, k, towards = d
    return (cls if towards else classes[1 - k] if len(classes) == 2 else f"not {cls}"), k, towards


def oracle_target(group: EditGroup, attributes: Mapping[str, Sequence[str]]) -> tuple[str, str, bool] | None:
    """``(attribute, class, towards)`` of an edit group for an oracle reading ``attributes``: the class of the
    attribute the edit moves towards (positive scale) or away from (negative). A binary attribute ``a`` is named
    by the class or embedding ``a`` or ``<x>-a`` (its last class) or ``no_a`` (its first); any attribute by one of
    its classes that no other attribute has (``blond``, ``hair-blond``)."""
    def found(cls: str | None, name: str) -> tuple[str, int] | None:
        key = (cls or name).lower()
        hits = []
        for a, names in attributes.items():
            low = [c.lower() for c in names]
            if len(names) == 2 and _matches(key, a.lower()):
                hits.append((a, 1))
            elif len(names) == 2 and key in (f"no_{a}", f"not_{a}", f"no-{a}", f"non_{a}"):
                hits.append((a, 0))
            else:
                hits += [(a, k) for k, c in enumerate(low) if (key == c if cls else _matches(key, c))]
        return hits[0] if len(hits) == 1 else None

    d = _direction(group, found)
    return None if d is None else (d[0], attributes[d[0]][d[1]], d[2])
