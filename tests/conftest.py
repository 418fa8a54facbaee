"""Shared test fixtures: paths to the bundled data and to the optional ../shared folder."""

from __future__ import annotations

import io
import logging
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


def open_residuals(model: torch.nn.Module, gamma: float = 1.0) -> None:
    """Set every Residual wrapper's gamma (zero at initialisation) so its block's parameters get gradients."""
    from models.common import Residual

    for m in model.modules():
        if isinstance(m, Residual):
            with torch.no_grad():
                m.gamma.fill_(gamma)


def plugin_layers(model: torch.nn.Module, cls: type) -> list[tuple[int, torch.nn.Module]]:
    """(layer index, module) of each `cls` among the model's layers, bare or inside a Residual wrapper."""
    out = []
    for i, layer in enumerate(model.model):
        inner = getattr(layer, "m", None)
        if isinstance(layer, cls) or isinstance(inner, cls):
            out.append((i, layer if isinstance(layer, cls) else inner))
    return out


@pytest.fixture
def log():
    """Messages the project's logger emits during the test (INFO and up)."""
    from utils.log import LOGGER

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler, level = Keep(logging.INFO), LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    yield records
    LOGGER.removeHandler(handler)
    LOGGER.setLevel(level)


class LogCapture:
    """The project logger's lines while the block runs, as `.text` afterwards."""

    def __enter__(self):
        from utils.log import LOGGER, setup_logging

        setup_logging()
        self.buf = io.StringIO()
        self.handler = logging.StreamHandler(self.buf)
        LOGGER.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        from utils.log import LOGGER

        LOGGER.removeHandler(self.handler)
        self.text = self.buf.getvalue()
