"""The routing figure: written per photo and BRA layer, and the shaded regions are exactly the module's top-k."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from models import resolve_weights
from models.attention.routing import (GAP, HEADER_H, SHADE_BGR, bra_layers, fit_photo, recording_routing,
                                      visualize_routing)
from models.yolo import Model
from utils.checkpoint import load_checkpoint
from utils.data.augment import letterbox
from utils.transfer import transfer_weights

IMGSZ, MAX_SIZE = 320, 320


@pytest.fixture(scope="module")
def bra_model():
    """The official yolov5n weights around freshly initialised BRA layers whose projections are scaled up, so
    that region affinities differ and the routing weights are far from uniform (about 0.17 to 0.35)."""
    torch.manual_seed(0)
    model = Model("yolov5n_biformer.yaml", verbose=False).eval()
    transfer_weights(model, load_checkpoint(resolve_weights("yolov5n.pt")))
    with torch.no_grad():
        for _, m in bra_layers(model):
            m.qkv.qkv.weight.mul_(4.0)
    return model


def _reference_routing(model, photo):
    """Letterbox as detect.py does and record each BRA layer's routing of our own forward pass."""
    im, (rw, _), (dw, dh) = letterbox(photo, IMGSZ, stride=32, auto=True)
    x = torch.from_numpy(np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    with recording_routing([m for _, m in bra_layers(model)]) as recs, torch.no_grad():
        model(x)
    return recs, im.shape[:2], rw, dw, dh


def _region_box(rec, r, stride, rw, dw, dh, photo_hw, scale):
    """Region r's rectangle on the scaled photo, computed here from the grid geometry (None if off the photo)."""
    row, col = divmod(r, rec.n_win)
    (h, w), (H, W) = rec.window, rec.size
    x0, x1 = min(col * w, W) * stride, min((col + 1) * w, W) * stride
    y0, y1 = min(row * h, H) * stride, min((row + 1) * h, H) * stride
    px = np.clip((np.array([x0, x1]) - dw) / rw, 0, photo_hw[1]) * scale
    py = np.clip((np.array([y0, y1]) - dh) / rw, 0, photo_hw[0]) * scale
    box = np.round([px[0], py[0], px[1], py[1]]).astype(int)
    return box if box[2] - box[0] > 8 and box[3] - box[1] > 8 else None


def _alpha_estimate(panel, base, box):
    """Median shading opacity inside a box (4 px in from its edges, away from grid lines) from the red channel."""
    x0, y0, x1, y1 = box + np.array([4, 4, -4, -4])
    p = panel[y0:y1, x0:x1].astype(np.float64)
    b = base[y0:y1, x0:x1].astype(np.float64)
    shade = np.array(SHADE_BGR, np.float64)
    ch = int(np.argmax(np.abs(shade - b.reshape(-1, 3).mean(0))))  # the channel the shade moves most
    d = shade[ch] - b[..., ch]
    ok = np.abs(d) > 40
    return float(np.median((p[..., ch] - b[..., ch])[ok] / d[ok])) if ok.any() else 0.0


def test_routing_figure_shades_exactly_the_recorded_top_k(bra_model, tmp_path, root):
    photo_path = root / "data" / "images" / "bus.jpg"
    photo = cv2.imread(str(photo_path))
    query = (300.0, 700.0)  # photo pixels
    files = visualize_routing(bra_model, [photo_path], tmp_path, query_points=[query], top_detections=0,
                              imgsz=IMGSZ, max_size=MAX_SIZE)
    layer_ids = [i for i, _ in bra_layers(bra_model)]
    assert [f.name for f in files] == [f"bus_layer{i}.png" for i in layer_ids] == ["bus_layer20.png",
                                                                                   "bus_layer24.png"]
    recs, input_hw, rw, dw, dh = _reference_routing(bra_model, photo)
    base, scale = fit_photo(photo, MAX_SIZE)
    qx, qy = query[0] * rw + dw, query[1] * rw + dh  # query in network-input pixels
    for f, rec in zip(files, recs):
        drawn = cv2.imread(str(f))
        assert drawn.shape == (HEADER_H + base.shape[0], base.shape[1], 3)  # one query: one panel
        panel = drawn[HEADER_H:]
        stride = input_hw[0] // rec.size[0]
        h, w = rec.window
        q = (int(qy // stride) // h) * rec.n_win + int(qx // stride) // w
        top = rec.index[0, q].tolist()
        weights = dict(zip(top, rec.weight[0, q].tolist()))
        checked = 0
        for r in range(rec.n_win ** 2):
            box = _region_box(rec, r, stride, rw, dw, dh, photo.shape[:2], scale)
            if box is None:
                continue
            a = _alpha_estimate(panel, base, box)
            # documented opacity: 0.25 + 0.45 * weight / largest weight of the query, 0 outside the top-k
            want = 0.25 + 0.45 * weights[r] / max(weights.values()) if r in weights else 0.0
            assert a == pytest.approx(want, abs=0.03), f"region {r}: drawn opacity {a:.3f}, expected {want:.3f}"
            checked += 1
        assert checked >= 12
        assert len(set(np.round(list(weights.values()), 3))) > 1, "weights all equal: the test checks too little"


def test_one_panel_per_query_and_detection(bra_model, tmp_path, root):
    photos = [root / "data" / "images" / n for n in ("zidane.jpg", "bus.jpg")]
    files = visualize_routing(bra_model, photos, tmp_path, query_points=[(10, 10), (50, 60)], top_detections=2,
                              imgsz=IMGSZ, conf_thres=0.0, max_size=200)
    assert len(files) == 4 and all(f.is_file() for f in files)
    for f, p in zip(files, [photos[0]] * 2 + [photos[1]] * 2):
        w = fit_photo(cv2.imread(str(p)), 200)[0].shape[1]
        assert cv2.imread(str(f)).shape[1] == 4 * w + 3 * GAP  # 2 detections + 2 points
    assert all(_no_hooks(m) for _, m in bra_layers(bra_model))  # the figure's hooks are gone


def _no_hooks(m) -> bool:
    return not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())


def test_recording_routing_removes_its_hooks_on_error(bra_model):
    layers = [m for _, m in bra_layers(bra_model)]
    with pytest.raises(RuntimeError, match="boom"), recording_routing(layers) as recs:
        assert not any(_no_hooks(m) for m in layers)
        raise RuntimeError("boom")
    assert recs == [None, None] and all(_no_hooks(m) for m in layers)


def test_errors_name_the_problem(tmp_path, root):
    with pytest.raises(ValueError, match="no BiLevelRoutingAttention"):
        visualize_routing(Model("yolov5n.yaml", verbose=False), [root / "data" / "images" / "bus.jpg"], tmp_path)
    torch.manual_seed(0)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        visualize_routing(Model("yolov5n_biformer.yaml", verbose=False), [tmp_path / "missing.jpg"], tmp_path)


def test_titles_stay_inside_a_narrow_panel(bra_model, tmp_path, root):
    """The header's two lines (layer, grid, top-k, detection; the routed regions and weights) were clipped at the
    right edge of a narrow panel: now their font shrinks to fit, so the margin stays white and text is drawn."""
    files = visualize_routing(bra_model, [root / "data" / "images" / "zidane.jpg"], tmp_path,
                              query_points=[(600.0, 300.0)], top_detections=0, imgsz=IMGSZ, max_size=160)
    for f in files:
        header = cv2.imread(str(f))[:HEADER_H]
        assert header.shape[1] <= 160
        dark = (header < 128).any(2)
        assert dark[:, :-4].any(1).sum() >= 8  # both lines drawn (rows of text pixels)
        assert not dark[:, -3:].any(), f"{f.name}: text reaches the panel's right edge"
