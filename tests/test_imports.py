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


SCRIPTS = {p.stem for p in ROOT.glob("*.py")} | {"benchmarks"}  # train, val, detect, compare, export, ...


def test_library_imports_no_script():
    """models/ and utils/ are a library: nothing in them imports a script at the root or the benchmarks, at module
    level or inside a function."""
    bad = []
    for path in [p for d in ("models", "utils") for p in (ROOT / d).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in SCRIPTS]
    assert not bad, bad


BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")
# scripts end in a __main__ guard; the other modules are helpers the scripts import
SCRIPTS_B = [n for n in BENCHMARKS if '__name__ == "__main__"' in (ROOT / "benchmarks" / f"{n}.py").read_text()]
HELPERS_B = [n for n in BENCHMARKS if n not in SCRIPTS_B]


@pytest.mark.parametrize("name", HELPERS_B)
def test_benchmark_helper_is_used_by_a_script(name):
    """A benchmarks/ module without a __main__ guard is a helper: some benchmark script imports it."""
    users = [s for s in SCRIPTS_B if f"benchmarks.{name} import" in (ROOT / "benchmarks" / f"{s}.py").read_text()]
    assert users, f"benchmarks/{name}.py has no __main__ guard and no benchmark imports it"


def test_benchmarks_do_not_edit_sys_path():
    """Benchmark scripts run as `python -m benchmarks.X` from the root; none puts the root on sys.path itself."""
    assert len(BENCHMARKS) >= 8
    edits = [name for name in BENCHMARKS if "sys.path" in (ROOT / "benchmarks" / f"{name}.py").read_text()]
    assert not edits, edits


@pytest.mark.parametrize("name", SCRIPTS_B)
def test_benchmark_runs_as_module(name):
    """`python -m benchmarks.X --help` from the root prints its usage and exits 0."""
    r = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout


def test_no_module_over_400_lines():
    """Small files: no Python file of the product (scripts, models/, utils/, benchmarks/) is over 400 lines."""
    files = [p for d in ("models", "utils", "benchmarks") for p in (ROOT / d).rglob("*.py")] + sorted(ROOT.glob("*.py"))
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long
