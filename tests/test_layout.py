"""The project's shape, checked from its source (docs/architecture.md): layers, no import cycles, small files.

Read with `ast`, nothing imported: every `import` counts, at module level or inside a function, under
`TYPE_CHECKING` or not, since a cycle that only lazy imports hide still ties two modules together.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "classic", "common", "envs", "replay")
TOP_MODULES = ("train", "play")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_AGENT_TOP_MODULES = 10


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _our_sources() -> dict[str, Path]:
    """Every module of ours that ships or runs (packages, the top-level scripts, benches), by dotted name."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    files += [ROOT / f"{m}.py" for m in TOP_MODULES]
    files += list((ROOT / "bench").rglob("*.py"))
    return {_module_name(p): p for p in files}


SOURCES = _our_sources()


def _imports(path: Path) -> set[str]:
    """The modules of ours that `path` imports (`from a.b import c` names a.b.c when that is a module, else a.b)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in SOURCES else node.module for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in (*PACKAGES, *TOP_MODULES))
    return found


GRAPH = {name: _imports(path) - {name} for name, path in SOURCES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules():
    assert _cycles(GRAPH) == []


def _layer(module: str) -> str:
    """The unit of the package-level graph: agent's subpackages count as packages of their own."""
    parts = module.split(".")
    if parts[0] == "agent" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        graph.setdefault(_layer(module), set()).update(_layer(d) for d in deps if _layer(d) != _layer(module))
    assert _cycles(graph) == []


@pytest.mark.parametrize("package, forbidden", [
    ("classic", ("agent", "envs", "replay", "train", "play")),  # the supporting library: agent -> classic, never back
    ("common", ("agent", "classic", "envs", "replay", "train", "play")),
    ("envs", ("agent", "classic", "common", "replay", "train", "play")),  # numpy only
    ("replay", ("agent", "classic", "common", "envs", "train", "play")),
])
def test_lower_packages_never_import_upward(package, forbidden):
    bad = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if m.split(".")[0] == package for d in deps if d.split(".")[0] in forbidden)
    assert bad == []


def _allowed_imports(package: str) -> set[str]:
    """What an agent subpackage's docstring says it may import (the backticked names after `May import:`)."""
    doc = ast.get_docstring(ast.parse((ROOT / package.replace(".", "/") / "__init__.py").read_text())) or ""
    match = re.search(r"May import:(.*?)(?:\.\s|\.$)", doc, re.S)
    assert match, f"{package}/__init__.py's docstring does not say what it may import ('May import: `x`, `y`.')"
    return set(re.findall(r"`([\w.]+)`", match.group(1)))


AGENT_SUBPACKAGES = sorted(p.parent.name for p in (ROOT / "agent").glob("*/__init__.py") if p.parent.name != "configs")


@pytest.mark.parametrize("sub", AGENT_SUBPACKAGES)
def test_each_agent_layer_imports_only_what_its_docstring_allows(sub):
    package = f"agent.{sub}"
    allowed = _allowed_imports(package) | {package}
    bad = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if _layer(m) == package for d in deps
                 if _layer(d) not in allowed and d.split(".")[0] not in allowed)
    assert bad == [], f"{package} may import only {sorted(allowed)}"


def test_agent_top_level_stays_small():
    modules = sorted(p.name for p in (ROOT / "agent").glob("*.py"))
    assert len(modules) <= MAX_AGENT_TOP_MODULES, modules


def test_no_file_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES.values() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}


def test_no_function_over_80_lines():
    long = {}
    for path in SOURCES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_the_checker_sees_a_cycle():
    """The cycle finder itself: a -> b -> c -> a is found, a tree is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
