"""Image augmentations with YOLOv5's arithmetic: letterbox, HSV, random perspective, mosaic, flips, mixup.

Images are (H, W, 3) uint8 BGR arrays. Labels are float arrays (n, 5): [cls, x1, y1, x2, y2] in pixels for
`random_perspective`/`mosaic`, [cls, cx, cy, w, h] normalized for the flips. Randomness comes from Python's
`random` and NumPy's global generator, as in YOLOv5 (dataloader workers seed both).
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from utils.boxes import xywhn2xyxy

__all__ = [
    "letterbox", "augment_hsv", "box_candidates", "perspective_matrix", "warp_boxes", "random_perspective",
    "mosaic_canvas", "mosaic", "flip_ud", "flip_lr", "mixup", "multi_scale",
]

PAD_VALUE = 114  # YOLOv5's grey for padding and empty canvas


def letterbox(im: np.ndarray, new_shape: int | tuple[int, int] = 640, color=(114, 114, 114), auto: bool = True,
              scale_fill: bool = False, scaleup: bool = True, stride: int = 32):
    """Resize keeping the aspect ratio and pad to `new_shape` (h, w); returns (im, (ratio_w, ratio_h), (dw, dh)).

    auto: pad only to the smallest multiple of `stride` (a rectangle); scale_fill: stretch, no padding;
    scaleup=False: never enlarge (validation). dw, dh are the padding per side (float, halves of the total).
    """
    shape = im.shape[:2]  # current (h, w)
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    ratio = r, r
    new_unpad = max(int(round(shape[1] * r)), 1), max(int(round(shape[0] * r)), 1)  # (w, h); a 4x8000 image keeps 1 px
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    elif scale_fill:
        dw, dh = 0.0, 0.0
        new_unpad = (new_shape[1], new_shape[0])
        ratio = new_shape[1] / shape[1], new_shape[0] / shape[0]
    dw /= 2  # split the padding between the two sides
    dh /= 2
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, ratio, (dw, dh)


def augment_hsv(im: np.ndarray, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5) -> None:
    """Random hue/saturation/value gains applied in place through lookup tables (YOLOv5's method)."""
    if not (hgain or sgain or vgain):
        return
    r = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1  # gains
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(im.dtype)  # OpenCV's 8-bit hue spans 0..179
    lut_sat = np.clip(x * r[1], 0, 255).astype(im.dtype)
    lut_val = np.clip(x * r[2], 0, 255).astype(im.dtype)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=im)


def box_candidates(box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Boxes to keep after augmentation: box1 (4, n) before (scaled), box2 (4, n) after, both xyxy.

    Kept: wider and taller than wh_thr pixels, aspect ratio below ar_thr, and more than area_thr of the area.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def perspective_matrix(in_hw: tuple[int, int], out_hw: tuple[int, int], degrees: float = 10, translate: float = 0.1,
                       scale: float = 0.1, shear: float = 10, perspective: float = 0.0) -> tuple[np.ndarray, float]:
    """A random 3x3 warp (centre, perspective, rotate+scale, shear, translate) and its scale factor."""
    C = np.eye(3)
    C[0, 2] = -in_hw[1] / 2  # x translation (pixels)
    C[1, 2] = -in_hw[0] / 2  # y translation (pixels)
    P = np.eye(3)
    P[2, 0] = random.uniform(-perspective, perspective)  # x perspective (about y)
    P[2, 1] = random.uniform(-perspective, perspective)  # y perspective (about x)
    R = np.eye(3)
    a = random.uniform(-degrees, degrees)
    s = random.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)
    S = np.eye(3)
    S[0, 1] = math.tan(random.uniform(-shear, shear) * math.pi / 180)  # x shear (deg)
    S[1, 0] = math.tan(random.uniform(-shear, shear) * math.pi / 180)  # y shear (deg)
    T = np.eye(3)
    T[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_hw[1]  # x translation (pixels)
    T[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_hw[0]  # y translation (pixels)
    return T @ S @ R @ P @ C, s  # order matters: right to left


def warp_boxes(boxes: np.ndarray, M: np.ndarray, width: int, height: int, perspective: bool) -> np.ndarray:
    """xyxy boxes (n, 4) -> the xyxy boxes enclosing their 4 warped corners, clipped to width x height."""
    n = len(boxes)
    xy = np.ones((n * 4, 3))
    xy[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # corners x1y1, x2y2, x1y2, x2y1
    xy = xy @ M.T
    xy = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    new = np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
    return new


def random_perspective(im: np.ndarray, targets: np.ndarray | None = None, degrees: float = 10,
                       translate: float = 0.1, scale: float = 0.1, shear: float = 10, perspective: float = 0.0,
                       border: tuple[int, int] = (0, 0)):
    """Random affine/perspective warp of an image and its [cls, x1, y1, x2, y2] pixel targets.

    The output is the input size plus 2*border on each axis (border=(-s/2, -s/2) crops a 2s mosaic to s).
    Boxes are the hull of their warped corners, then filtered by `box_candidates`.
    """
    targets = np.zeros((0, 5), np.float32) if targets is None else targets
    height, width = im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2
    M, s = perspective_matrix(im.shape[:2], (height, width), degrees, translate, scale, shear, perspective)
    if border[0] != 0 or border[1] != 0 or (M != np.eye(3)).any():
        fill = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
        if perspective:
            im = cv2.warpPerspective(im, M, dsize=(width, height), borderValue=fill)
        else:
            im = cv2.warpAffine(im, M[:2], dsize=(width, height), borderValue=fill)
    if len(targets):
        new = warp_boxes(targets[:, 1:5], M, width, height, bool(perspective))
        keep = box_candidates(box1=targets[:, 1:5].T * s, box2=new.T, area_thr=0.10)
        targets = targets[keep]
        targets[:, 1:5] = new[keep]
    return im, targets


def mosaic_canvas(ims: list[np.ndarray], labels: list[np.ndarray], s: int, xc: int, yc: int):
    """Four images around the centre (xc, yc) of a 2s x 2s grey canvas, as YOLOv5's load_mosaic places them.

    labels: normalized [cls, cx, cy, w, h] per image. Returns (canvas, [cls, x1, y1, x2, y2] clipped to 2s).
    """
    img4 = np.full((s * 2, s * 2, ims[0].shape[2]), PAD_VALUE, dtype=np.uint8)
    out = []
    for i, (img, lb) in enumerate(zip(ims, labels)):
        h, w = img.shape[:2]
        if i == 0:  # top left: xmin, ymin, xmax, ymax on the canvas (a) and in the image (b)
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s * 2), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s * 2), min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        img4[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        lb = np.array(lb, dtype=np.float32).reshape(-1, 5)
        if len(lb):
            lb[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h, padw=x1a - x1b, padh=y1a - y1b)
        out.append(lb)
    labels4 = np.concatenate(out, 0)
    np.clip(labels4[:, 1:], 0, 2 * s, out=labels4[:, 1:])
    return img4, labels4


def mosaic(ims: list[np.ndarray], labels: list[np.ndarray], s: int, degrees: float = 0.0, translate: float = 0.1,
           scale: float = 0.5, shear: float = 0.0, perspective: float = 0.0):
    """YOLOv5's 4-image mosaic: centre drawn in [s/2, 1.5s] of a 2s canvas, then a random perspective that
    crops it to s x s. Returns (image (s, s, 3), labels [cls, x1, y1, x2, y2] pixels)."""
    border = (-s // 2, -s // 2)
    yc, xc = (int(random.uniform(-x, 2 * s + x)) for x in border)
    img4, labels4 = mosaic_canvas(ims, labels, s, xc, yc)
    return random_perspective(img4, labels4, degrees, translate, scale, shear, perspective, border=border)


def flip_ud(im: np.ndarray, labels: np.ndarray):
    """Flip up-down; labels normalized [cls, cx, cy, w, h]."""
    labels = labels.copy()
    if len(labels):
        labels[:, 2] = 1 - labels[:, 2]
    return np.flipud(im), labels


def flip_lr(im: np.ndarray, labels: np.ndarray):
    """Flip left-right; labels normalized [cls, cx, cy, w, h]."""
    labels = labels.copy()
    if len(labels):
        labels[:, 1] = 1 - labels[:, 1]
    return np.fliplr(im), labels


def mixup(im: np.ndarray, labels: np.ndarray, im2: np.ndarray, labels2: np.ndarray):
    """Blend two images with a Beta(32, 32) ratio and keep both label sets (YOLOv5's MixUp)."""
    r = np.random.beta(32.0, 32.0)
    im = (im * r + im2 * (1 - r)).astype(np.uint8)
    return im, np.concatenate((labels, labels2), 0)


def multi_scale(imgs: torch.Tensor, imgsz: int, gs: int) -> torch.Tensor:
    """train.py --multi-scale: the batch (B, 3, H, W) resized to a random size in 0.5-1.5 x imgsz, a multiple
    of the stride `gs` (bilinear; the labels are normalised, so they need no change)."""
    sz = random.randrange(int(imgsz * 0.5), int(imgsz * 1.5) + gs) // gs * gs
    sf = sz / max(imgs.shape[2:])
    if sf != 1:
        ns = [math.ceil(x * sf / gs) * gs for x in imgs.shape[2:]]
        imgs = F.interpolate(imgs, size=ns, mode="bilinear", align_corners=False)
    return imgs
