"""Where Bi-Level Routing Attention looks: its regions drawn on a photo, with the regions a query routes to.

For each photo and each BiLevelRoutingAttention layer of a model, one PNG holds one panel per query: the
n_win x n_win regions of the layer (on the letterboxed network input, mapped back onto the photo) as a grid,
the query's region outlined in yellow, and the top-k regions it routes to shaded red, more opaque for a
larger routing weight. Queries are the centres of the most confident detections and any chosen points.

    from models.attention.routing import visualize_routing
    visualize_routing(model, ["data/images/bus.jpg"], "runs/detect/exp/routing", query_points=[(400, 500)])
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn

from models.attention.bra import BiLevelRoutingAttention, region_rect
from utils.data.augment import letterbox
from utils.errors import UserError
from utils.nms import non_max_suppression

__all__ = ["Query", "LetterboxMap", "RoutingRecord", "bra_layers", "recording_routing", "query_region",
           "routing_shade", "fit_photo", "draw_panel", "visualize_routing", "HEADER_H", "GAP", "SHADE_BGR",
           "shade_alpha"]

HEADER_H = 44  # pixels of text band above each panel
GAP = 8  # pixels between panels
SHADE_BGR = (40, 40, 230)  # red
OUTLINE_BGR = (0, 230, 255)  # yellow
GRID_BGR = (200, 200, 200)


def shade_alpha(w: float, w_max: float) -> float:
    """Opacity of a routed region: 0.25 for a weight near 0 up to 0.7 for the largest weight of the query."""
    return 0.25 + 0.45 * (w / w_max if w_max > 0 else 1.0)


@dataclass(frozen=True)
class LetterboxMap:
    """How a photo was letterboxed into the network input: input = photo * ratio + pad."""

    ratio: tuple[float, float]  # (rw, rh)
    pad: tuple[float, float]  # (dw, dh), pixels added on the left / top
    input_hw: tuple[int, int]
    photo_hw: tuple[int, int]

    def to_photo(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.pad[0]) / self.ratio[0], (y - self.pad[1]) / self.ratio[1]

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        return x * self.ratio[0] + self.pad[0], y * self.ratio[1] + self.pad[1]


@dataclass(frozen=True)
class Query:
    """A query point in network-input pixels; `box` (x1, y1, x2, y2 input pixels) and `label` if a detection."""

    x: float
    y: float
    label: str = ""
    box: tuple[float, float, float, float] | None = None


@dataclass
class RoutingRecord:
    """The routing of one BRA forward pass: index/weight (Tensor[N, n_win^2, topk]), detached.

    index[b, r] lists the regions that query region r of image b attends to, weight[b, r] their routing
    weights (softmax over the kept region affinities, best first). Regions are row-major in the n_win x n_win
    grid; `rect(region, stride)` gives a region's pixel rectangle for drawing.
    """

    index: torch.Tensor
    weight: torch.Tensor
    n_win: int
    window: tuple[int, int]  # (h, w) of one region, in feature-map cells
    size: tuple[int, int]  # real (H, W) of the map, before padding

    def rect(self, region: int, stride: int = 1) -> tuple[int, int, int, int]:
        return region_rect(region, self.n_win, self.window, self.size, stride)


@contextmanager
def recording_routing(layers: Sequence[nn.Module]) -> Iterator[list[RoutingRecord | None]]:
    """Record the routing of the BiLevelRoutingAttention modules `layers` while inside the `with` block.

    Yields a list with one slot per layer, None until that layer runs, then the RoutingRecord of its latest
    forward. It works through hooks only (a forward pre-hook on the layer for its input size, a forward hook on
    its `router` submodule for the routing weights and indices), all removed on leaving the block; the modules
    themselves keep nothing.
    """
    records: list[RoutingRecord | None] = [None] * len(layers)
    handles = []

    def watch(slot: int, m: nn.Module) -> None:
        size: list[tuple[int, int]] = []

        def take_size(_, args, kwargs):
            x = args[0] if args else kwargs["x"]
            size[:] = [tuple(x.shape[-2:])]

        def take_routing(_, args, out):
            weight, index = out
            (H, W), n = size[0], m.n_win
            window = (-(-H // n), -(-W // n))  # the padded map's region; H, W are multiples of n without auto_pad
            records[slot] = RoutingRecord(index.detach(), weight.detach(), n, window, (H, W))

        handles.append(m.register_forward_pre_hook(take_size, with_kwargs=True))
        handles.append(m.router.register_forward_hook(take_routing))

    try:
        for slot, m in enumerate(layers):
            watch(slot, m)
        yield records
    finally:
        for h in handles:
            h.remove()


def bra_layers(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """(layer index, module) of every BiLevelRoutingAttention in `model`, in forward order."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, BiLevelRoutingAttention):
            parts = name.split(".")  # model.<layer>[.m] when wrapped in Residual
            index = int(parts[1]) if len(parts) > 1 and parts[0] == "model" and parts[1].isdigit() else len(out)
            out.append((getattr(m, "i", index), m))
    return out


def layer_stride(record, input_hw: tuple[int, int]) -> int:
    """Input pixels per feature-map cell of the layer that made `record`."""
    return max(1, round(input_hw[0] / record.size[0]))


def query_region(record, x: float, y: float, stride: int) -> int:
    """Index (row-major) of the region that holds the feature-map cell under input pixel (x, y)."""
    H, W = record.size
    cy = min(max(int(y // stride), 0), H - 1)
    cx = min(max(int(x // stride), 0), W - 1)
    h, w = record.window
    return (cy // h) * record.n_win + cx // w


def _photo_rect(record, region: int, stride: int, lb: LetterboxMap, scale: float):
    """Region's rectangle in (scaled) photo pixels (x0, y0, x1, y1), clipped; None when it lies in padding."""
    x0, y0, x1, y1 = record.rect(region, stride)
    (px0, py0), (px1, py1) = lb.to_photo(x0, y0), lb.to_photo(x1, y1)
    H0, W0 = lb.photo_hw
    px0, px1 = (min(max(v, 0.0), W0) * scale for v in (px0, px1))
    py0, py1 = (min(max(v, 0.0), H0) * scale for v in (py0, py1))
    r = int(round(px0)), int(round(py0)), int(round(px1)), int(round(py1))
    return r if r[2] > r[0] and r[3] > r[1] else None


def routing_shade(record, region: int, stride: int, lb: LetterboxMap, scale: float = 1.0,
                  b: int = 0) -> np.ndarray:
    """(h, w) float32 opacity on the scaled photo: `shade_alpha` inside each region `region` routes to, else 0."""
    H0, W0 = lb.photo_hw
    out = np.zeros((round(H0 * scale), round(W0 * scale)), np.float32)
    idx, wt = record.index[b, region].tolist(), record.weight[b, region].float().tolist()
    for r, w in zip(idx, wt):
        rect = _photo_rect(record, r, stride, lb, scale)
        if rect:
            out[rect[1]:rect[3], rect[0]:rect[2]] = shade_alpha(w, max(wt))
    return out


def fit_photo(photo: np.ndarray, max_size: int) -> tuple[np.ndarray, float]:
    """The photo resized so that its longer side is at most `max_size` (INTER_AREA), and the scale used."""
    h, w = photo.shape[:2]
    s = min(1.0, max_size / max(h, w))
    if s == 1.0:
        return photo.copy(), 1.0
    return cv2.resize(photo, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA), s


def _grid_lines(im: np.ndarray, record, stride: int, lb: LetterboxMap, scale: float) -> None:
    for r in range(record.n_win ** 2):
        rect = _photo_rect(record, r, stride, lb, scale)
        if rect:
            cv2.rectangle(im, rect[:2], (rect[2] - 1, rect[3] - 1), GRID_BGR, 1)


def draw_panel(base: np.ndarray, record, query: Query, stride: int, lb: LetterboxMap, scale: float,
               title: str) -> np.ndarray:
    """One panel (HEADER_H + h, w, 3): header text, then `base` (the photo as `fit_photo` scaled it) with the
    region grid, the routed regions shaded and the query's region outlined."""
    region = query_region(record, query.x, query.y, stride)
    a = routing_shade(record, region, stride, lb, scale)[..., None]
    im = (base * (1 - a) + np.array(SHADE_BGR, np.float32) * a).round().clip(0, 255).astype(np.uint8)
    _grid_lines(im, record, stride, lb, scale)
    rect = _photo_rect(record, region, stride, lb, scale)
    if rect:
        cv2.rectangle(im, rect[:2], (rect[2] - 1, rect[3] - 1), OUTLINE_BGR, 3)
    if query.box is not None:
        (x1, y1), (x2, y2) = lb.to_photo(*query.box[:2]), lb.to_photo(*query.box[2:])
        cv2.rectangle(im, (round(x1 * scale), round(y1 * scale)), (round(x2 * scale), round(y2 * scale)),
                      (60, 220, 60), 2)
    qx, qy = lb.to_photo(query.x, query.y)
    cv2.circle(im, (round(qx * scale), round(qy * scale)), 4, (255, 255, 0), -1)
    header = np.full((HEADER_H, im.shape[1], 3), 255, np.uint8)
    routed = record.index[0, region].tolist()
    weights = " ".join(f"{w:.2f}" for w in record.weight[0, region].float().tolist())
    off = sum(_photo_rect(record, r, stride, lb, scale) is None for r in routed)
    note = f" ({off} of them in padding, off the photo)" if off else ""
    lines = (title + (f" | {query.label}" if query.label else ""), f"regions {routed}, weights {weights}{note}")
    for k, line in enumerate(lines):
        _put_fitted(header, line, 17 + 20 * k)
    return np.concatenate((header, im), 0)


def _put_fitted(header: np.ndarray, line: str, y: int, scale: float = 0.45, margin: int = 4) -> None:
    """`line` at baseline y, its font shrunk where needed so that it ends inside the panel (a long title or a
    narrow photo was clipped at the panel's edge)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    width = cv2.getTextSize(line, font, scale, 1)[0][0]
    room = header.shape[1] - 2 * margin
    if width > room:
        scale *= room / width
        while scale > 0.1 and cv2.getTextSize(line, font, scale, 1)[0][0] > room:
            scale *= 0.97
    cv2.putText(header, line, (margin, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)


def _letterbox_input(photo: np.ndarray, imgsz: int, stride: int, device, dtype):
    im, ratio, pad = letterbox(photo, imgsz, stride=stride, auto=True)
    lb = LetterboxMap(tuple(map(float, ratio)), tuple(map(float, pad)), im.shape[:2], photo.shape[:2])
    x = torch.from_numpy(np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1))).to(device, dtype) / 255
    return x[None], lb


def _detection_queries(pred, k: int, conf_thres: float, iou_thres: float, names) -> list[Query]:
    if k <= 0:
        return []
    det = non_max_suppression(pred, conf_thres, iou_thres, max_det=k)[0]  # sorted by confidence
    out = []
    for *xyxy, conf, cls in det[:k].tolist():
        name = names[int(cls)] if int(cls) < len(names) else str(int(cls))
        out.append(Query((xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2, f"{name} {conf:.2f}", tuple(xyxy)))
    return out


def _forward_recording(model: nn.Module, x: torch.Tensor, layers) -> tuple[torch.Tensor, list]:
    """Eval forward with routing recorded on every BRA layer; returns (decoded predictions, records)."""
    with recording_routing([m for _, m in layers]) as records, torch.no_grad():
        pred = model(x)
    return (pred[0] if isinstance(pred, (tuple, list)) else pred), records


def visualize_routing(model: nn.Module, image_paths: Sequence[str | Path], save_dir: str | Path,
                      query_points: Sequence[tuple[float, float]] | None = None, top_detections: int = 3,
                      imgsz: int = 640, conf_thres: float = 0.25, iou_thres: float = 0.45,
                      max_size: int = 640) -> list[Path]:
    """Draw BRA's routing on each photo; one PNG per photo and BRA layer in `save_dir`, paths returned.

    Args:
        model: a detection model with BiLevelRoutingAttention layers (eval mode is set and restored).
        image_paths: photos (any OpenCV-readable image).
        query_points: (x, y) pixels of the original photo, used on every photo in addition to detections.
        top_detections: the centres of this many most confident detections (after NMS) are queries too.
            With no query point and no detection, the photo centre is the query.
        imgsz: network input size (letterboxed, rectangle as detect.py makes it).
        max_size: longer side of each panel in pixels.
    """
    layers = bra_layers(model)
    if not layers:
        raise UserError("visualize_routing: the model has no BiLevelRoutingAttention layer; use a BiFormer "
                         "config such as yolov5n_biformer.yaml")
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    p = next(model.parameters())
    stride = int(max(getattr(model, "stride", torch.tensor([32.0])).max().item(), 32))
    names = list(getattr(model, "names", []))
    was_training, out = model.training, []
    model.eval()
    try:
        for path in image_paths:
            photo = cv2.imread(str(path))
            if photo is None:
                raise FileNotFoundError(f"visualize_routing: cannot read image {str(path)!r}")
            x, lb = _letterbox_input(photo, imgsz, stride, p.device, p.dtype)
            pred, records = _forward_recording(model, x, layers)
            queries = _detection_queries(pred, top_detections, conf_thres, iou_thres, names)
            queries += [Query(*lb.to_input(px, py), f"point ({px:.0f}, {py:.0f})") for px, py in query_points or ()]
            if not queries:
                h0, w0 = lb.photo_hw
                queries = [Query(*lb.to_input(w0 / 2, h0 / 2), "photo centre")]
            out += _save_figures(photo, layers, records, queries, lb, max_size, save_dir / Path(path).stem)
    finally:
        model.train(was_training)
    return out


def _save_figures(photo, layers, records, queries, lb, max_size: int, stem: Path) -> list[Path]:
    base, scale = fit_photo(photo, max_size)
    files = []
    for (i, _), rec in zip(layers, records):
        s = layer_stride(rec, lb.input_hw)
        title = f"layer {i} BRA P{int(math.log2(s))}/{s}, {rec.n_win}x{rec.n_win} regions, top-{rec.index.shape[-1]}"
        panels = [draw_panel(base, rec, q, s, lb, scale, title) for q in queries]
        gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
        row = [panels[0]]
        for pnl in panels[1:]:
            row += [gap, pnl]
        f = stem.with_name(f"{stem.name}_layer{i}.png")
        cv2.imwrite(str(f), np.concatenate(row, 1))
        files.append(f)
    return files
