"""Training plots as YOLOv5 draws them: labels.jpg (label statistics) and results.png (results.csv curves).

Figures are drawn on their own Agg canvas; pyplot and the global matplotlib state are never touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.log import LOGGER
from utils.plots import colors, new_figure
from utils.training.run_files import ResultsLog

__all__ = ["plot_labels", "plot_labels_correlogram", "plot_results"]


def _figure(rows: int, cols: int, figsize):
    fig = new_figure(figsize)
    return fig, fig.subplots(rows, cols).ravel()


def plot_labels(labels: list[np.ndarray], names: list[str], save_dir: Path) -> Path:
    """labels.jpg: instances per class, the first 1000 boxes drawn centred, and histograms of x-y and w-h.

    `labels` is a list of (n, 5) [cls, cx, cy, w, h] normalised arrays, one per image.
    """
    LOGGER.info(f"Plotting labels to {Path(save_dir) / 'labels.jpg'}... ")
    lb = np.concatenate([x for x in labels if len(x)], 0) if any(len(x) for x in labels) else np.zeros((0, 5))
    c, b = lb[:, 0].astype(int), lb[:, 1:].T  # classes (n,), boxes (4, n)
    nc = max(len(names), int(c.max()) + 1 if len(c) else 1)
    fig, ax = _figure(2, 2, (8, 8))
    counts = np.bincount(c, minlength=nc)
    bars = ax[0].bar(range(nc), counts, width=0.8)
    for i, bar in enumerate(bars):
        bar.set_color([x / 255 for x in colors(i)])
    ax[0].set_ylabel("instances")
    if 0 < len(names) < 30:
        ax[0].set_xticks(range(len(names)))
        ax[0].set_xticklabels(list(names), rotation=90, fontsize=10)
    else:
        ax[0].set_xlabel("classes")
    canvas = np.full((1000, 1000, 3), 255, dtype=np.uint8)
    ax[1].imshow(canvas)
    for cls, (w, h) in zip(c[:1000], b[2:].T[:1000]):  # boxes centred on the canvas, to scale
        color = [x / 255 for x in colors(cls)]
        ax[1].add_patch(_rectangle(500 - w * 500, 500 - h * 500, w * 1000, h * 1000, color))
    ax[1].axis("off")
    ax[2].hist2d(b[0], b[1], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[2].set_xlabel("x")
    ax[2].set_ylabel("y")
    ax[3].hist2d(b[2], b[3], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[3].set_xlabel("width")
    ax[3].set_ylabel("height")
    for a in (ax[0], ax[2], ax[3]):
        for s in ("top", "right"):
            a.spines[s].set_visible(False)
    out = Path(save_dir) / "labels.jpg"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=200)
    return out


def _rectangle(x, y, w, h, color):
    from matplotlib.patches import Rectangle  # lazy: importing this module loads no matplotlib

    return Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=0.5, alpha=0.5)


def plot_results(file: str | Path) -> Path:
    """results.png beside results.csv: the 10 curves of YOLOv5's layout, each with a smoothed line."""
    from scipy.ndimage import gaussian_filter1d  # lazy: scipy is heavy; loaded only when results.png is drawn

    file = Path(file)
    data = ResultsLog(file).read()
    keys = list(data)
    fig, ax = _figure(2, 5, (12, 6))
    x = data[keys[0]]
    for i, j in enumerate([1, 2, 3, 4, 5, 8, 9, 10, 6, 7]):  # train losses, P, R, val losses, mAPs
        y = data[keys[j]]
        ax[i].plot(x, y, marker=".", label=file.parent.name, linewidth=2, markersize=8)
        if len(y) > 1:
            ax[i].plot(x, gaussian_filter1d(y, sigma=3), ":", label="smooth", linewidth=2)
        ax[i].set_title(keys[j], fontsize=12)
    ax[1].legend()
    out = file.with_name("results.png")
    fig.savefig(out, dpi=200)
    return out


def plot_labels_correlogram(labels: list[np.ndarray], save_dir: Path, max_boxes: int = 5000) -> Path:
    """labels_correlogram.jpg: pairwise joint histograms of the boxes' x, y, width, height (normalised), each
    variable's histogram on the diagonal, as YOLOv5 draws it (without seaborn)."""
    lb = np.concatenate([x for x in labels if len(x)], 0) if any(len(x) for x in labels) else np.zeros((0, 5))
    b = lb[:max_boxes, 1:5]
    names = ("x", "y", "width", "height")
    fig, ax = _figure(4, 4, (8, 8))
    for i in range(4):
        for j in range(4):
            a = ax[i * 4 + j]
            if i == j:
                a.hist(b[:, i], bins=50, range=(0, 1), color="#1f77b4", alpha=0.8)
            else:
                a.hist2d(b[:, j], b[:, i], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
            a.set_xlim(0, 1)
            if i == 3:
                a.set_xlabel(names[j])
            if j == 0:
                a.set_ylabel(names[i])
            a.tick_params(labelsize=6)
    out = Path(save_dir) / "labels_correlogram.jpg"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=200)
    return out
