"""No import cycles: each module imports alone in a fresh interpreter, and utils/ does not pull in models/,
nor metrics the plotting."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# module -> modules that importing it must not load
MODULES = {
    "models.yolo": (),
    "models.fuse": (),
    "utils.metrics": ("utils.plots", "matplotlib"),
    "utils.plots": ("matplotlib",),
    "utils.torch_utils": ("models", "models.common"),
    "val": ("matplotlib",),
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_alone(module):
    code = (f"import sys, {module}\n"
            f"bad = [m for m in {MODULES[module]!r} if m in sys.modules]\n"
            "assert not bad, f'loaded {bad}'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def _module_imports() -> dict[str, set[str]]:
    """Project module -> project modules it imports at module level (imports inside functions run later)."""
    files = [p for d in ("models", "utils") for p in (ROOT / d).rglob("*.py")] + sorted(ROOT.glob("*.py"))
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in files}
    graph = {}
    for name, path in names.items():
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                           for a in node.names]
            deps |= set(targets) & set(names)  # a package's __init__ that a module's import runs first is left out:
            # it is already running (or done) whenever one of its modules is imported
        graph[name] = deps - {name}
    return graph


def test_no_import_cycles():
    graph = _module_imports()
    assert {"train", "compare", "utils.training.setup", "utils.compare.report", "models.yolo"} <= set(graph)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [node]
                cycles.append(" -> ".join(cycle + [dep]))
            elif dep not in state:
                visit(dep, stack + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, cycles
