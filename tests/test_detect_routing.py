"""detect.py --visualize-routing writes the routing figure for BRA models and explains itself otherwise."""

from __future__ import annotations

import cv2
import torch

import detect
from models.yolo import Model
from utils.checkpoint import save_checkpoint

from .conftest import ROOT


def _checkpoint(cfg: str, path):
    torch.manual_seed(0)
    m = Model(cfg, nc=2, verbose=False)
    save_checkpoint({"model": m.state_dict(), "yaml": m.yaml, "names": ["a", "b"]}, path)
    return path


def test_detect_visualize_routing(tmp_path, caplog):
    weights = _checkpoint("yolov5n_biformer.yaml", tmp_path / "bra.pt")
    save_dir, records = detect.run(weights=weights, source=ROOT / "data/images/zidane.jpg", imgsz=(256, 256),
                                   conf_thres=0.0, project=tmp_path, name="exp", visualize_routing=True)
    figures = sorted((save_dir / "routing").glob("*.png"))
    assert [f.name for f in figures] == ["zidane_layer20.png", "zidane_layer24.png"]
    assert all(cv2.imread(str(f)) is not None for f in figures)


def test_detect_visualize_routing_without_bra(tmp_path, caplog):
    weights = _checkpoint("yolov5n.yaml", tmp_path / "plain.pt")
    with caplog.at_level("WARNING", logger="yolo"):
        save_dir, _ = detect.run(weights=weights, source=ROOT / "data/images/zidane.jpg", imgsz=(128, 128),
                                 project=tmp_path, name="exp", visualize_routing=True)
    assert not (save_dir / "routing").exists()
    assert "needs a model with BiLevelRoutingAttention" in caplog.text
