"""Models: `Model` (models.yolo), the blocks and attention plug-ins (models.common), and `load_model`."""

from __future__ import annotations

from pathlib import Path

import torch

# The blocks register themselves when models.common is imported; importing it here, first, completes the registry
# for any import order (models.transformer and models.control subclass or use its blocks, and it imports them).
import models.common  # noqa: E402,F401
from models.yolo import Model  # noqa: E402
from utils.checkpoint import inference_weights, load_checkpoint  # noqa: E402
from utils.torch_utils import select_device  # noqa: E402

__all__ = ["load_model", "resolve_weights", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def resolve_weights(weights: str | Path) -> Path:
    """A weights path as given if it exists; a bare name (no folder) also finds the file shipped in `weights/`."""
    path = Path(weights)
    if path.is_file():
        return path
    have = ", ".join(p.name for p in sorted(WEIGHTS_DIR.glob("*.pt"))) or "none"
    if path.parent != Path("."):  # a path with a folder means that file, never a bundled one of the same name
        raise FileNotFoundError(f"weights {str(weights)!r} not found (bundled weights, by bare name: {have})")
    shipped = WEIGHTS_DIR / path.name
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"weights {str(weights)!r} not found (as a path, or in {WEIGHTS_DIR}: {have})")


def model_from_checkpoint(ckpt: dict, verbose: bool = False):
    """Build the Model a checkpoint describes and load its weights (fp32)."""
    cfg, names, state = inference_weights(ckpt)
    model = Model(cfg, nc=len(names) or None, verbose=verbose)
    model.load_state_dict(state)
    if names:
        model.names = names
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu", fuse: bool = False):
    """The model of a checkpoint (this project's or an official YOLOv5 .pt), in eval mode on `device`."""
    model = model_from_checkpoint(load_checkpoint(resolve_weights(path)))
    model = model.to(select_device(device)).eval()
    return model.fuse() if fuse else model
