"""ComputeLoss: target assignment on hand-placed targets, anchor filtering, and the loss against a naive
re-derivation written with Python floats and explicit loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from models.yolo import Detect
from utils.hyp import Hyp
from utils.training.loss import ComputeLoss, bbox_ciou, smooth_BCE


class _Head(nn.Module):
    """The least a ComputeLoss needs: `.model[-1]` is a Detect with strides and stride-unit anchors."""

    def __init__(self, nc: int, anchors_px: list[list[float]], strides: list[float]):
        super().__init__()
        det = Detect(nc, anchors_px, ch=[4] * len(anchors_px))
        det.stride = torch.tensor(strides)
        det.anchors /= det.stride.view(-1, 1, 1)
        self.model = nn.Sequential(det)


def _one_level(anchors_grid, nc=2, **hyp):
    # stride 1: anchors given in pixels are already in grid units
    return ComputeLoss(_Head(nc, [sum(anchors_grid, [])], [1.0]), Hyp(**hyp))


def _assigned(loss, target_xywh_grid, grid=8):
    """Assignments of one target on a grid x grid level as a set of (anchor, gj, gi, tx, ty)."""
    x, y, w, h = target_xywh_grid
    targets = torch.tensor([[0, 1, x / grid, y / grid, w / grid, h / grid]])
    preds = [torch.zeros(1, loss.na, grid, grid, 5 + loss.nc)]
    _, tbox, indices, _ = loss.build_targets(preds, targets)
    b, a, gj, gi = indices[0]
    return {(int(a[k]), int(gj[k]), int(gi[k]), round(float(tbox[0][k, 0]), 4), round(float(tbox[0][k, 1]), 4))
            for k in range(len(b))}


def test_target_near_cell_corner_gets_two_neighbours():
    loss = _one_level([[2, 2]])
    # centre (3.2, 5.3): lower-left part of cell (3, 5) -> also the left cell (2, 5) and the upper cell (3, 4)
    got = _assigned(loss, (3.2, 5.3, 2, 2))
    assert got == {(0, 5, 3, 0.2, 0.3), (0, 5, 2, 1.2, 0.3), (0, 4, 3, 0.2, 1.3)}
    # centre (6.7, 6.6): upper-right part -> right cell (7, 6) and lower cell (6, 7)
    got = _assigned(loss, (6.7, 6.6, 2, 2))
    assert got == {(0, 6, 6, 0.7, 0.6), (0, 6, 7, -0.3, 0.6), (0, 7, 6, 0.7, -0.4)}
    # within one cell of the border no neighbour outside the grid, nor the one across the border
    assert _assigned(loss, (0.3, 0.4, 2, 2)) == {(0, 0, 0, 0.3, 0.4)}
    assert _assigned(loss, (7.8, 7.9, 2, 2)) == {(0, 7, 7, 0.8, 0.9)}


def test_target_on_right_edge_is_clamped_into_the_grid():
    got = _assigned(_one_level([[2, 2]]), (8.0, 4.5, 2, 2))  # x = 1.0 normalised
    assert got == {(0, 4, 7, 1.0, 0.5)}  # cell 7, offset 1.0 from its corner (YOLOv5 clamps, then offsets)


def test_anchor_ratio_filter():
    # target 2 x 2 against anchors 1x1 (ratio 2), 3x3 (1.5), 8.5x8.5 (4.25 > anchor_t=4), 0.4x0.4 (5)
    loss = _one_level([[1, 1], [3, 3], [8.5, 8.5], [0.4, 0.4]])
    anchors = {a for a, *_ in _assigned(loss, (4.7, 4.7, 2, 2))}
    assert anchors == {0, 1}
    # the worse of the two side ratios decides: 2 x 0.45 against 1x1 is max(2, 2.22) -> kept at anchor_t 4 ...
    assert {a for a, *_ in _assigned(loss, (4.7, 4.7, 2, 0.45))} == {0}
    # ... and dropped at anchor_t 2
    loss2 = _one_level([[1, 1], [3, 3], [8.5, 8.5], [0.4, 0.4]], anchor_t=2.0)
    assert _assigned(loss2, (4.7, 4.7, 2, 0.45)) == set()


def test_ciou_matches_the_formula():
    torch.manual_seed(0)
    b1 = torch.cat((torch.rand(50, 2) * 4, torch.rand(50, 2) * 3 + 0.1), 1).double()
    b2 = torch.cat((torch.rand(50, 2) * 4, torch.rand(50, 2) * 3 + 0.1), 1).double()
    got = bbox_ciou(b1, b2)
    for k in range(50):
        assert float(got[k]) == pytest.approx(_ciou_naive(b1[k].tolist(), b2[k].tolist()), abs=1e-9)


def _ciou_naive(p, t, eps=1e-7):
    """CIoU (Zheng et al. 2020, eq. 10-11) of two cx, cy, w, h boxes with plain floats."""
    px1, px2, py1, py2 = p[0] - p[2] / 2, p[0] + p[2] / 2, p[1] - p[3] / 2, p[1] + p[3] / 2
    tx1, tx2, ty1, ty2 = t[0] - t[2] / 2, t[0] + t[2] / 2, t[1] - t[3] / 2, t[1] + t[3] / 2
    inter = max(0.0, min(px2, tx2) - max(px1, tx1)) * max(0.0, min(py2, ty2) - max(py1, ty1))
    iou = inter / (p[2] * p[3] + t[2] * t[3] - inter + eps)
    c2 = (max(px2, tx2) - min(px1, tx1)) ** 2 + (max(py2, ty2) - min(py1, ty1)) ** 2 + eps
    rho2 = (p[0] - t[0]) ** 2 + (p[1] - t[1]) ** 2
    v = 4 / math.pi**2 * (math.atan(t[2] / t[3]) - math.atan(p[2] / p[3])) ** 2
    alpha = v / (1 - iou + v + eps)
    return iou - rho2 / c2 - alpha * v


def _bce(x, y):
    s = 1 / (1 + math.exp(-x))
    return -(y * math.log(s) + (1 - y) * math.log(1 - s))


def _naive_loss(preds, targets, anchors, hyp, balance=(4.0, 1.0, 0.4)):
    """YOLOv5's loss re-derived with loops: every (target, anchor, cell) the rules admit, then the three terms."""
    cp, cn = smooth_BCE(hyp.label_smoothing)
    lbox = lobj = lcls = 0.0
    for lvl, p in enumerate(preds):
        bs, na, ny, nx, no = p.shape
        tobj, boxes, clss = {}, [], []
        for img, c, x, y, w, h in targets.tolist():
            gx, gy, gw, gh = x * nx, y * ny, w * nx, h * ny
            for a in range(na):
                aw, ah = anchors[lvl][a]
                if max(gw / aw, aw / gw, gh / ah, ah / gh) >= hyp.anchor_t:
                    continue
                cells = [(int(gx), int(gy))]
                if gx % 1 < 0.5 and gx > 1:
                    cells.append((int(gx - 0.5), int(gy)))
                if gy % 1 < 0.5 and gy > 1:
                    cells.append((int(gx), int(gy - 0.5)))
                if (nx - gx) % 1 < 0.5 and nx - gx > 1:
                    cells.append((int(gx + 0.5), int(gy)))
                if (ny - gy) % 1 < 0.5 and ny - gy > 1:
                    cells.append((int(gx), int(gy + 0.5)))
                for ci, cj in cells:
                    ci, cj = min(max(ci, 0), nx - 1), min(max(cj, 0), ny - 1)
                    v = p[int(img), a, cj, ci].tolist()
                    sig = [1 / (1 + math.exp(-q)) for q in v]
                    pbox = [sig[0] * 2 - 0.5, sig[1] * 2 - 0.5, (sig[2] * 2) ** 2 * aw, (sig[3] * 2) ** 2 * ah]
                    iou = _ciou_naive(pbox, [gx - ci, gy - cj, gw, gh])
                    boxes.append(1 - iou)
                    tobj[(int(img), a, cj, ci)] = max(iou, 0.0)  # the last assignment of a cell wins
                    clss.append(sum(_bce(v[5 + k], cp if k == int(c) else cn) for k in range(no - 5)) / (no - 5))
        if boxes:
            lbox += sum(boxes) / len(boxes)
            lcls += sum(clss) / len(clss)
        obj = sum(_bce(float(p[b, a, j, i, 4]), tobj.get((b, a, j, i), 0.0))
                  for b in range(bs) for a in range(na) for j in range(ny) for i in range(nx)) / (bs * na * ny * nx)
        lobj += obj * balance[lvl]
    items = [lbox * hyp.box, lobj * hyp.obj, lcls * hyp.cls]
    return sum(items) * preds[0].shape[0], items


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_matches_naive_computation(smoothing):
    torch.manual_seed(1)
    anchors_px = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    head = _Head(3, anchors_px, [8.0, 16.0, 32.0]).double()
    hyp = Hyp(box=0.05, obj=0.7, cls=0.3, label_smoothing=smoothing)
    loss = ComputeLoss(head, hyp)
    preds = [torch.randn(2, 3, s, s, 8, dtype=torch.float64) for s in (8, 4, 2)]  # a 64 x 64 batch image
    targets = torch.tensor([[0, 2, 0.40, 0.55, 0.30, 0.25],  # mid-size: several anchors and levels
                            [0, 0, 0.10, 0.12, 0.08, 0.20],  # small, near the corner
                            [1, 1, 0.77, 0.31, 0.60, 0.90],  # large
                            [1, 2, 0.52, 0.52, 0.05, 0.04]], dtype=torch.float64)
    total, items = loss(preds, targets)
    anchors = [[(w / s, h / s) for w, h in zip(a[::2], a[1::2])] for a, s in zip(anchors_px, (8, 16, 32))]
    ref_total, ref_items = _naive_loss(preds, targets, anchors, hyp)
    # the three accumulators are float32 as in YOLOv5; everything before them is float64 here
    assert items.tolist() == pytest.approx(ref_items, rel=1e-6)
    assert float(total) == pytest.approx(ref_total, rel=1e-6)


def test_loss_without_targets_is_objectness_only_and_has_gradients():
    head = _Head(80, [[10, 13, 16, 30, 33, 23]] * 3, [8.0, 16.0, 32.0])
    loss = ComputeLoss(head, Hyp())
    preds = [torch.zeros(2, 3, s, s, 85, requires_grad=True) for s in (4, 2, 1)]
    total, items = loss(preds, torch.zeros(0, 6))
    # every logit 0 against target 0: BCE = log 2 per cell, weighted 4 + 1 + 0.4 and scaled by batch 2
    assert items.tolist() == pytest.approx([0.0, 5.4 * math.log(2), 0.0], rel=1e-6)
    assert total.item() == pytest.approx(2 * 5.4 * math.log(2), rel=1e-6)
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in preds)


def test_ciou_is_finite_with_finite_gradients_for_degenerate_boxes():
    from torchvision.ops import complete_box_iou_loss

    # a tiny predicted height far below its centre: in corner form y2 - y1 rounds to 0 in float32, and
    # torchvision's aspect term divides 0 by 0 (the NaN that stopped fine-tunes)
    p = torch.tensor([[1.0, 1.0, 1e-8, 1e-8], [0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.3, 0.0], [0.5, 0.5, 0.0, 0.2],
                      [0.4, 0.6, 0.5, 0.7], [0.4, 0.6, 0.5, 0.7]], requires_grad=True)
    t = torch.tensor([[1.0, 1.0, 0.5, 0.5], [0.5, 0.5, 0.4, 0.6], [0.6, 0.4, 0.2, 0.3], [0.5, 0.5, 0.3, 0.3],
                      [0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.3, 0.0]], requires_grad=True)
    corners = lambda b: torch.cat((b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2), 1)  # noqa: E731
    assert torch.isnan(complete_box_iou_loss(corners(p[:1]), corners(t[:1]), reduction="none")).all()
    got = bbox_ciou(p, t)
    assert torch.isfinite(got).all()
    got.sum().backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(t.grad).all()
    assert p.grad[1:, :2].abs().sum() > 0  # the centres of degenerate boxes still learn
    # where the formula is defined and h is not below eps it is followed: a predicted box of zero width
    got = got.detach()
    assert float(got[3]) == pytest.approx(_ciou_naive(p[3].tolist(), t[3].tolist()), abs=1e-6)
    assert float(got[0]) == pytest.approx(0.0, abs=0.05)  # IoU 0, same centre; aspect of h < eps is approximate


def test_loss_is_finite_when_predicted_sizes_underflow_and_targets_have_zero_size():
    torch.manual_seed(0)
    anchors_px = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    loss = ComputeLoss(_Head(3, anchors_px, [8.0, 16.0, 32.0]), Hyp())
    preds = [torch.randn(2, 3, s, s, 8) for s in (8, 4, 2)]
    for p in preds:
        p[..., 2:4] = -120.0  # sigmoid underflows to exactly 0 in float32: predicted width and height 0
        p.requires_grad_(True)
    targets = torch.tensor([[0, 2, 0.40, 0.55, 0.30, 0.25], [1, 0, 0.50, 0.50, 0.20, 0.0],  # zero height
                            [1, 1, 0.25, 0.75, 0.0, 0.10]])  # zero width
    total, items = loss(preds, targets)
    assert torch.isfinite(total).all() and torch.isfinite(items).all() and items[0] > 0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in preds)
    assert sum(p.grad[..., :2].abs().sum() for p in preds) > 0  # the box centres get a gradient
