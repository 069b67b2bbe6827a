"""gadx's subpackages import each other without a circle (read from the source, nothing imported).

The layering this keeps: gadx.parallel (process groups, megatron glue) below gadx.models (built at
the current layout) below gadx.train. A circle makes the import order matter and every package part
of every other; it came back easily through imports inside functions, which are counted here too.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "gadx"


def _unit(module: str) -> str:
    """gadx.a.b.c -> gadx.a: the subpackage (or top-level module) a module belongs to."""
    return ".".join(module.split(".")[:2])


def _imports(path: Path, module: str, is_pkg: bool) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
    return {m for m in out if m == "gadx" or m.startswith("gadx.")}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{subpackage: the other subpackages its modules import}, imports inside functions included."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_pkg = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_pkg else parts)
        if module == "gadx":
            continue
        src = _unit(module)
        for target in _imports(path, module, is_pkg):
            if target != "gadx" and _unit(target) != src:
                graph.setdefault(src, set()).add(_unit(target))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while comp[-1:] != [v]:
                comp.append(stack.pop())
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def test_parallel_does_not_import_models():
    assert "gadx.models" not in import_graph().get("gadx.parallel", set())


def test_no_import_circle_between_subpackages():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}}) == []
