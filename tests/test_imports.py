"""No import cycles: each module imports alone in a fresh interpreter, and utils/ does not pull in models/,
nor metrics the plotting."""

from __future__ import annotations

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
