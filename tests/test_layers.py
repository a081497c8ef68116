"""The package's layers: lower layers never import upper ones, and nothing imports in a cycle.

Read from the source with `ast` (no imports run), so a new import that breaks the layering
fails here with the module and the line, before it confuses anyone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "kernelbox"

# Data flows one way: cli/mcp/integrations -> client, gateway -> sandbox -> _child. A layer may
# import its own modules, those of the layers below it listed here, and the pure top-level
# modules (`kernelbox._*`), which import no layer.
ALLOWED = {
    "cli": {"mcp", "integrations", "client", "gateway", "sandbox", "_child"},
    "mcp": {"integrations", "client", "gateway", "sandbox", "_child"},
    "integrations": {"client", "gateway", "sandbox", "_child"},
    "client": set(),
    "gateway": {"sandbox", "_child"},
    "sandbox": {"_child"},
    "_child": set(),
    "_kernel_side": set(),
}
LAYERS = set(ALLOWED)
# Inside `_child`, one package per process: the gateway process starts kernels and hardens
# itself as they do, so it may import the kernel's package; a kernel imports nothing of the
# gateway's (its start-up time and its attack surface stay its own).
CHILD_ALLOWED = {"gateway": {"kernel"}, "kernel": set()}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """The kernelbox modules `path` imports, with line numbers, resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("kernelbox")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("kernelbox"):
                names = [f"{target}.{alias.name}" for alias in node.names] if not node.module or node.level else []
                found += [(node.lineno, target)] + [(node.lineno, name) for name in names]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_lower_layers_never_import_upper_ones() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source_layer = _layer(_module_name(path))
        if source_layer is None:
            # A pure top-level module (kernelbox._errors, ...) imports no layer; the package's
            # __init__ is the public surface and may import the client and the gateway.
            if path == PACKAGE / "__init__.py":
                continue
            allowed: set[str] = set()
        else:
            allowed = ALLOWED[source_layer] | {source_layer}
        for line, target in _imports(path):
            target_layer = _layer(target)
            if target_layer is not None and target_layer not in allowed:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_the_kernel_process_imports_nothing_of_the_gateway_process() -> None:
    child = PACKAGE / "_child"
    assert sorted(path.name for path in child.iterdir() if path.is_dir() and path.name != "__pycache__") == sorted(
        CHILD_ALLOWED
    )
    problems = []
    for room, allowed in CHILD_ALLOWED.items():
        for path in sorted((child / room).rglob("*.py")):
            for line, target in _imports(path):
                parts = target.split(".")
                if parts[:2] == ["kernelbox", "_child"] and len(parts) > 2 and parts[2] not in allowed | {room}:
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not problems, "the child packages import across processes:\n" + "\n".join(problems)


def test_no_module_imports_in_a_cycle() -> None:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {
        name: {target for _, target in _imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }
    # A package's __init__ re-exporting its own modules is not a cycle in practice.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (t != name and name.startswith(t + "."))}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for child in graph[node]:
            if state.get(child) == 1:
                cycle.extend(stack[stack.index(child):] + [child] if child in stack else [node, child])
                return True
            if state.get(child) is None and visit(child, [*stack, child]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if state.get(name) is None and visit(name, [name]):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)
