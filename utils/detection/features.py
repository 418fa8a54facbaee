"""detect.py --visualize: YOLOv5's feature-map figures of every layer of a .pt model, per image."""

from __future__ import annotations

from pathlib import Path

import torch

from utils.plots import feature_visualization

__all__ = ["FeatureMaps"]


class FeatureMaps:
    """--visualize: a forward hook on every layer of a .pt Model saves its output as YOLOv5's feature-map figure
    (utils.plots.feature_visualization) into the folder set by `target`, once per layer and target: of a --augment
    forward only the first pass (scale 1, not flipped) is drawn."""

    def __init__(self, model: torch.nn.Module):
        self.folder: Path | None = None
        self.done: set[int] = set()
        self.saved = 0
        self.handles = [layer.register_forward_hook(self._hook) for layer in model.model]

    def target(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.done = folder, set()

    def _hook(self, module, inputs, output) -> None:
        i = getattr(module, "i", None)
        if self.folder is None or i in self.done:
            return
        self.done.add(i)
        if feature_visualization(output, getattr(module, "type", type(module).__name__), i, save_dir=self.folder):
            self.saved += 1

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
