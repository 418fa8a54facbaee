"""YOLOv5's training loss: target assignment by anchor shape, CIoU box loss, objectness and class BCE.

    compute_loss = ComputeLoss(model, hyp)          # hyp: utils.hyp.Hyp with box/obj/cls already scaled
    loss, items = compute_loss(preds, targets)      # loss (1,) = (box + obj + cls) * batch; items (3,) detached

`preds` are the raw Detect maps, one per level, shaped (batch, anchors, ny, nx, 5 + nc); `targets` is (N, 6)
[image index, class, cx, cy, w, h] with coordinates normalised to the batch image.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from utils.hyp import Hyp
from utils.torch_utils import de_parallel

__all__ = ["ComputeLoss", "smooth_BCE", "bbox_ciou", "FocalLoss"]

# Neighbouring cells that also predict a target whose centre lies within g of their shared edge (x, y).
_G = 0.5
_OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * _G


def smooth_BCE(eps: float = 0.1) -> tuple[float, float]:
    """Positive and negative class targets under label smoothing eps (https://arxiv.org/abs/1902.04103 eq. 3)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU (Zheng et al. 2020, eq. 10-11) of matching rows of two (n, 4) cx, cy, w, h boxes -> (n,).

    Finite, with finite gradients, for boxes of zero or vanishing width or height. torchvision's
    complete_box_iou_loss is not: it takes corners, so a height far below the centre's magnitude (h = 1e-8 at
    cy = 1) rounds to exactly 0 in float32 when it recovers h = y2 - y1, and its aspect term atan(w / h) then
    divides 0 by 0 (NaN forward and backward). Here w and h come straight from the input, and h is clamped to
    eps in the aspect term, as YOLOv5's bbox_iou does. Computed in float32 at least (under autocast too); the
    alpha term carries no gradient.
    """
    dtype = torch.promote_types(torch.promote_types(box1.dtype, box2.dtype), torch.float32)
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.to(dtype).unbind(-1), box2.to(dtype).unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = ((torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0)
             * (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(0))
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)  # smallest enclosing box
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2  # squared distance of the centres
    v = (4 / math.pi**2) * (torch.atan(w2 / h2.clamp(min=eps)) - torch.atan(w1 / h1.clamp(min=eps))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + alpha * v)


class FocalLoss(nn.Module):
    """Focal loss around a BCEWithLogitsLoss (https://arxiv.org/abs/1708.02002), used when hyp.fl_gamma > 0."""

    def __init__(self, loss_fcn: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float = 0.25):
        super().__init__()
        self.loss_fcn, self.gamma, self.alpha = loss_fcn, gamma, alpha
        self.reduction = loss_fcn.reduction
        self.loss_fcn.reduction = "none"

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fcn(pred, true)
        p = torch.sigmoid(pred)
        p_t = true * p + (1 - true) * (1 - p)
        alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
        loss = loss * alpha_factor * (1.0 - p_t) ** self.gamma
        return loss.mean() if self.reduction == "mean" else loss.sum() if self.reduction == "sum" else loss


class ComputeLoss:
    """YOLOv5's loss for a model whose last layer is Detect. `hyp` gives the gains, anchor_t and smoothing."""

    def __init__(self, model: nn.Module, hyp: Hyp, autobalance: bool = False):
        device = next(model.parameters()).device
        det = de_parallel(model).model[-1]
        bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp.cls_pw], device=device))
        bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp.obj_pw], device=device))
        if hyp.fl_gamma > 0:
            bce_cls, bce_obj = FocalLoss(bce_cls, hyp.fl_gamma), FocalLoss(bce_obj, hyp.fl_gamma)
        self.bce_cls, self.bce_obj = bce_cls, bce_obj
        self.cp, self.cn = smooth_BCE(hyp.label_smoothing)
        # objectness weight per level: P3-P5 as YOLOv5 (P3-P7 for 5 levels)
        self.balance = {3: [4.0, 1.0, 0.4]}.get(det.nl, [4.0, 1.0, 0.25, 0.06, 0.02])
        self.ssi = list(det.stride).index(16) if autobalance else 0  # stride-16 level is the reference
        self.gr = 1.0  # objectness target = gr * IoU + (1 - gr)
        self.hyp, self.autobalance, self.device = hyp, autobalance, device
        self.na, self.nc, self.nl = det.na, det.nc, det.nl
        self.anchors = det.anchors  # (nl, na, 2) in units of each level's stride; a view, so autoanchor shows

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lcls = torch.zeros(1, device=self.device)
        lbox = torch.zeros(1, device=self.device)
        lobj = torch.zeros(1, device=self.device)
        tcls, tbox, indices, anchors = self.build_targets(preds, targets)
        for i, pi in enumerate(preds):
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=self.device)  # (bs, na, ny, nx)
            n = b.shape[0]
            if n:
                pxy, pwh, _, pcls = pi[b, a, gj, gi].split((2, 2, 1, self.nc), 1)
                pxy = pxy.sigmoid() * 2 - 0.5  # centre offset in (-0.5, 1.5) cells
                pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i]  # size in (0, 4) anchors
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), tbox[i])
                lbox += (1.0 - iou).mean()
                iou = iou.detach().clamp(0).type(tobj.dtype)
                if self.gr < 1:
                    iou = (1.0 - self.gr) + self.gr * iou
                tobj[b, a, gj, gi] = iou
                if self.nc > 1:  # a single class is learnt by the objectness alone
                    t = torch.full_like(pcls, self.cn)
                    t[range(n), tcls[i]] = self.cp
                    lcls += self.bce_cls(pcls, t)
            obji = self.bce_obj(pi[..., 4], tobj)
            lobj += obji * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obji.detach().item()
        if self.autobalance:
            self.balance = [x / self.balance[self.ssi] for x in self.balance]
        lbox *= self.hyp.box
        lobj *= self.hyp.obj
        lcls *= self.hyp.cls
        bs = preds[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor):
        """Assign each target to the anchors within anchor_t in width and height ratio, in its own cell and the
        two neighbouring cells nearest its centre.

        Returns per level: tcls (n,), tbox (n, 4) [x offset from cell corner, y offset, w, h] in grid units,
        indices (image, anchor, grid y, grid x) each (n,), anchors (n, 2) in grid units.
        """
        na, nt = self.na, targets.shape[0]
        tcls, tbox, indices, anch = [], [], [], []
        gain = torch.ones(7, device=self.device)  # scales [img, cls, x, y, w, h, anchor] to grid units
        ai = torch.arange(na, device=self.device).float().view(na, 1).repeat(1, nt)  # (na, nt) anchor index
        targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)  # (na, nt, 7)
        off = _OFFSETS.to(self.device)
        for i in range(self.nl):
            anchors, shape = self.anchors[i], preds[i].shape
            gain[2:6] = torch.tensor(shape, device=self.device)[[3, 2, 3, 2]].float()  # nx, ny, nx, ny
            t = targets * gain
            if nt:
                r = t[..., 4:6] / anchors[:, None]  # (na, nt, 2) width and height ratios to each anchor
                j = torch.max(r, 1 / r).max(2)[0] < self.hyp.anchor_t
                t = t[j]  # (m, 7)
                gxy = t[:, 2:4]  # from the left/top
                gxi = gain[[2, 3]] - gxy  # from the right/bottom
                j, k = ((gxy % 1 < _G) & (gxy > 1)).T  # left, top neighbour
                l, m = ((gxi % 1 < _G) & (gxi > 1)).T  # right, bottom neighbour
                j = torch.stack((torch.ones_like(j), j, k, l, m))  # (5, m)
                t = t.repeat((5, 1, 1))[j]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
            else:
                t = targets[0]
                offsets = 0
            bc, gxy, gwh, a = t.split((2, 2, 2, 1), 1)
            a, (b, c) = a.long().view(-1), bc.long().T
            gij = (gxy - offsets).long()
            gij = torch.stack((gij[:, 0].clamp(0, shape[3] - 1), gij[:, 1].clamp(0, shape[2] - 1)), 1)
            gi, gj = gij.T
            indices.append((b, a, gj, gi))  # tbox below is relative to the clamped cell, as in YOLOv5
            tbox.append(torch.cat((gxy - gij, gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch
