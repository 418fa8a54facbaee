"""Drawing: boxes and labels on images (OpenCV only, no fonts to fetch) and metric curves (matplotlib, Agg).

matplotlib is imported inside the functions that plot, and figures are drawn on their own Agg canvas: nothing
changes the process-wide backend, and importing this module costs nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from utils.boxes import xywh2xyxy, xyxy2xywh
from utils.errors import UserError
from utils.log import LOGGER
from utils.metrics import PRCurves, smooth
from utils.paths import increment_path

__all__ = ["new_figure", "save_figure", "Colors", "colors", "Annotator", "text_color", "save_one_box", "plot_images",
           "plot_pr_curve", "plot_mc_curve", "plot_metric_curves", "plot_confusion_matrix", "plot_val_study",
           "MAX_LINE_WIDTH", "check_line_width", "feature_visualization", "FEATURE_TILE"]

MAX_LINE_WIDTH = 100  # pixels; OpenCV takes minutes over a line thousands wide and its matching font


def check_line_width(line_width: int | None) -> int | None:
    """`line_width` if it is None or an integer in 0..MAX_LINE_WIDTH (0 and None: scale with the image)."""
    ok = line_width is None or (isinstance(line_width, int) and not isinstance(line_width, bool)
                                and 0 <= line_width <= MAX_LINE_WIDTH)
    if not ok:
        raise UserError(f"--line-thickness {line_width!r}: must be an integer from 0 (scale with the image) to "
                         f"{MAX_LINE_WIDTH} pixels")
    return line_width


class Colors:
    """YOLOv5's 20-colour palette; `colors(i, bgr=True)` cycles through it."""

    HEX = ("FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
           "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7")

    def __init__(self):
        self.palette = [tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in self.HEX]  # RGB
        self.n = len(self.palette)

    def __call__(self, i: int, bgr: bool = False) -> tuple[int, int, int]:
        c = self.palette[int(i) % self.n]
        return (c[2], c[1], c[0]) if bgr else c


colors = Colors()


def text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on the BGR colour `bg` (BT.601 luma above 150 -> black)."""
    b, g, r = bg
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


class Annotator:
    """Draws boxes and labels on a BGR uint8 image in place with OpenCV (Hershey font, anti-aliased).

    Args:
        im: HxWx3 BGR uint8 image (made contiguous if needed; `result()` returns the drawn image).
        line_width: box line width in pixels; default scales with the image (YOLOv5: 0.3% of mean side, >= 2).
    """

    def __init__(self, im: np.ndarray, line_width: int | None = None):
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise UserError(f"Annotator needs an HxWx3 uint8 image, got shape {im.shape} dtype {im.dtype}")
        self.im = im if im.flags.c_contiguous else np.ascontiguousarray(im)
        self.lw = check_line_width(line_width) or max(round(sum(im.shape) / 2 * 0.003), 2)

    def box_label(self, box, label: str = "", color=(128, 128, 128), txt_color=None) -> None:
        """Rectangle `box` (x1, y1, x2, y2) and, above it (inside if no room), a filled tag with `label`.

        The text is black or white by the tag's brightness unless `txt_color` is given."""
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        cv2.rectangle(self.im, p1, p2, color, thickness=self.lw, lineType=cv2.LINE_AA)
        if not label:
            return
        tf = max(self.lw - 1, 1)  # font thickness
        scale = self.lw / 3
        w, h = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fontScale=scale, thickness=tf)[0]
        outside = p1[1] - h >= 3  # room above the box
        x0 = max(min(p1[0], self.im.shape[1] - w), 0)  # slide the tag left rather than cut it at the edge
        q1, q2 = (x0, p1[1]), (x0 + w, p1[1] - h - 3 if outside else p1[1] + h + 3)
        cv2.rectangle(self.im, q1, q2, color, -1, cv2.LINE_AA)
        org = (x0, p1[1] - 2 if outside else p1[1] + h + 2)
        cv2.putText(self.im, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, txt_color or text_color(color),
                    thickness=tf, lineType=cv2.LINE_AA)

    def text(self, xy, text: str, txt_color=(255, 255, 255)) -> None:
        tf = max(self.lw - 1, 1)
        cv2.putText(self.im, text, (int(xy[0]), int(xy[1])), cv2.FONT_HERSHEY_SIMPLEX, self.lw / 3, txt_color,
                    thickness=tf, lineType=cv2.LINE_AA)

    def result(self) -> np.ndarray:
        return self.im


def save_one_box(xyxy, im: np.ndarray, file: Path, gain: float = 1.02, pad: int = 10, square: bool = False,
                 save: bool = True) -> np.ndarray:
    """Crop `im` (BGR) to the box grown by `gain` and `pad` pixels; write it to `file` (incremented, never
    overwritten) and return the crop."""
    b = xyxy2xywh(np.asarray(xyxy, dtype=np.float64).reshape(-1, 4))
    if square:
        b[:, 2:] = b[:, 2:].max(1, keepdims=True)
    b[:, 2:] = b[:, 2:] * gain + pad
    x1, y1, x2, y2 = xywh2xyxy(b)[0]
    h, w = im.shape[:2]
    x1, x2 = (int(np.clip(v, 0, w)) for v in (x1, x2))
    y1, y2 = (int(np.clip(v, 0, h)) for v in (y1, y2))
    crop = im[y1:y2, x1:x2]
    if save and crop.size:
        file = Path(file)
        file.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(increment_path(file).with_suffix(".jpg")), crop)
    return crop


def plot_images(images, targets, paths=None, fname: str | Path = "images.jpg", names=(), max_size: int = 1920,
                max_subplots: int = 16) -> Path:
    """Mosaic of a batch with its boxes, as YOLOv5's val_batchN_labels.jpg / _pred.jpg.

    Args:
        images: (B, 3, H, W) RGB, uint8 or float in [0, 1] (Tensor or ndarray).
        targets: (n, 6) [img_idx, cls, cx, cy, w, h] (normalized or pixels) or (n, 7) with a confidence last.
    """
    images = images.cpu().float().numpy() if hasattr(images, "cpu") else np.asarray(images, dtype=np.float32)
    targets = targets.cpu().numpy() if hasattr(targets, "cpu") else np.asarray(targets)
    if images.max(initial=0) <= 1:
        images = images * 255
    bs, _, h, w = images.shape
    bs = min(bs, max_subplots)
    ns = math.ceil(bs ** 0.5)  # tiles per side
    scale = min(1.0, max_size / (ns * max(h, w)))
    th, tw = math.ceil(scale * h), math.ceil(scale * w)
    mosaic = np.full((ns * th, ns * tw, 3), 255, dtype=np.uint8)
    for i in range(bs):
        x0, y0 = tw * (i % ns), th * (i // ns)
        tile = np.ascontiguousarray(images[i].transpose(1, 2, 0)[..., ::-1]).astype(np.uint8)  # RGB -> BGR
        mosaic[y0:y0 + th, x0:x0 + tw] = cv2.resize(tile, (tw, th), interpolation=cv2.INTER_AREA)
    annotator = Annotator(mosaic, line_width=max(round(sum(mosaic.shape[:2]) / 2 * 0.0015), 1))
    lookup = names if isinstance(names, dict) else dict(enumerate(names))
    for i in range(bs):
        x0, y0 = tw * (i % ns), th * (i // ns)
        cv2.rectangle(mosaic, (x0, y0), (x0 + tw, y0 + th), (255, 255, 255), 2)
        if paths is not None and i < len(paths):
            annotator.text((x0 + 5, y0 + 15), Path(paths[i]).name[:40], txt_color=(220, 220, 220))
        t = targets[targets[:, 0] == i]
        if not len(t):
            continue
        boxes = xywh2xyxy(t[:, 2:6].astype(np.float64))
        if boxes.max(initial=0) <= 1.01:  # normalized
            boxes[:, [0, 2]] *= w
            boxes[:, [1, 3]] *= h
        boxes = boxes * scale + [x0, y0, x0, y0]
        for j, box in enumerate(boxes):
            c = int(t[j, 1])
            conf = t[j, 6] if t.shape[1] > 6 else None
            if conf is not None and conf < 0.25:
                continue
            label = str(lookup.get(c, c)) + (f" {conf:.1f}" if conf is not None else "")
            annotator.box_label(box, label, color=colors(c, bgr=True))
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(fname), mosaic)
    return fname


def new_figure(figsize=(9, 6)):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global backend change)."""
    # matplotlib (heavy) is imported only when a figure is drawn: importing this module stays cheap
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, tight_layout=True)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path, dpi: int = 250) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def plot_pr_curve(px, py, ap, save_path: str | Path = "PR_curve.png", names=()) -> Path:
    """Precision-recall curves at IoU 0.5: one per class when fewer than 21, and their mean (bold)."""
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    py = np.stack(py, axis=1) if len(py) else np.zeros((len(px), 0))  # (1000, k)
    if 0 < len(names) < 21:
        for i, y in enumerate(py.T):
            ax.plot(px, y, linewidth=1, label=f"{names[i]} {ap[i, 0]:.3f}")
    elif py.shape[1]:
        ax.plot(px, py, linewidth=1, color="grey")
    if py.shape[1]:
        ax.plot(px, py.mean(1), linewidth=3, color="blue", label=f"all classes {ap[:, 0].mean():.3f} mAP@0.5")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1), title="Precision-Recall Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    return save_figure(fig, save_path)


def plot_mc_curve(px, py, save_path: str | Path = "mc_curve.png", names=(), xlabel: str = "Confidence",
                  ylabel: str = "Metric") -> Path:
    """A metric (F1, precision or recall) against confidence per class, and the smoothed mean with its peak."""
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    py = np.asarray(py)
    if 0 < len(names) < 21:
        for i, y in enumerate(py):
            ax.plot(px, y, linewidth=1, label=f"{names[i]}")
    elif len(py):
        ax.plot(px, py.T, linewidth=1, color="grey")
    if len(py):
        y = smooth(py.mean(0), 0.05)
        ax.plot(px, y, linewidth=3, color="blue", label=f"all classes {y.max():.2f} at {px[y.argmax()]:.3f}")
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=f"{ylabel}-Confidence Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    return save_figure(fig, save_path)


def plot_metric_curves(curves: PRCurves, save_dir: str | Path = ".", names=(), prefix: str = "") -> list[Path]:
    """PR_curve.png, F1_curve.png, P_curve.png and R_curve.png of utils.metrics.pr_curves's result in `save_dir`
    (YOLOv5's val plots); `names` (list, or dict id -> name) label the classes present."""
    save_dir = Path(save_dir)
    lookup = names if isinstance(names, dict) else dict(enumerate(names))
    present = [str(lookup.get(int(c), int(c))) for c in curves.classes] if lookup else []
    px = curves.px
    return [plot_pr_curve(px, curves.pr, curves.ap, save_dir / f"{prefix}PR_curve.png", present),
            plot_mc_curve(px, curves.f1, save_dir / f"{prefix}F1_curve.png", present, ylabel="F1"),
            plot_mc_curve(px, curves.p, save_dir / f"{prefix}P_curve.png", present, ylabel="Precision"),
            plot_mc_curve(px, curves.r, save_dir / f"{prefix}R_curve.png", present, ylabel="Recall")]


def plot_confusion_matrix(matrix: np.ndarray, save_path: str | Path = "confusion_matrix.png", names=(),
                          normalize: bool = True) -> Path:
    """Heat map of a (nc + 1, nc + 1) confusion matrix (rows predicted, columns true; last = background),
    columns normalized to sum to 1; cells annotated when there are fewer than 30 classes."""
    nc = matrix.shape[0] - 1
    array = matrix / ((matrix.sum(0).reshape(1, -1) + 1e-9) if normalize else 1)
    array = np.where(array < 0.005, np.nan, array)  # blank the near-empty cells
    names = list(names.values()) if isinstance(names, dict) else list(names)
    ticks = names + ["background"] if 0 < nc < 99 and len(names) == nc else None
    fig = new_figure((12, 9))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(array, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if nc < 30:
        for (i, j), v in np.ndenumerate(array):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}" if normalize else f"{v:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if v > 0.6 * np.nanmax(array) else "black")
    if ticks:
        size = 8 if nc < 50 else 5
        ax.set_xticks(range(nc + 1), ticks, rotation=90, fontsize=size)
        ax.set_yticks(range(nc + 1), ticks, fontsize=size)
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion Matrix")
    return save_figure(fig, save_path)


def plot_val_study(rows: np.ndarray, save_path: str | Path = "study.png", label: str = "") -> Path:
    """mAP50-95 and mAP50 against image size for `val.py --task study` (rows: imgsz, P, R, mAP50, mAP50-95,
    ms per image)."""
    rows = np.atleast_2d(rows)
    fig = new_figure((8, 5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(rows[:, 0], rows[:, 4], ".-", linewidth=2, markersize=8, label=f"{label} mAP50-95")
    ax.plot(rows[:, 0], rows[:, 3], ".--", linewidth=1, markersize=6, label=f"{label} mAP50")
    ax.set(xlabel="image size (pixels)", ylabel="COCO-style mAP", title="mAP against image size")
    ax.grid(alpha=0.2)
    ax.legend(loc="lower right")
    return save_figure(fig, save_path, dpi=200)



FEATURE_TILE = 160  # pixels: the long side of each channel's tile in a feature-map figure


def feature_visualization(x, module_type: str, stage: int, n: int = 32,
                          save_dir: str | Path = "runs/detect/exp") -> Path | None:
    """YOLOv5's feature-map figure of one layer (detect.py --visualize): the first `n` channels of the first
    image of x (B, C, H, W), 8 to a row, each scaled to its own min..max in the viridis colours (as matplotlib's
    imshow draws them in YOLOv5's figure), into save_dir/stage{stage}_{type}_features.png, and that image's whole
    map as .npy beside it. The tiles are drawn with OpenCV (nearest-neighbour, FEATURE_TILE pixels on the long
    side, 4-pixel white gaps): the same picture as YOLOv5's 32-axes matplotlib figure, in milliseconds instead of
    seconds per layer. Returns the PNG's path; None (nothing written) for the Detect head, for outputs that are
    not 4-D maps and for maps of a single row or column."""
    if "Detect" in module_type or "Segment" in module_type or getattr(x, "ndim", 0) != 4:
        return None
    _, channels, height, width = x.shape
    if height <= 1 or width <= 1:
        return None
    f = Path(save_dir) / f"stage{stage}_{module_type.split('.')[-1]}_features.png"
    maps = x[0].detach().float().cpu().numpy()
    n = min(n, channels)
    r = FEATURE_TILE / max(height, width)
    tw, th, gap, cols = max(1, round(width * r)), max(1, round(height * r)), 4, 8
    rows = math.ceil(n / cols)
    mosaic = np.full((rows * (th + gap) - gap, cols * (tw + gap) - gap, 3), 255, np.uint8)
    for i in range(n):
        m = maps[i]
        lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
        u8 = np.zeros(m.shape, np.uint8) if hi <= lo else ((m - lo) / (hi - lo) * 255).round().astype(np.uint8)
        tile = cv2.applyColorMap(cv2.resize(u8, (tw, th), interpolation=cv2.INTER_NEAREST), cv2.COLORMAP_VIRIDIS)
        y, x0 = (i // cols) * (th + gap), (i % cols) * (tw + gap)
        mosaic[y:y + th, x0:x0 + tw] = tile
    LOGGER.info(f"Saving {f}... ({n}/{channels})")
    f.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(f), mosaic):
        raise OSError(f"could not write {f}")
    np.save(str(f.with_suffix(".npy")), maps)
    return f
