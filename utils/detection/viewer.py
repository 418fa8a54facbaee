"""detect.py --view-img: each drawn image in a window, or one warning where no window can be opened."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from utils.data.sources import cv2_reason
from utils.log import LOGGER

__all__ = ["Viewer", "no_display"]


def no_display() -> str | None:
    """Why no window can be opened here, or None where one may be (OpenCV still has the last word)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display: neither DISPLAY nor WAYLAND_DISPLAY is set"
    return None


class Viewer:
    """--view-img: each drawn image in a window named by its source (cv2.imshow, a 1 ms wait), as YOLOv5. Where
    no window can be opened (no display, an OpenCV without GUI) one warning says why and the run goes on."""

    def __init__(self, enabled: bool):
        self.enabled, self.windows = enabled, []

    def show(self, name: str, im: np.ndarray) -> None:
        if not self.enabled:
            return
        reason = no_display()
        if reason is None:
            try:
                if name not in self.windows:
                    if sys.platform.startswith("linux"):  # a resizable window at the image's size, as YOLOv5
                        cv2.namedWindow(name, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
                        cv2.resizeWindow(name, im.shape[1], im.shape[0])
                    self.windows.append(name)
                cv2.imshow(name, im)
                cv2.waitKey(1)
                return
            except cv2.error as e:
                reason = cv2_reason(e)
        LOGGER.warning(f"WARNING: --view-img: cannot show images ({reason}); going on without showing them")
        self.enabled = False

    def close(self) -> None:
        if self.windows:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
            self.windows.clear()
