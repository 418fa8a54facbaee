"""Shared test fixtures: paths to the bundled data and to the optional ../shared folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests run two at a time on two cores: one intra-op thread each keeps them from fighting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def coco128() -> Path:
    return ROOT / "data" / "coco128"
