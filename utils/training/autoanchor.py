"""AutoAnchor: check how well the model's anchors fit a dataset's boxes and, if poorly, evolve new ones.

The fit of a box (w, h) to an anchor (aw, ah) is r = min(w/aw, aw/w, h/ah, ah/h); a box is recallable when
r > 1/anchor_t for some anchor (the loss assigns it to that anchor). Best possible recall (BPR) is the share of
recallable boxes. Below 0.98, k-means on the boxes plus a genetic search gives new anchors, kept if better.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from tqdm import tqdm

from models.yolo import check_anchor_order
from utils.log import LOGGER, colorstr
from utils.torch_utils import de_parallel

__all__ = ["check_anchors", "kmean_anchors", "anchor_metric", "label_wh"]

PREFIX = "AutoAnchor: "
BPR_THRESHOLD = 0.98


def anchor_metric(k: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit of every box to every anchor (n, na) and each box's best fit (n,), for k (na, 2) and wh (n, 2)."""
    r = wh[:, None] / k[None]
    x = torch.min(r, 1 / r).min(2)[0]
    return x, x.max(1)[0]


def label_wh(dataset, imgsz: int, scale: np.ndarray | None = None) -> np.ndarray:
    """Box sizes (n, 2) in pixels with each image's long side resized to imgsz (and multiplied by `scale`)."""
    shapes = imgsz * dataset.shapes / dataset.shapes.max(1, keepdims=True)  # (n_img, 2) w, h
    if scale is not None:
        shapes = shapes * scale
    wh = [lb[:, 3:5] * s for s, lb in zip(shapes, dataset.labels) if len(lb)]
    return np.concatenate(wh, 0) if wh else np.zeros((0, 2), dtype=np.float32)


def check_anchors(dataset, model, thr: float = 4.0, imgsz: int = 640) -> bool:
    """Log the BPR of the model's anchors on `dataset`; below 0.98 replace them with evolved ones if those fit
    better. Returns True when the anchors were replaced."""
    m = de_parallel(model).model[-1]
    scale = np.random.uniform(0.9, 1.1, size=(len(dataset.shapes), 1))  # the augmentation's scale jitter
    wh = torch.tensor(label_wh(dataset, imgsz, scale)).float()
    if not len(wh):
        LOGGER.info(f"{colorstr(PREFIX)}no labels to check the anchors against; keeping them")
        return False

    def metric(k):
        x, best = anchor_metric(k, wh)
        aat = (x > 1 / thr).float().sum(1).mean()  # anchors above threshold per box
        bpr = (best > 1 / thr).float().mean()
        return bpr, aat

    stride = m.stride.to(m.anchors.device).view(-1, 1, 1)
    anchors = m.anchors.clone() * stride  # pixels
    bpr, aat = metric(anchors.cpu().view(-1, 2))
    s = f"\n{colorstr(PREFIX)}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr > BPR_THRESHOLD:
        LOGGER.info(f"{s}Current anchors are a good fit to dataset")
        return False
    LOGGER.info(f"{s}Anchors are a poor fit to dataset, attempting to improve...")
    na = m.anchors.numel() // 2
    new = kmean_anchors(dataset, n=na, img_size=imgsz, thr=thr, gen=1000, verbose=False)
    new_bpr = metric(torch.tensor(new))[0]
    if new_bpr > bpr:
        m.anchors[:] = torch.tensor(new, device=m.anchors.device).type_as(m.anchors).view_as(m.anchors)
        check_anchor_order(m)  # anchors in pixels here; the order check compares areas only
        m.anchors /= stride
        LOGGER.info(f"{colorstr(PREFIX)}Done (optional: update model *.yaml to use these anchors in the future)")
        return True
    LOGGER.info(f"{colorstr(PREFIX)}Done (original anchors better than new anchors, proceeding with original anchors)")
    return False


def _report(k: np.ndarray, wh0: torch.Tensor, thr: float, img_size: int) -> np.ndarray:
    k = k[np.argsort(k.prod(1))]  # small to large
    x, best = anchor_metric(torch.tensor(k, dtype=torch.float32), wh0)
    bpr, aat = (best > thr).float().mean(), (x > thr).float().mean() * len(k)
    s = (f"{colorstr(PREFIX)}thr={thr:.2f}: {bpr:.4f} best possible recall, {aat:.2f} anchors past thr\n"
         f"{colorstr(PREFIX)}n={len(k)}, img_size={img_size}, metric_all={x.mean():.3f}/{best.mean():.3f}-mean/best, "
         f"past_thr={x[x > thr].mean():.3f}-mean: ")
    LOGGER.info(s + ", ".join(f"{round(a)},{round(b)}" for a, b in k))
    return k


def kmean_anchors(dataset, n: int = 9, img_size: int = 640, thr: float = 4.0, gen: int = 1000,
                  verbose: bool = True) -> np.ndarray:
    """Anchors (n, 2) in pixels evolved for `dataset` (with .shapes and .labels): k-means on the whitened box
    sizes, then `gen` generations of multiplicative mutation keeping any improvement of the fitness
    mean(best * (best > 1/thr))."""
    from scipy.cluster.vq import kmeans  # lazy: scipy is heavy; loaded only when anchors are evolved

    thr = 1 / thr
    wh0 = label_wh(dataset, img_size)
    i = (wh0 < 3.0).any(1).sum()
    if i:
        LOGGER.info(f"{colorstr(PREFIX)}WARNING: Extremely small objects found: {i} of {len(wh0)} labels are "
                    f"< 3 pixels in size")
    wh = wh0[(wh0 >= 2.0).any(1)].astype(np.float32)  # boxes of at least 2 pixels on a side
    LOGGER.info(f"{colorstr(PREFIX)}Running kmeans for {n} anchors on {len(wh)} points...")
    k = None
    if n <= len(wh):
        s = wh.std(0)
        k = kmeans(wh / s, n, iter=30)[0] * s
    if k is None or len(k) != n:  # too few boxes, or k-means merged clusters
        LOGGER.warning(f"{colorstr(PREFIX)}WARNING: switching strategies from kmeans to random init")
        k = np.sort(np.random.rand(n * 2)).reshape(n, 2) * img_size
    wh_t, wh0_t = torch.tensor(wh, dtype=torch.float32), torch.tensor(wh0, dtype=torch.float32)
    k = _report(k, wh0_t, thr, img_size)

    def fitness(kk: np.ndarray) -> float:
        _, best = anchor_metric(torch.tensor(kk, dtype=torch.float32), wh_t)
        return float((best * (best > thr).float()).mean())

    f, sh, mp, s = fitness(k), k.shape, 0.9, 0.1  # fitness, shape, mutation probability, sigma
    pbar = tqdm(range(gen), bar_format="{l_bar}{bar:10}{r_bar}")
    for _ in pbar:
        v = np.ones(sh)
        while (v == 1).all():  # mutate until something changes
            v = ((np.random.random(sh) < mp) * random.random() * np.random.randn(*sh) * s + 1).clip(0.3, 3.0)
        kg = (k.copy() * v).clip(min=2.0)
        fg = fitness(kg)
        if fg > f:
            f, k = fg, kg.copy()
            pbar.desc = f"{PREFIX}Evolving anchors with Genetic Algorithm: fitness = {f:.4f}"
            if verbose:
                _report(k, wh0_t, thr, img_size)
    return _report(k, wh0_t, thr, img_size).astype(np.float32)
