"""docs/method.md holds every section and equation the code cites, and names functions that exist (no torch)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "method.md"
SOURCES = sorted((ROOT / "caso_cli").rglob("*.py"))
DOCS = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "method.md")

HEADING = re.compile(r"^#{2,3} §(\d+)\b", re.M)
LABEL = re.compile(r"\(Eq\. (\d+)\)\s*$", re.M)
# a citation: "docs/method.md §3", "(docs/method.md Eq. 2 and 7)", "[method.md](method.md) Eq. 6", ...
CITE = re.compile(r"method\.md\)?\s+(§\s*\d+|Eqs?\.\s*\d+(?:\s*(?:,|-|–|and)\s*\d+)*)")
# the code cites the paper's equation numbers bare too ("Eq. 8", "Eq. 12-13"): they are this page's labels
BARE_EQ = re.compile(r"\bEqs?\.\s*\d+(?:\s*(?:,|-|–|and)\s*\d+)*")


def _numbers(ref: str) -> set[int]:
    """{2, 7} for "Eq. 2 and 7", {12, 13} for "Eq. 12-13"."""
    out: set[int] = set()
    for lo, dash, hi in re.findall(r"(\d+)(?:\s*([-–])\s*(\d+))?", ref):
        out.update(range(int(lo), int(hi) + 1) if dash else {int(lo)})
    return out


def _cited(paths: list[Path]) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Cited sections and equations -> where ("path:line")."""
    sections: dict[int, list[str]] = {}
    equations: dict[int, list[str]] = {}
    for path in paths:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{i}"
            for ref in CITE.findall(line):
                target = sections if ref.startswith("§") else equations
                for n in _numbers(ref):
                    target.setdefault(n, []).append(where)
            if path.suffix == ".py":
                for ref in BARE_EQ.findall(line):
                    for n in _numbers(ref):
                        equations.setdefault(n, []).append(where)
    return sections, equations


def test_doc_has_every_cited_section_and_equation() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = {int(n) for n in HEADING.findall(text)}
    labels = {int(n) for n in LABEL.findall(text)}
    sections, equations = _cited(SOURCES + DOCS)
    assert sections and equations, "no citations found: the patterns no longer match the code"
    missing = {f"§{n}": w for n, w in sections.items() if n not in headings}
    missing.update({f"Eq. {n}": w for n, w in equations.items() if n not in labels})
    assert not missing, f"cited but not in docs/method.md: {missing}"


def test_doc_numbering_is_unique_and_consecutive() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = [int(n) for n in HEADING.findall(text)]
    assert headings == list(range(1, len(headings) + 1))
    labels = [int(n) for n in LABEL.findall(text)]
    assert len(labels) == len(set(labels)), "an equation label appears twice"


def test_code_cites_no_missing_method_file() -> None:
    stale = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if re.search(r"\bMETHOD\b", line)]
    assert not stale, f"cite docs/method.md instead of METHOD: {stale}"


def _defines(path: Path, names: list[str]) -> bool:
    """Whether module ``path`` defines the (dotted) name: a function or class, or a method of a class."""
    body: list[ast.stmt] = ast.parse(path.read_text(encoding="utf-8")).body
    for name in names:
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            return False
        body = node.body if isinstance(node, ast.ClassDef) else []
    return True


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            return _defines(module, parts[cut:]) if parts[cut:] else True
    return False


def test_named_implementations_exist() -> None:
    names = sorted(set(re.findall(r"`(caso_cli(?:\.\w+)+)`", DOC.read_text(encoding="utf-8"))))
    assert len(names) > 20
    assert [n for n in names if not _resolves(n)] == []
