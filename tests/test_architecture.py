"""The shape of the code: imports inside engine/ point one way, and no module reaches into
another's private names.

Read from the source with `ast`, so every import counts: module level, inside functions, and
under ``if TYPE_CHECKING`` (a type-only circle is still a circle for a reader). Dynamic imports
(importlib, __import__) are refused in engine/ outright: they hide edges from this check and
from grep.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "app")
CHECKED = ("engine", "app", "tests", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(folders: tuple[str, ...]) -> dict[str, Path]:
    return {module_name(p): p for d in folders for p in sorted((ROOT / d).rglob("*.py"))}


MODULES = sources(PACKAGES)


def resolve(current: str, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    base = current.split(".")
    if MODULES.get(current, Path()).name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path) -> tuple[set[str], list[str], list[str]]:
    """(engine/app modules imported, private names taken from other modules, dynamic imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    edges: set[str] = set()
    private: list[str] = []
    dynamic: list[str] = []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES:
                    edges.add(a.name)
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom):
            src = resolve(name, node)
            if src is None:
                continue
            for a in node.names:
                full = f"{src}.{a.name}"
                if full in MODULES:  # a submodule
                    edges.add(full)
                    aliases[a.asname or a.name] = full
                elif src in MODULES:
                    edges.add(src)
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        private.append(f"{where}:{node.lineno} {src}.{a.name}")
        elif isinstance(node, ast.Call):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if called in ("import_module", "__import__"):
                dynamic.append(f"{where}:{node.lineno}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and aliases[node.value.id] != name
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            target = aliases[node.value.id]
            private.append(f"{where}:{node.lineno} {target}.{node.attr}")
    return edges - {name}, private, dynamic


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_circle_and_a_private_import(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    f = tmp_path / "x.py"
    f.write_text(
        "from engine.influence.store import _FP\nfrom engine import jobs\nx = jobs._read\n"
    )
    private = imports_of("x", f)[1]
    assert len(private) == 2  # both spellings are caught


def test_no_import_cycle_inside_engine() -> None:
    graph = {
        m: {e for e in imports_of(m, p)[0] if e.startswith("engine")}
        for m, p in MODULES.items()
        if m.startswith("engine")
    }
    found = cycles(graph)
    assert not found, "import cycles in engine/: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("folder", CHECKED)
def test_no_module_imports_another_modules_private_names(folder: str) -> None:
    bad = [x for m, p in sources((folder,)).items() for x in imports_of(m, p)[1]]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_engine_has_no_dynamic_imports() -> None:
    bad = [
        x for m, p in MODULES.items() if m.startswith("engine")
        for x in imports_of(m, p)[2]
    ]  # fmt: skip
    assert not bad, "dynamic imports in engine/ (write the import out): " + ", ".join(bad)


def test_the_engine_never_imports_streamlit() -> None:
    bad = [
        str(p.relative_to(ROOT)) for m, p in MODULES.items()
        if m.startswith("engine") and "streamlit" in {
            a.name.split(".")[0] for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])
        }
    ]  # fmt: skip
    assert not bad, f"engine modules import streamlit: {bad}"
