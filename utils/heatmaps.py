"""Where a detector looks: class-activation heatmaps through the `grad-cam` package (pytorch-grad-cam).

* EigenCAM (Muhammad & Yeasin, 2020): the first principal component of each target layer's activations, no
  gradient and no class needed, the method YOLOv5's users apply to detectors;
* Grad-CAM (Selvaraju et al., 2017) on the detection score: for each class asked for, the highest objectness x
  class probability among the model's predictions (`DetectionScore`), its gradient weighting each channel.

The target layers are the three maps the Detect head reads (the neck's outputs at P3, P4 and P5; with the plug-ins
at layers 20 and 24 those maps are the ones the attention fed); grad-cam scales each layer's map to the input and
averages them. `heatmap` gives one map in [0, 1] at the letterboxed input's size, `overlay` lays it on the photo
(the padding cropped off), `heatmap_grid` draws photos x models side by side for compare.py's report, and
detect.py --heatmap writes one figure per image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

from utils.data.augment import letterbox
from utils.errors import UserError

__all__ = ["METHODS", "DetectionScore", "heatmap", "overlay", "photo_heatmap", "heatmap_grid"]

METHODS = ("eigencam", "gradcam")


class _Predictions(nn.Module):
    """The detector's predictions (B, anchors x cells, 5 + nc), the one tensor the CAM classes expect."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


class DetectionScore:
    """Grad-CAM's target for one image's predictions (N, 5 + nc): the sum over `classes` of the highest
    objectness x class probability of that class."""

    def __init__(self, classes):
        self.classes = sorted({int(c) for c in classes})

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        score = out[:, 4:5] * out[:, 5:]
        return sum(score[:, c].max() for c in self.classes)


def _target_layers(model: nn.Module) -> list[nn.Module]:
    head = model.model[-1]
    return [model.model[i] for i in head.f]


def heatmap(model: nn.Module, x: torch.Tensor, method: str = "eigencam", classes=None) -> np.ndarray:
    """The class-activation map of `model` (a models.yolo.Model in eval mode) for the image batch x (1, 3, H, W),
    (H, W) in [0, 1]. `classes` (Grad-CAM only): the classes to explain; None: the top-scoring prediction's."""
    from pytorch_grad_cam import EigenCAM, GradCAM

    if method not in METHODS:
        raise UserError(f"heatmap method {method!r}: choose one of {', '.join(METHODS)}")
    wrapped = _Predictions(model).eval()
    targets = None
    if method == "gradcam":
        if classes is None or not len(classes):
            with torch.no_grad():
                pred = wrapped(x)[0]
            score = pred[:, 4:5] * pred[:, 5:]
            classes = [int(score.max(0).values.argmax())]
        targets = [DetectionScore(classes)]
    cam_class = {"eigencam": EigenCAM, "gradcam": GradCAM}[method]
    with torch.enable_grad(), cam_class(model=wrapped, target_layers=_target_layers(model)) as cam:
        # the input carries the gradient: a deployed model's own weights may be frozen (requires_grad False)
        return cam(input_tensor=x.detach().requires_grad_(method == "gradcam"), targets=targets)[0]


def overlay(photo: np.ndarray, cam: np.ndarray, pad: tuple[float, float], ratio: float,
            alpha: float = 0.5) -> np.ndarray:
    """`cam` (at the letterboxed size) with the padding cropped off, resized to `photo` (BGR uint8) and laid on it
    in the JET colour map; `pad` (dw, dh) and `ratio` are the letterbox's."""
    h, w = photo.shape[:2]
    dw, dh = pad
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    inner = cam[top:top + int(round(h * ratio)), left:left + int(round(w * ratio))]
    inner = cv2.resize(inner.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(inner, 0, 1)), cv2.COLORMAP_JET)
    return cv2.addWeighted(photo, 1 - alpha, colour, alpha, 0)


def photo_heatmap(model: nn.Module, photo: np.ndarray, imgsz: int, method: str = "eigencam", classes=None,
                  stride: int = 32) -> np.ndarray:
    """The heatmap of `model` on a BGR photo letterboxed to imgsz (square, as compare's figures and detect.py's
    fixed size), laid on the photo."""
    im, ratio, pad = letterbox(photo, imgsz, stride=stride, auto=False)
    p = next(model.parameters())
    x = torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))).to(p.device, p.dtype)[None] / 255
    return overlay(photo, heatmap(model, x, method, classes), pad, ratio[0])


def heatmap_grid(models: dict[str, nn.Module], photos: list[Path], out: Path, imgsz: int,
                 method: str = "eigencam") -> Path:
    """One figure, a row per photo and a column per model ({name: model}), each panel the model's heatmap on the
    photo; written to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.plots import save_figure

    ims = [cv2.imread(str(p)) for p in photos]
    rows, cols = len(photos), len(models)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for j, (name, model) in enumerate(models.items()):
        for i, (photo, im) in enumerate(zip(photos, ims)):
            ax = axes[i][j]
            ax.imshow(photo_heatmap(model, im, imgsz, method)[:, :, ::-1])
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(f"{'EigenCAM' if method == 'eigencam' else 'Grad-CAM'} on the maps Detect reads (P3-P5), "
                 f"photos letterboxed to {imgsz}", fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, out, dpi=120)
    plt.close(fig)
    return path
