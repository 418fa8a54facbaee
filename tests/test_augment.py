"""Augmentations: letterbox arithmetic against hand values, HSV against a per-pixel reference, and boxes that
stay on their objects (filled rectangles of distinct colours) through flips, perspective and mosaic."""

import random

import cv2
import numpy as np
import pytest

from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.data.augment import (augment_hsv, box_candidates, flip_lr, flip_ud, letterbox, mixup, mosaic, mosaic_canvas,
                                random_perspective)

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0),
          (128, 0, 255)]  # BGR, pairwise >= 127 apart, far from black and from the 114 grey


def scene(h, w, boxes_xyxy, classes):
    """A black image with filled rectangles coloured COLORS[cls]; labels [cls, x1, y1, x2, y2] pixels."""
    im = np.zeros((h, w, 3), np.uint8)
    for (x1, y1, x2, y2), c in zip(boxes_xyxy, classes):
        im[y1:y2, x1:x2] = COLORS[c]
    labels = np.array([[c, *b] for b, c in zip(boxes_xyxy, classes)], np.float32).reshape(-1, 5)
    return im, labels


def colour_extent(im, cls, tol=60):
    """xyxy extent (pixel edges) of the pixels within tol of COLORS[cls], or None."""
    mask = (np.abs(im.astype(int) - np.array(COLORS[cls])).max(2) < tol)
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def assert_aligned(im, labels_xyxy, min_side=12, thr=0.9):
    """Every label box covers the pixels of its colour; boxes clear of the image edge match their extent
    (IoU > thr). A rotated box cut by the edge is the clipped hull of its corners, which can be larger than
    what is visible, so there only coverage is checked. Returns how many boxes were compared by IoU."""
    h, w = im.shape[:2]
    checked = 0
    for cls, *box in labels_xyxy:
        box = np.array(box)
        if min(box[2] - box[0], box[3] - box[1]) < min_side:
            continue
        ext = colour_extent(im, int(cls))
        assert ext is not None, f"class {int(cls)}: box {box} but no pixels of its colour"
        inside = (ext[:2] >= box[:2] - 1.5).all() and (ext[2:] <= box[2:] + 1.5).all()
        assert inside, f"class {int(cls)}: pixels {ext} outside box {box.round(1)}"
        if box[0] > 0 and box[1] > 0 and box[2] < w and box[3] < h:
            assert iou(box, ext) > thr, f"class {int(cls)}: box {box.round(1)} vs pixels {ext} iou {iou(box, ext):.3f}"
            checked += 1
    return checked


# ---------------------------------------------------------------------------------------------- letterbox
@pytest.mark.parametrize("hw, new, kw, out_hw, ratio, pad", [
    ((480, 640), 640, dict(auto=False), (640, 640), (1.0, 1.0), (0.0, 80.0)),
    ((480, 640), 640, dict(auto=True), (480, 640), (1.0, 1.0), (0.0, 0.0)),
    ((375, 500), 640, dict(auto=True), (480, 640), (1.28, 1.28), (0.0, 0.0)),
    ((427, 640), 640, dict(auto=True), (448, 640), (1.0, 1.0), (0.0, 10.5)),
    ((100, 200), 640, dict(auto=False, scaleup=False), (640, 640), (1.0, 1.0), (220.0, 270.0)),
    ((100, 200), (320, 320), dict(auto=False, scale_fill=True), (320, 320), (1.6, 3.2), (0.0, 0.0)),
    ((101, 100), 128, dict(auto=False), (128, 128), (128 / 101, 128 / 101), (0.5, 0.0)),
    ((720, 1280), 640, dict(auto=True, stride=32), (384, 640), (0.5, 0.5), (0.0, 12.0)),
])
def test_letterbox_hand_values(hw, new, kw, out_hw, ratio, pad):
    im = np.full((*hw, 3), 200, np.uint8)
    out, r, p = letterbox(im, new, **kw)
    assert out.shape[:2] == out_hw
    np.testing.assert_allclose(r, ratio, rtol=1e-12)
    np.testing.assert_allclose(p, pad)


def test_letterbox_odd_padding_and_content():
    """dh = 10.5 -> 10 rows on top, 11 at the bottom (round(dh -/+ 0.1)); the middle is the INTER_LINEAR resize."""
    im = (np.random.default_rng(0).random((427, 640, 3)) * 255).astype(np.uint8)
    out, _, (dw, dh) = letterbox(im, 640, auto=True)
    assert (out[:10] == 114).all() and (out[-11:] == 114).all()
    assert not (out[10] == 114).all() and np.array_equal(out[10:-11], im)
    im2 = (np.random.default_rng(1).random((300, 500, 3)) * 255).astype(np.uint8)
    out2, (rw, rh), (dw2, dh2) = letterbox(im2, 320, auto=False)  # r = 0.64 -> 320 x 192, 64 rows padding
    ref = cv2.resize(im2, (320, 192), interpolation=cv2.INTER_LINEAR)
    assert (rw, rh, dw2, dh2) == (0.64, 0.64, 0.0, 64.0)
    assert np.array_equal(out2[64:256], ref) and (out2[:64] == 114).all() and (out2[256:] == 114).all()


def test_letterbox_keeps_boxes_aligned():
    im, lb = scene(300, 500, [(40, 30, 140, 130), (300, 150, 460, 280)], [0, 1])
    h, w = im.shape[:2]
    out, ratio, pad = letterbox(im, 320, auto=False)
    n = lb.copy()
    n[:, 1:] = xyxy2xywhn(lb[:, 1:], w, h)
    n[:, 1:] = xywhn2xyxy(n[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])  # as the dataset does
    assert assert_aligned(out, n) == 2


# ---------------------------------------------------------------------------------------------- HSV
def test_augment_hsv_matches_per_pixel_reference():
    rng = np.random.default_rng(3)
    im = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    np.random.seed(7)
    gains = np.random.uniform(-1, 1, 3) * [0.015, 0.7, 0.4] + 1
    hsv = cv2.cvtColor(im, cv2.COLOR_BGR2HSV).astype(np.float64)
    hsv[..., 0] = (hsv[..., 0] * gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * gains[2], 0, 255)
    ref = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    out = im.copy()
    np.random.seed(7)
    augment_hsv(out, 0.015, 0.7, 0.4)
    assert np.array_equal(out, ref)
    same = im.copy()
    augment_hsv(same, 0, 0, 0)  # no gains: untouched
    assert np.array_equal(same, im)


def test_hsv_leaves_boxes_on_objects():
    im, lb = scene(120, 160, [(10, 10, 60, 50), (90, 60, 150, 110)], [0, 2])
    np.random.seed(0)
    augment_hsv(im, 0.0, 0.3, 0.2)  # hue kept: colours stay recognisable, no pixel moves
    assert assert_aligned(im, lb, thr=0.99) == 2


# ---------------------------------------------------------------------------------------------- flips
def test_flips_keep_boxes_aligned():
    im, lb = scene(100, 200, [(10, 20, 50, 90), (120, 5, 190, 40)], [0, 1])
    n = lb.copy()
    n[:, 1:] = xyxy2xywhn(lb[:, 1:], 200, 100)
    for flip in (flip_lr, flip_ud):
        im2, n2 = flip(im, n)
        back = n2.copy()
        back[:, 1:] = xywhn2xyxy(n2[:, 1:], 200, 100)
        assert assert_aligned(np.ascontiguousarray(im2), back, thr=0.999) == 2
    im3, n3 = flip_lr(*flip_lr(im, n))
    assert np.array_equal(im3, im) and np.allclose(n3, n)


# ---------------------------------------------------------------------------------------------- perspective
def test_box_candidates_thresholds():
    before = np.array([[0, 0, 100, 100]] * 4, float).T
    after = np.array([[0, 0, 50, 50], [0, 0, 2, 50], [0, 0, 30, 30], [0, 0, 100, 0.9]], float).T
    # 25% area kept; 2 px wide (not > wh_thr); 9% area (< area_thr); under 2 px tall
    assert box_candidates(before, after).tolist() == [True, False, False, False]


@pytest.mark.parametrize("seed", range(6))
def test_random_perspective_keeps_boxes_aligned(seed):
    boxes = [(70, 60, 115, 100), (140, 70, 185, 110), (65, 140, 105, 190), (140, 150, 190, 190)]
    im, lb = scene(256, 256, boxes, [0, 1, 2, 3])
    random.seed(seed)
    out, lb2 = random_perspective(im, lb.copy(), degrees=30, translate=0.1, scale=0.3, shear=10,
                                  perspective=0.0005 if seed % 2 else 0.0)
    assert out.shape == im.shape
    assert len(lb2) >= 2
    assert assert_aligned(out, lb2) >= 2


def test_random_perspective_identity_and_border():
    im, lb = scene(64, 96, [(10, 10, 40, 40)], [0])
    random.seed(0)
    out, lb2 = random_perspective(im, lb.copy(), degrees=0, translate=0, scale=0, shear=0, perspective=0,
                                  border=(0, 0))  # T recentres: M is the identity
    assert np.array_equal(out, im) and np.allclose(lb2, lb)
    out2, lb3 = random_perspective(im, lb.copy(), 0, 0, 0, 0, 0, border=(-16, -24))  # centre crop 32 x 48
    assert out2.shape == (32, 48, 3)
    assert np.array_equal(out2, im[16:48, 24:72])
    np.testing.assert_allclose(lb3[0, 1:], [0, 0, 16, 24])


# ---------------------------------------------------------------------------------------------- mosaic
def _mosaic_inputs(rng):
    ims, labels = [], []
    for k in range(4):
        h, w = int(rng.integers(180, 260)), int(rng.integers(180, 260))
        b1 = (10, 15, 90, 100)
        b2 = (w - 100, h - 90, w - 15, h - 10)
        im, lb = scene(h, w, [b1, b2], [2 * k, 2 * k + 1])
        lb[:, 1:] = xyxy2xywhn(lb[:, 1:], w, h)
        ims.append(im)
        labels.append(lb)
    return ims, labels


def test_mosaic_canvas_places_tiles_and_labels():
    ims, labels = _mosaic_inputs(np.random.default_rng(0))
    img4, lb4 = mosaic_canvas(ims, labels, 256, xc=250, yc=270)
    assert img4.shape == (512, 512, 3) and len(lb4) == 8
    h0, w0 = ims[0].shape[:2]
    top_left = img4[max(270 - h0, 0):270, max(250 - w0, 0):250]  # the first image ends at the centre
    assert np.array_equal(top_left, ims[0][h0 - min(h0, 270):, w0 - min(w0, 250):])
    assert assert_aligned(img4, lb4, thr=0.99) == 8


@pytest.mark.parametrize("seed", range(5))
def test_mosaic_with_perspective_keeps_boxes_aligned(seed):
    ims, labels = _mosaic_inputs(np.random.default_rng(seed))
    random.seed(seed)
    out, lb = mosaic(ims, labels, 256, degrees=10, translate=0.1, scale=0.3, shear=5)
    assert out.shape == (256, 256, 3)
    assert len(lb) >= 1
    assert assert_aligned(out, lb) >= 1


def test_mixup_blends_and_concatenates():
    a, b = np.full((8, 8, 3), 200, np.uint8), np.full((8, 8, 3), 100, np.uint8)
    la, lbb = np.ones((2, 5), np.float32), np.zeros((3, 5), np.float32)
    np.random.seed(0)
    r = np.random.beta(32.0, 32.0)
    np.random.seed(0)
    im, lab = mixup(a, la, b, lbb)
    assert (im == np.uint8(200 * r + 100 * (1 - r))).all() and lab.shape == (5, 5)
