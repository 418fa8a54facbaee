"""What detect.py's log says about detections: a count per class, and one progress bar per video."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from utils.log import LOGGER

__all__ = ["VideoBar", "describe"]


def describe(det: torch.Tensor, names: list[str]) -> str:
    """'4 persons, 1 bus, ' for detections (n, 6), classes in increasing order."""
    s = ""
    for c in det[:, 5].unique():
        n = int((det[:, 5] == c).sum())
        s += f"{n} {names[int(c)]}{'s' * (n > 1)}, "
    return s


class VideoBar:
    """A tqdm bar per video; its per-frame counts go to the bar, and one line per video to the log."""

    def __init__(self, names: list[str]):
        self.names = names
        self.bar, self.path, self.frames, self.counts, self.ms = None, None, 0, {}, 0.0

    def update(self, path: str, total: int, prefix: str, det: torch.Tensor, ms: float) -> None:
        if path != self.path:
            self.close()
            desc = f"{prefix.split(' (frame')[0]} {Path(path).name}"  # 'video 1/2 clip.mp4'
            self.bar = tqdm(total=total or None, desc=desc, unit="frame", bar_format="{l_bar}{bar:10}{r_bar}")
            self.path, self.frames, self.counts, self.ms = path, 0, {}, 0.0
        for c in det[:, 5].int().tolist():
            self.counts[c] = self.counts.get(c, 0) + 1
        self.frames += 1
        self.ms += ms
        self.bar.set_postfix_str((describe(det, self.names) or "(no detections), ") + f"{ms:.1f}ms", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is None:
            return
        self.bar.close()
        found = ", ".join(f"{n} {self.names[c]}{'s' * (n > 1)}" for c, n in sorted(self.counts.items())) or \
            "no detections"
        LOGGER.info(f"video {self.path}: {self.frames} frames, {found} (boxes over all frames), "
                    f"{self.ms / max(self.frames, 1):.1f}ms per frame")
        self.bar = self.path = None
