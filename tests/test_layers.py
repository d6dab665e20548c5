"""The package's import graph: layers that point one way, and no cycle.

Read from the source with ``ast`` (every ``import`` statement, including those inside
functions, so a lazy import cannot hide a cycle), not from ``sys.modules``. Imports under
``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "unrolled"

# Each top-level part of the package and its layer: a module may import its own part and
# parts of a lower layer, never a part of its own layer or above.
LAYERS = {
    "_validation": 0,
    "_startup": 0,
    "linalg": 1,
    "data": 1,
    "physics": 2,
    "fidelity": 3,
    "models": 3,
    "testing": 3,
    "evaluation": 3,
    "unfolded": 4,
    "train": 5,
    "interop": 5,
    # a model file is written with the training library's atomic writer
    "saving": 6,
    "weights": 7,
    "apps": 8,
    "cli": 9,
    "__main__": 10,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` imports."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                source = ".".join(stem + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub when there is one
            targets = [
                f"{source}.{a.name}" if f"{source}.{a.name}" in known else source
                for a in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t == PACKAGE or t.startswith(PACKAGE + "."))
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _modules()} - {None}
    assert parts <= set(LAYERS), f"parts without a layer: {sorted(parts - set(LAYERS))}"


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in _graph().items():
        part = _part(module)
        if part is None:
            continue  # the package's own __init__ gathers the public API
        for target in targets:
            other = _part(target)
            if other is None:
                wrong.append(f"{module} -> {target} (the package root)")
            elif other != part and LAYERS[other] >= LAYERS[part]:
                wrong.append(f"{module} (layer {LAYERS[part]}) -> {target} (layer {LAYERS[other]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, has_cycle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a"}}, True),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, has_cycle):
    assert (_find_cycle(graph) is not None) == has_cycle


def test_relative_imports_are_resolved(tmp_path):
    # lazy, relative and ``from pkg import module`` forms all count as edges
    path = tmp_path / "mod.py"
    path.write_text(
        "from . import sibling\nfrom ..linalg.cg import CG\n"
        "def f():\n    from ..physics import blur\n"
        "if TYPE_CHECKING:\n    from ..apps import demo\n"
    )
    known = {"unrolled.part.sibling", "unrolled.linalg.cg", "unrolled.physics.blur"}
    assert _imports("unrolled.part.mod", path, known) == known
