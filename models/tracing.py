"""Whether a traced graph must compute shape-dependent steps (padding to a window grid, crops, Detect's grids)
itself, so that it runs at any input size, or may take them as they were at the traced size.

Eager PyTorch decides per call from the real shape. A traced graph keeps only the branch taken while tracing, so
by default a trace takes the any-size branch (pad, maybe by 0; compute the grids from the input's shape). A
fixed-size export (export.py without --dynamic) traces under `fixed_shape_trace()`: the graph then holds only
what its one input size needs, e.g. no zero-size Pad and no mask where the windows divide the map.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["shapes_in_graph", "fixed_shape_trace"]

_fixed = False


def shapes_in_graph() -> bool:
    """True while tracing a graph that must work at any input size."""
    return torch.jit.is_tracing() and not _fixed


@contextmanager
def fixed_shape_trace():
    """Trace for one input size only (see the module docstring)."""
    global _fixed
    old, _fixed = _fixed, True
    try:
        yield
    finally:
        _fixed = old
