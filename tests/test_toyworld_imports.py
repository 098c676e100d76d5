"""No import cycles in the package (inside functions too); the toy world is a user of the library, and its
registrations (model alias, oracle)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "caso_cli"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = ("caso_cli", *f.relative_to(PACKAGE).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """caso_cli modules ``path`` imports (inside functions too unless ``top_level_only``; not under
    ``if TYPE_CHECKING:``). ``from pkg import sub`` counts as importing ``pkg.sub`` only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    todo: list[ast.AST] = list(tree.body)
    out: set[str] = set()
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            out.update(subs)
            if len(subs) < len(node.names):
                out.add(node.module)
        if not top_level_only or isinstance(node, (ast.Try, ast.With, ast.If)):
            todo.extend(ast.iter_child_nodes(node))
    return {m for m in out if m in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import caso_cli.b\n")
    b.write_text("def f():\n    from caso_cli import a\n")
    mods = {"caso_cli.a": a, "caso_cli.b": b}
    assert _cycles({m: _imports(p, mods, False) for m, p in mods.items()}) == [["caso_cli.a", "caso_cli.b"]]
    assert _cycles({m: _imports(p, mods, True) for m, p in mods.items()}) == []


def test_toyworld_has_no_import_cycle_even_inside_functions() -> None:
    mods = _modules()
    toy = {m: p for m, p in mods.items() if m.startswith("caso_cli.toyworld")}
    graph = {m: _imports(p, mods, top_level_only=False) & set(toy) for m, p in toy.items()}
    assert _cycles(graph) == []
    assert "caso_cli.toyworld.quality" not in graph["caso_cli.toyworld.measure"]


def test_package_has_no_import_cycle_even_inside_functions() -> None:
    """No module of the package reaches itself through imports, function-level ones included: a cycle hidden in a
    function still ties the modules together (neither can be understood, or changed, alone)."""
    mods = _modules()
    assert _cycles({m: _imports(p, mods, top_level_only=False) for m, p in mods.items()}) == []


@pytest.mark.slow
def test_each_toyworld_module_imports_first_in_a_fresh_interpreter() -> None:
    names = sorted(m for m in _modules() if m.startswith("caso_cli.toyworld"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], env=env, stderr=subprocess.PIPE, text=True)
             for m in names}
    failed = {m: p.communicate()[1].strip().splitlines()[-1:] for m, p in procs.items()}
    assert {m: e for m, e in failed.items() if procs[m].returncode} == {}


def test_toy_is_registered_without_importing_the_toy_world_first() -> None:
    code = ("import sys\n"
            "from caso_cli.models.loaders import local_model_dir, local_model_names\n"
            "from caso_cli.eval.oracles import get_oracle, oracle_names\n"
            "assert 'caso_cli.toyworld' not in sys.modules\n"
            "assert 'toy' in local_model_names() and 'toy' in oracle_names()\n"
            "print(local_model_dir('toy'))\n"
            "o = get_oracle('toy')\n"
            "assert o.name == 'toy' and list(o.attributes) == ['mustache', 'glasses', 'smile', 'hair']\n"
            "assert 'torch' not in sys.modules and 'numpy' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import caso_cli.toyworld as toy

    assert out.strip() == str(toy.MODEL_DIR) and (toy.MODEL_DIR / "model_index.json").is_file()


def test_importing_the_toy_world_package_is_cheap() -> None:
    code = ("import sys\nimport caso_cli.toyworld\n"
            "print(sorted(m for m in ('numpy', 'torch', 'diffusers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
