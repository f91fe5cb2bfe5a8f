"""The layout shows the architecture: no import circles, every module says its job in its first docstring line."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(list(ROOT.glob("spfem_cli/**/*.py")) + list(ROOT.glob("models/*.py"))):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Edges for every import statement, including those inside functions (a lazy import still couples)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
                targets = subs or [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[m].update(t for t in targets if t in mods and t != m and t != "spfem_cli")
    return graph


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


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert _cycles(_import_graph(_modules())) == []


def test_every_module_says_its_job():
    missing = [str(p.relative_to(ROOT)) for p in _modules().values() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []


def test_backends_do_not_import_each_other():
    graph = _import_graph(_modules())
    for m, deps in graph.items():
        for own, other in (("spfem_cli.backends.warp", "spfem_cli.backends.ned"), ("spfem_cli.backends.ned", "spfem_cli.backends.warp")):
            if m.startswith(own):
                assert not any(d.startswith(other) for d in deps), (m, deps)
