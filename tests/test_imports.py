"""The package imports cleanly and its modules form no import cycle, not even one hidden behind
an import inside a function, and the layers import only what the house allows."""
from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import ROOT

PACKAGES = ("schemas", "common", "model", "pipeline", "training", "mocha")
# Who may import whom among the project's packages (the design card's table, plus the shared
# ``common`` leaf); ``mocha`` is the launcher, the only one that sees both halves.
ALLOWED = {
    "schemas": set(),
    "common": {"schemas"},
    "model": {"common"},
    "pipeline": {"schemas", "common", "model"},
    "training": {"schemas", "common", "model"},
    "mocha": {"schemas", "common", "model", "pipeline", "training"},
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Project modules imported anywhere in ``tree`` (top level or inside functions)."""
    found = set()
    for node in _runtime_nodes(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = name.split(".")
                if not name_is_package(name, known):
                    pkg = pkg[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def name_is_package(name: str, known: set[str]) -> bool:
    return any(k.startswith(name + ".") for k in known)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    # an import of a package's own submodule from its __init__ (or of a parent package by its
    # child, which Python does implicitly anyway) is not a dependency between modules
    return {m: {t for t in _imports(m, tree, known) if not t.startswith(m + ".") and not m.startswith(t + ".")}
            for m, tree in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_finder_sees_a_cycle_behind_a_function_import():
    a = ast.parse("def f():\n    from pkg.b import x\n")
    b = ast.parse("import pkg.a\n")
    known = {"pkg.a", "pkg.b"}
    graph = {"pkg.a": _imports("pkg.a", a, known), "pkg.b": _imports("pkg.b", b, known)}
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


def test_layers_import_only_what_they_may():
    bad = []
    for mod, deps in _graph().items():
        layer = mod.split(".")[0]
        for d in deps:
            if d.split(".")[0] != layer and d.split(".")[0] not in ALLOWED[layer]:
                bad.append(f"{mod} -> {d}")
    assert bad == []


def test_every_module_imports_in_a_fresh_interpreter():
    mods = [m for m in _modules() if not m.endswith("__main__")]
    code = ("import importlib, sys\nbad = []\nfor m in sys.argv[1:]:\n    try:\n        importlib.import_module(m)\n"
            "    except Exception as e:\n        bad.append(f'{m}: {type(e).__name__}: {e}')\nprint('\\n'.join(bad))\n"
            "sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code, *mods], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
