"""The package reads as the data flow: no import loops, and no import runs back up the layers.

Every ``import`` is counted, also those inside functions (they are how heavy libraries stay lazy,
not a way round the layers).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "daemon" / "xtalwatch"

# Lowest first. A module may import from its own layer or any layer below it, never above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("xtalwatch.config", "xtalwatch.logs", "xtalwatch.plugins", "xtalwatch.plate", "xtalwatch.redact",
                    "xtalwatch.files", "xtalwatch.figures", "xtalwatch.observe.metrics", "xtalwatch.preprocess",
                    "xtalwatch.lifetime")),
    ("store", ("xtalwatch.store",)),
    ("models and events", ("xtalwatch.learn.simclr", "xtalwatch.learn.heads", "xtalwatch.learn.features", "xtalwatch.learn.feature_cache",
                           "xtalwatch.learn.bundle", "xtalwatch.learn.gate", "xtalwatch.learn.registry",
                           "xtalwatch.learn.evaluate", "xtalwatch.alerts")),
    ("stages", ("xtalwatch.stages",)),
    ("retraining", ("xtalwatch.learn.retrain", "xtalwatch.learn.scheduler", "xtalwatch.learn.training_metrics",
                    "xtalwatch.learn")),
    ("observe", ("xtalwatch.observe", "xtalwatch.review")),
    ("life cycle", ("xtalwatch.service",)),
    ("tools", ("xtalwatch.tools",)),
    # The package itself re-exports a little public API (lazily), so it sits on top.
    ("commands", ("xtalwatch", "xtalwatch.commands", "xtalwatch.cli", "xtalwatch.__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The layer of the longest matching prefix."""
    best, best_len = -1, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    return best


def imports_of(path: Path) -> set[str]:
    """Every xtalwatch module that ``path`` imports, resolved to module names that exist."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "xtalwatch" and name in MODULES:
                found.add(name)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if layer_of(m) < 0] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_back_up(module: str) -> None:
    mine = layer_of(module)
    upward = sorted(f"{dep} ({LAYERS[layer_of(dep)][0]})" for dep in GRAPH[module] if layer_of(dep) > mine
                    and not module.startswith(dep + "."))  # a package's own __init__ may be imported
    assert upward == [], f"{module} ({LAYERS[mine][0]}) imports from a higher layer"


def test_no_import_loops() -> None:
    # Packages import their own submodules to re-export them; that is not a loop between modules.
    edges = {m: {d for d in deps if not d.startswith(m + ".") and not m.startswith(d + ".")}
             for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    loops: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                loops.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert loops == []
