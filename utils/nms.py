"""Non-maximum suppression of YOLO predictions, with YOLOv5's semantics, on `torchvision.ops.batched_nms`."""

from __future__ import annotations

import time

import torch

from utils.boxes import xywh2xyxy
from utils.log import LOGGER
from utils.errors import UserError

__all__ = ["non_max_suppression"]

MAX_NMS = 30_000  # boxes kept (by confidence) before NMS; bounds its quadratic cost


def _candidates(x: torch.Tensor, conf_thres: float, multi_label: bool) -> torch.Tensor:
    """(n, 5 + nc) rows of one image -> (m, 6) rows [x1, y1, x2, y2, conf, cls] above `conf_thres`.

    conf = objectness * class probability. With `multi_label` a box yields one row per class above the
    threshold; otherwise one row for its best class.
    """
    scores = x[:, 5:] * x[:, 4:5]  # (n, nc)
    box = xywh2xyxy(x[:, :4])
    if multi_label:
        i, j = (scores > conf_thres).nonzero(as_tuple=False).T
        return torch.cat((box[i], scores[i, j, None], j[:, None].float()), 1)
    conf, j = scores.max(1, keepdim=True)
    return torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]


def _with_labels(x: torch.Tensor, lb: torch.Tensor, nc: int) -> torch.Tensor:
    """Append a-priori labels (m, 5) [cls, cx, cy, w, h] (pixels) as detections of confidence 1."""
    v = torch.zeros((len(lb), nc + 5), device=x.device, dtype=x.dtype)
    v[:, :4] = lb[:, 1:5]
    v[:, 4] = 1.0
    v[torch.arange(len(lb)), lb[:, 0].long() + 5] = 1.0
    return torch.cat((x, v), 0)


def non_max_suppression(
    prediction,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    labels=(),
    max_det: int = 300,
    time_limit: float | None = -1.0,
) -> list[torch.Tensor]:
    """Per-image detections after NMS.

    Args:
        prediction: Tensor[B, N, 5 + nc] of pixel (cx, cy, w, h), objectness, class probabilities, as Detect
            returns it in eval mode (a (decoded, maps) tuple is accepted too).
        conf_thres: boxes need objectness > conf_thres, and objectness * class probability > conf_thres.
        iou_thres: IoU above which a lower-scored box of the same class (any class if `agnostic`) is dropped.
        classes: keep only these class ids.
        multi_label: one detection per (box, class) pair above the threshold, as YOLOv5 validates.
        labels: per image, Tensor[m, 5] [cls, cx, cy, w, h] added as confidence-1 detections (auto-labelling).
        max_det: at most this many detections per image (highest confidence first).
        time_limit: seconds after which the remaining images of the batch are left empty, with a warning;
            -1 is YOLOv5's 0.5 + 0.05 * batch size, None means no limit (val.py: a busy CPU must not drop
            images and silently change the mAP).

    Returns:
        list of B Tensors [n, 6]: x1, y1, x2, y2, conf, cls, sorted by decreasing confidence.
    """
    # imported here, not with the module: importing torchvision takes 1.5-2 s (it loads torch._dynamo), which a
    # script that stops at a bad option never needs to pay
    from torchvision.ops import batched_nms

    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0]
    if not 0 <= conf_thres <= 1:
        raise UserError(f"conf_thres={conf_thres} is not in [0, 1]")
    if not 0 <= iou_thres <= 1:
        raise UserError(f"iou_thres={iou_thres} is not in [0, 1]")
    device = prediction.device
    if device.type == "mps":  # torchvision NMS is not implemented on MPS
        prediction = prediction.cpu()
    bs, nc = prediction.shape[0], prediction.shape[2] - 5
    multi_label &= nc > 1
    keep_obj = prediction[..., 4] > conf_thres  # (B, N)
    class_filter = torch.tensor(classes, device=prediction.device) if classes is not None else None
    if time_limit is not None and time_limit < 0:
        time_limit = 0.5 + 0.05 * bs  # seconds, as YOLOv5
    t = time.time()
    output = [torch.zeros((0, 6), device=device)] * bs
    for xi, x in enumerate(prediction):
        x = x[keep_obj[xi]]
        if len(labels) and len(labels[xi]):
            x = _with_labels(x, labels[xi], nc)
        if not x.shape[0]:
            continue
        x = _candidates(x, conf_thres, multi_label)
        if class_filter is not None:
            x = x[(x[:, 5:6] == class_filter).any(1)]
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[:MAX_NMS]]
        idxs = torch.zeros_like(x[:, 5], dtype=torch.long) if agnostic else x[:, 5].long()
        keep = batched_nms(x[:, :4], x[:, 4], idxs, iou_thres)[:max_det]
        output[xi] = x[keep].to(device)
        if time_limit is not None and time.time() - t > time_limit:
            LOGGER.warning(f"WARNING: NMS time limit {time_limit:.3f}s exceeded; later images of this batch "
                           "get no detections")
            break
    return output
