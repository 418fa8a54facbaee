"""non_max_suppression against a plain greedy Python reference and torchvision, boxes built at the threshold."""

from __future__ import annotations

import pytest
import torch
import torchvision

from utils.nms import non_max_suppression


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def greedy_nms(rows: list[list[float]], iou_thres: float, agnostic: bool) -> list[list[float]]:
    """rows [x1, y1, x2, y2, conf, cls]: visit by decreasing conf, keep unless IoU > thres with a kept one."""
    kept = []
    for r in sorted(rows, key=lambda r: -r[4]):
        if all(_iou(r, k) <= iou_thres for k in kept if agnostic or k[5] == r[5]):
            kept.append(r)
    return kept


def reference(pred: torch.Tensor, conf_thres, iou_thres, classes=None, agnostic=False, multi_label=False,
              max_det=300) -> list[list[list[float]]]:
    """YOLOv5's NMS semantics written out with Python loops, in float64."""
    out = []
    for img in pred.double().tolist():
        rows = []
        for cx, cy, w, h, obj, *cls in img:
            if obj <= conf_thres:
                continue
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            scores = [obj * c for c in cls]
            if multi_label and len(cls) > 1:
                picks = [(s, j) for j, s in enumerate(scores) if s > conf_thres]
            else:
                best = max(range(len(scores)), key=lambda j: scores[j])
                picks = [(scores[best], best)] if scores[best] > conf_thres else []
            rows += [box + [s, float(j)] for s, j in picks if classes is None or j in classes]
        out.append(greedy_nms(rows, iou_thres, agnostic)[:max_det])
    return out


def _random_pred(seed: int, bs=2, n=300, nc=4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(bs, n, 2, generator=g) * 200
    wh = torch.rand(bs, n, 2, generator=g) * 60 + 4
    obj = torch.rand(bs, n, 1, generator=g)
    cls = torch.rand(bs, n, nc, generator=g)
    return torch.cat((xy, wh, obj, cls), 2)


def _assert_same(got: list[torch.Tensor], want: list[list[list[float]]]):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == (len(w), 6)
        if len(w):
            torch.testing.assert_close(g.double(), torch.tensor(w, dtype=torch.float64), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kw", [
    dict(),
    dict(multi_label=True),
    dict(agnostic=True),
    dict(classes=[0, 2]),
    dict(multi_label=True, classes=[1], max_det=5),
    dict(conf_thres=0.001, iou_thres=0.6, multi_label=True),
])
def test_matches_greedy_reference(seed, kw):
    pred = _random_pred(seed, n=100 if "conf_thres" in kw else 300)  # the greedy loop is quadratic
    args = dict(conf_thres=0.25, iou_thres=0.45) | kw
    got = non_max_suppression(pred, **args)
    want = reference(pred, args.pop("conf_thres"), args.pop("iou_thres"), **args)
    _assert_same(got, want)


def _pair_at_iou(t: float, x0: float) -> tuple[list[float], list[float]]:
    """Two 10x10 boxes shifted along x by d so that IoU = (10 - d) / (10 + d) = t."""
    d = 10 * (1 - t) / (1 + t)
    return [x0, 0.0, x0 + 10, 10.0], [x0 + d, 0.0, x0 + d + 10, 10.0]


@pytest.mark.parametrize("seed", range(5))
def test_boxes_at_threshold(seed):
    """Pairs with IoU just above / below the threshold: the lower-scored one goes / stays."""
    g = torch.Generator().manual_seed(seed)
    thr = 0.3 + 0.4 * torch.rand(1, generator=g).item()
    rows, expect_kept = [], []
    for k, eps in enumerate((2e-3, -2e-3, 5e-4, -5e-4)):
        a, b = _pair_at_iou(thr + eps, x0=100.0 * k)
        assert abs(_iou(a, b) - (thr + eps)) < 1e-9
        hi, lo = 0.9 - 0.1 * k, 0.5 - 0.05 * k
        rows += [a + [hi], b + [lo]]
        expect_kept += [a + [hi]] + ([] if eps > 0 else [b + [lo]])
    order = torch.randperm(len(rows), generator=g)
    pred = torch.zeros(1, len(rows), 6)  # one class: prob 1, so conf = objectness
    for i, j in enumerate(order.tolist()):
        x1, y1, x2, y2, conf = rows[j]
        pred[0, i] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, conf, 1.0])
    got = non_max_suppression(pred, conf_thres=0.1, iou_thres=thr)[0]
    want = sorted((r + [0.0] for r in expect_kept), key=lambda r: -r[4])
    _assert_same([got], [want])
    tv = torchvision.ops.nms(torch.tensor([r[:4] for r in rows]), torch.tensor([r[4] for r in rows]), thr)
    assert len(tv) == len(want)


@pytest.mark.parametrize("seed", range(4))
def test_against_torchvision_offset_nms(seed):
    """Same kept boxes as torchvision.ops.nms with YOLOv5's per-class coordinate offset."""
    pred = _random_pred(seed, bs=1, n=2000, nc=5)
    got = non_max_suppression(pred, conf_thres=0.01, iou_thres=0.5, max_det=10_000)[0]
    x = pred[0]
    x = x[x[:, 4] > 0.01]
    scores = x[:, 5:] * x[:, 4:5]
    conf, j = scores.max(1)
    m = conf > 0.01
    box = torchvision.ops.box_convert(x[m, :4], "cxcywh", "xyxy")
    keep = torchvision.ops.nms(box + j[m, None] * 4096.0, conf[m], 0.5)
    assert len(got) == len(keep)
    torch.testing.assert_close(got[:, 4], conf[m][keep])
    torch.testing.assert_close(got[:, 5], j[m][keep].float())


def test_labels_max_det_and_empty():
    pred = _random_pred(0, bs=2, n=50, nc=3)
    out = non_max_suppression(pred, conf_thres=0.2, max_det=3)
    assert all(len(o) <= 3 for o in out)
    empty = non_max_suppression(torch.zeros(2, 10, 8), conf_thres=0.25)
    assert [o.shape for o in empty] == [(0, 6), (0, 6)]
    lb = [torch.tensor([[2.0, 50, 50, 20, 20]]), torch.zeros(0, 5)]
    out = non_max_suppression(torch.zeros(2, 10, 8), conf_thres=0.25, labels=lb)
    torch.testing.assert_close(out[0], torch.tensor([[40.0, 40, 60, 60, 1, 2]]))
    assert out[1].shape == (0, 6)
    out = non_max_suppression((pred, None), conf_thres=0.2, max_det=3)  # (decoded, maps) tuple
    assert len(out) == 2
    with pytest.raises(ValueError, match="conf_thres"):
        non_max_suppression(pred, conf_thres=1.5)


def test_time_limit_warns_and_stops(caplog):
    from utils.log import LOGGER

    pred = _random_pred(0, bs=3, n=50, nc=3)
    LOGGER.addHandler(caplog.handler)  # the project logger may not propagate to the root
    try:
        out = non_max_suppression(pred, conf_thres=0.2, time_limit=0.0)
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert "time limit" in caplog.text
    assert len(out[0]) > 0 and [len(o) for o in out[1:]] == [0, 0]
    full = non_max_suppression(pred, conf_thres=0.2, time_limit=None)
    assert all(len(o) > 0 for o in full)
