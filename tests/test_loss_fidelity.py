"""The loss equals official YOLOv5's ComputeLoss on the same predictions and targets.

Reference values were computed with the `yolov5` 7.0.14 package's `utils/training/loss.py` on its yolov5n model
(nc=80, strides 8/16/32, hyp.scratch-low with box/cls/obj scaled for imgsz 64 and 3 levels as train.py does),
with the deterministic predictions and targets built below.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.yolo import Model
from utils.hyp import Hyp
from utils.training.loss import ComputeLoss

OFFICIAL = {  # label_smoothing -> (loss, [box, obj, cls])
    0.0: (3.1700026988983154, [0.1485729068517685, 0.045625440776348114, 1.3908029794692993]),
    0.1: (3.1664023399353027, [0.1485729068517685, 0.045625440776348114, 1.389002799987793]),
}


def _preds() -> list[torch.Tensor]:
    preds, off = [], 0
    for s in [(2, 3, 8, 8, 85), (2, 3, 4, 4, 85), (2, 3, 2, 2, 85)]:
        n = torch.Size(s).numel()
        preds.append((torch.sin(torch.arange(off, off + n, dtype=torch.float64) * 0.37) * 2).float().view(s))
        off += n
    return preds


TARGETS = torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.3], [0, 5, 0.26, 0.74, 0.05, 0.08], [1, 17, 0.9, 0.1, 0.6, 0.4],
                        [1, 2, 0.49, 0.51, 0.9, 0.9], [1, 79, 0.125, 0.375, 0.1, 0.1], [0, 3, 0.7, 0.3, 0.3, 0.05]])


@pytest.mark.parametrize("smoothing", sorted(OFFICIAL))
def test_loss_equals_official_yolov5(smoothing):
    model = Model("yolov5n.yaml", verbose=False)
    base = Hyp()
    hyp = replace(base, box=base.box, cls=base.cls, obj=base.obj * (64 / 640) ** 2, label_smoothing=smoothing)
    loss, items = ComputeLoss(model, hyp)(_preds(), TARGETS.clone())
    want_loss, want_items = OFFICIAL[smoothing]
    torch.testing.assert_close(items.float(), torch.tensor(want_items), rtol=1e-5, atol=1e-6)
    assert loss.item() == pytest.approx(want_loss, rel=1e-5)
