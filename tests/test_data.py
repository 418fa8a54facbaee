"""Data YAML, label/image scanning and its cache, image conversions, the Dataset and the DataLoader."""

import os
import random
import time

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import ROOT
from tests.test_augment import COLORS, assert_aligned
from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.data.config import load_data_config
from utils.data.dataset import LoadImagesAndLabels, create_dataloader, rect_batch_shapes
from utils.data.images import _pil_to_bgr, imread_bgr, list_image_files
from utils.data.labels import img2label_paths, label_cache_path, scan_labels
from utils.hyp import Hyp


def write_image(path, h=32, w=48, color=(40, 80, 120)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), color, np.uint8))
    return path


def write_label(im_path, text):
    lb = img2label_paths([str(im_path)])[0]
    os.makedirs(os.path.dirname(lb), exist_ok=True)
    with open(lb, "w") as f:
        f.write(text)
    return lb


def write_yaml(path, d):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d))
    return path


# ---------------------------------------------------------------------------------------------- data YAML
def test_yaml_list_names_relative_path(tmp_path):
    write_image(tmp_path / "ds/images/train/a.jpg")
    write_image(tmp_path / "ds/images/val/b.jpg")
    y = write_yaml(tmp_path / "cfg/d.yaml", {"path": "../ds", "train": "images/train", "val": "images/val",
                                             "names": ["cat", "dog"]})
    cfg = load_data_config(y)
    assert cfg.path == (tmp_path / "ds").resolve() and cfg.yaml_file == y.resolve()
    assert cfg.train == [(tmp_path / "ds/images/train").resolve()] and cfg.test is None
    assert cfg.names == ["cat", "dog"] and cfg.nc == 2
    assert load_data_config(y, single_cls=True).names == ["item"]
    with pytest.raises(ValueError, match="no 'test' split"):
        cfg.split("test")


def test_yaml_dict_names_and_nc(tmp_path):
    write_image(tmp_path / "images/train/a.jpg")
    base = {"train": "images/train", "val": "images/train"}  # no path: relative to the YAML's folder
    cfg = load_data_config(write_yaml(tmp_path / "d.yaml", {**base, "nc": 3, "names": {0: "a", 1: "b", 2: "c"}}))
    assert cfg.names == ["a", "b", "c"] and cfg.nc == 3 and cfg.path == tmp_path.resolve()
    with pytest.raises(ValueError, match="nc=4 disagrees with the 3 names"):
        load_data_config(write_yaml(tmp_path / "e.yaml", {**base, "nc": 4, "names": ["a", "b", "c"]}))
    with pytest.raises(ValueError, match=r"keys must be the integers 0\.\.1"):
        load_data_config(write_yaml(tmp_path / "f.yaml", {**base, "names": {0: "a", 2: "c"}}))
    assert load_data_config(write_yaml(tmp_path / "g.yaml", {**base, "nc": 2})).names == ["class0", "class1"]
    with pytest.raises(ValueError, match="'names' is missing"):
        load_data_config(write_yaml(tmp_path / "h.yaml", base))


def test_yaml_txt_list_and_list_of_folders(tmp_path):
    a = write_image(tmp_path / "ds/images/a/1.jpg")
    b = write_image(tmp_path / "ds/images/b/2.png")
    write_image(tmp_path / "ds/images/b/sub/3.jpg")
    (tmp_path / "ds/list.txt").write_text("./images/a/1.jpg\nimages/b/2.png\n\n")
    cfg = load_data_config(write_yaml(tmp_path / "d.yaml", {"path": "ds", "train": "list.txt",
                                                            "val": ["images/a", "images/b"], "names": ["x"]}))
    assert list_image_files(cfg.train) == [str(a.resolve()), str(b.resolve())]
    val = list_image_files(cfg.val)
    assert len(val) == 3 and val == sorted(val) and str(tmp_path / "ds/images/b/sub/3.jpg") in val  # recursive


def test_yaml_errors_name_key_and_path(tmp_path):
    write_image(tmp_path / "images/train/a.jpg")
    y = write_yaml(tmp_path / "d.yaml", {"train": "images/train", "val": "images/nope", "names": ["x"]})
    with pytest.raises(FileNotFoundError, match=r"'val' entry 'images/nope' -> .*images/nope does not exist"):
        load_data_config(y)
    with pytest.raises(ValueError, match="must be a mapping"):
        load_data_config(write_yaml(tmp_path / "l.yaml", ["train", "val"]))
    with pytest.raises(ValueError, match="'train' entry 5 is not a path"):
        load_data_config(write_yaml(tmp_path / "i.yaml", {"train": 5, "val": "images/train", "names": ["x"]}))
    with pytest.raises(ValueError, match="'val' split is missing"):
        load_data_config(write_yaml(tmp_path / "m.yaml", {"train": "images/train", "names": ["x"]}))
    with pytest.raises(FileNotFoundError, match="nonexistent.yaml"):
        load_data_config(tmp_path / "nonexistent.yaml")


def test_bundled_coco128_yaml_by_name(coco128):
    cfg = load_data_config("coco128.yaml")
    assert cfg.nc == 80 and cfg.names[0] == "person" and cfg.names[79] == "toothbrush"
    assert cfg.train == [coco128.resolve() / "images/train2017"] and cfg.val == cfg.train


# ---------------------------------------------------------------------------------------------- scanning
LABEL_CASES = {  # file stem: (label text or None for no file, outcome)
    "good": ("0 0.5 0.5 0.2 0.2\n2 0.25 0.25 0.1 0.1\n", "ok"),
    "cols": ("0 0.5 0.5 0.2\n", "corrupt"),
    "range": ("5 0.5 0.5 0.2 0.2\n", "corrupt"),  # nc = 3
    "float_cls": ("1.5 0.5 0.5 0.2 0.2\n", "corrupt"),
    "coords": ("0 1.2 0.5 0.2 0.2\n", "corrupt"),
    "text": ("a b c d e\n", "corrupt"),
    "overshoot": ("0 0.5 0.5 1.0004 0.2\n", "ok"),  # within COORD_TOL: clipped to 1
    "dups": ("1 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.1 0.1\n1 0.5 0.5 0.2 0.2\n", "ok"),
    "empty": ("\n", "background"),
    "missing": (None, "background"),
    "polygon": ("2 0.1 0.1 0.5 0.1 0.5 0.6\n", "ok"),
}


@pytest.fixture
def label_split(tmp_path):
    for stem, (text, _) in LABEL_CASES.items():
        im = write_image(tmp_path / "images/train" / f"{stem}.jpg")
        if text is not None:
            write_label(im, text)
    return tmp_path / "images/train"


def test_label_validation_counts_and_warnings(label_split, log):
    files = list_image_files(label_split)
    scan = scan_labels(files, label_cache_path(label_split, img2label_paths(files)), "train: ", nc=3)
    labels = {os.path.basename(f)[:-4]: lb for f, lb in zip(scan.im_files, scan.labels)}
    kept = {k for k, (_, o) in LABEL_CASES.items() if o != "corrupt"}
    assert set(labels) == kept and scan.corrupt == 5 and scan.backgrounds == 2
    assert f"train: Scanning {label_split.parent.parent / 'labels/train'}... 6 images, 2 backgrounds, 5 corrupt" in log
    for stem, reason in [("cols", "4 columns, expected 5"), ("range", "class ids [5] out of range; valid: 0..2"),
                         ("float_cls", "non-negative integers"), ("coords", "out of bounds coordinates"),
                         ("text", "non-numeric")]:
        assert any(f"labels/train/{stem}.txt" in m and reason in m for m in log), (stem, reason)
    assert any("dups.jpg" in m and "1 duplicate labels removed" in m for m in log)
    np.testing.assert_allclose(labels["dups"], [[1, 0.5, 0.5, 0.2, 0.2], [0, 0.3, 0.3, 0.1, 0.1]])  # order kept
    np.testing.assert_allclose(labels["overshoot"], [[0, 0.5, 0.5, 1.0, 0.2]])
    np.testing.assert_allclose(labels["polygon"], [[2, 0.3, 0.35, 0.4, 0.5]], atol=1e-6)
    assert labels["empty"].shape == (0, 5) and labels["missing"].shape == (0, 5)
    assert all(lb.dtype == np.float32 for lb in scan.labels) and scan.shapes.tolist() == [[48, 32]] * 6


def test_corrupt_and_tiny_images_skipped_with_warning(tmp_path, log):
    write_image(tmp_path / "images/a.jpg")
    (tmp_path / "images/bad.jpg").write_bytes(b"this is not a jpeg" * 20)
    write_image(tmp_path / "images/tiny.png", h=8, w=50)
    ds = LoadImagesAndLabels(tmp_path / "images", img_size=64)
    assert [os.path.basename(f) for f in ds.im_files] == ["a.jpg"]
    assert any("bad.jpg" in m and "cannot read image" in m for m in log)
    assert any("tiny.png" in m and "under 10 pixels" in m for m in log)
    assert any("1 images, 1 backgrounds, 2 corrupt" in m for m in log)
    (tmp_path / "images/a.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no usable images"):
        LoadImagesAndLabels(tmp_path / "images", img_size=64)


def test_label_cache_reused_and_rebuilt(label_split, log):
    files = list_image_files(label_split)
    cache = label_cache_path(label_split, img2label_paths(files))
    scan_labels(files, cache, nc=3)
    assert cache.is_file()
    with np.load(cache, allow_pickle=False) as z:  # plain arrays only: loads without pickle
        assert all(z[k].dtype != object for k in z.files)
    log.clear()
    again = scan_labels(files, cache, nc=3)
    assert any(m.endswith("(cached)") for m in log)
    good = img2label_paths([str(label_split / "good.jpg")])[0]
    with open(good, "w") as f:
        f.write("1 0.4 0.4 0.3 0.3\n")
    os.utime(good, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    log.clear()
    changed = scan_labels(files, cache, nc=3)
    assert not any("(cached)" in m for m in log)
    i = changed.im_files.index(str(label_split / "good.jpg"))
    np.testing.assert_allclose(changed.labels[i], [[1, 0.4, 0.4, 0.3, 0.3]])
    assert len(again.labels[i]) == 2
    cache.write_bytes(b"broken cache")  # unreadable cache: rebuilt, not an error
    log.clear()
    assert len(scan_labels(files, cache, nc=3).im_files) == 6 and not any("(cached)" in m for m in log)


def test_class_out_of_range_dropped_by_a_val_loader_given_no_nc(tmp_path, log):
    """train.py scans its train split with nc and builds the validation loader of the same split without it:
    both drop the image whose label has class 99 (nc 80) with the same warning, so validation never sees it."""
    for stem in ("a", "b"):
        write_label(write_image(tmp_path / "images" / f"{stem}.jpg"), "0 0.5 0.5 0.2 0.2\n")
    bad = write_label(write_image(tmp_path / "images/c.jpg"), "99 0.5 0.5 0.2 0.2\n")
    warning = f"{bad}: ignoring corrupt image/label: class ids [99] out of range; valid: 0..79"
    _, train = create_dataloader(tmp_path / "images", 64, 2, 32, augment=True, workers=0, nc=80, prefix="train: ")
    assert sum(warning in m for m in log) == 1
    log.clear()
    loader, val = create_dataloader(tmp_path / "images", 64, 4, 32, rect=True, pad=0.5, workers=0, prefix="val: ")
    assert any(m.startswith("val: ") and warning in m for m in log)
    for ds in (train, val):
        assert sorted(os.path.basename(f) for f in ds.im_files) == ["a.jpg", "b.jpg"]
    assert all(int(t[:, 1].max()) < 80 for _, t, _, _ in loader)
    one = LoadImagesAndLabels(tmp_path / "images", img_size=64, single_cls=True)  # every class is 0: all kept
    assert len(one) == 3 and all((lb[:, 0] == 0).all() for lb in one.labels)


def test_jpeg_missing_only_its_end_marker_is_kept_with_identical_pixels(tmp_path, log):
    photo = cv2.imread(os.path.join(os.path.dirname(__file__), "..", "data", "images", "bus.jpg"))
    data = cv2.imencode(".jpg", photo)[1].tobytes()
    assert data.endswith(b"\xff\xd9")
    full, cut = tmp_path / "full/images/a.jpg", tmp_path / "cut/images/a.jpg"
    for path, b in ((full, data), (cut, data[:-2])):
        path.parent.mkdir(parents=True)
        path.write_bytes(b)
        write_label(path, "0 0.5 0.5 0.2 0.2\n")
    ds = LoadImagesAndLabels(cut.parent, img_size=64)
    assert ds.im_files == [str(cut)]
    assert any("a.jpg" in m and "truncated JPEG (no end marker), used as decoded" in m for m in log)
    np.testing.assert_array_equal(imread_bgr(cut), imread_bgr(full))


def test_symlink_loop_lists_each_image_once(tmp_path, log):
    for stem in ("a", "b"):
        write_label(write_image(tmp_path / "images" / f"{stem}.jpg"), "0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "images/loop").symlink_to(tmp_path / "images", target_is_directory=True)  # images/loop/loop/...
    (tmp_path / "images/also_a.jpg").symlink_to(tmp_path / "images/a.jpg")
    files = list_image_files(tmp_path / "images", prefix="val: ")
    assert [os.path.basename(f) for f in files] == ["a.jpg", "b.jpg"]
    assert any(m.startswith("val: WARNING: skipping") and "loop" in m and "already listed" in m for m in log)
    assert any("1 image paths skipped" in m and "also_a.jpg" in m for m in log)
    assert len(LoadImagesAndLabels(tmp_path / "images", img_size=64)) == 2
    listing = tmp_path / "list.txt"
    listing.write_text("images/a.jpg\nimages/b.jpg\nimages/a.jpg\n")
    assert len(list_image_files(listing)) == 2


def test_scan_rejects_images_over_the_pixel_limit(tmp_path):
    from tests.test_detect import _png_header
    from utils.data.labels import verify_image_label

    (tmp_path / "images").mkdir()
    big = _png_header(tmp_path / "images/big.png", 20000, 20000)
    item = verify_image_label(str(big), str(tmp_path / "labels/big.txt"))
    assert item.corrupt == 1 and "image too large" in item.msg and "400,000,000 pixels" in item.msg
    assert imread_bgr(big) is None


# ---------------------------------------------------------------------------------------------- conversions
def test_grayscale_rgba_16bit_and_exif_conversions(tmp_path):
    gray = (np.arange(30 * 40).reshape(30, 40) % 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    rgba = np.dstack([np.full((30, 40), v, np.uint8) for v in (10, 20, 30, 0)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    g16 = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    im = imread_bgr(tmp_path / "g.png")
    assert im.shape == (30, 40, 3) and im.dtype == np.uint8 and (im == gray[..., None]).all()
    im = imread_bgr(tmp_path / "rgba.png")
    assert im.shape == (30, 40, 3) and im[0, 0].tolist() == [10, 20, 30]  # alpha dropped, even where 0
    im = imread_bgr(tmp_path / "g16.png")
    assert im.dtype == np.uint8 and (im == (g16 >> 8).astype(np.uint8)[..., None]).all()
    with Image.open(tmp_path / "g16.png") as p16:  # the PIL fallback converts the same way
        assert np.array_equal(_pil_to_bgr(p16), im)
    with Image.open(tmp_path / "rgba.png") as prgba:
        assert _pil_to_bgr(prgba)[0, 0].tolist() == [10, 20, 30]

    stored = np.zeros((40, 60, 3), np.uint8)  # stored 60 wide x 40 tall, red block at the stored top-left
    stored[:16, :16] = (255, 0, 0)  # RGB red
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    (tmp_path / "images").mkdir()
    pil.save(tmp_path / "images/rot.jpg", exif=exif.tobytes(), quality=95)
    im = imread_bgr(tmp_path / "images/rot.jpg")
    assert im.shape == (60, 40, 3)  # displayed 40 wide x 60 tall
    assert im[4, 35, 2] > 200 and im[4, 4, 2] < 50  # the red block is now top-right
    ds = LoadImagesAndLabels(tmp_path / "images", img_size=120)
    assert ds.shapes.tolist() == [[40, 60]]  # (w, h) after EXIF orientation
    img, hw0, hw = ds.load_image(0)
    assert hw0 == (60, 40) and hw == (120, 80) and img[10, 70, 2] > 200


# ---------------------------------------------------------------------------------------------- dataset
def test_rect_batch_shapes_hand_computed():
    shapes = np.array([[640, 480], [480, 640], [640, 427], [500, 375], [100, 400]])  # (w, h)
    order, bi, bs = rect_batch_shapes(shapes, batch_size=2, img_size=640, stride=32, pad=0.5)
    # ratios h/w 0.75, 1.333, 0.667, 0.75, 4 -> sorted [2, 0, 3, 1, 4]; batches [0.667, 0.75] [0.75, 1.333] [4]
    assert order.tolist() == [2, 0, 3, 1, 4] and bi.tolist() == [0, 0, 1, 1, 2]
    # wide: [0.75, 1] -> ceil(15 + .5) * 32 = 512, ceil(20 + .5) * 32 = 672; mixed: [1, 1]; tall: [1, 1/4] -> 192
    assert bs.tolist() == [[512, 672], [672, 672], [672, 192]]
    _, _, bs0 = rect_batch_shapes(shapes, 2, 320, 32, pad=0.0)
    assert bs0.tolist() == [[256, 320], [320, 320], [320, 96]]


def test_load_image_interpolation_and_val_item(tmp_path):
    rng = np.random.default_rng(0)
    src = (rng.random((100, 150, 3)) * 255).astype(np.uint8)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images/a.png"), src)
    write_label(tmp_path / "images/a.png", "1 0.5 0.5 0.4 0.6\n")
    val = LoadImagesAndLabels(tmp_path / "images", img_size=64, batch_size=1, rect=True, stride=32, pad=0.5)
    im, hw0, hw = val.load_image(0)  # downscale for val: INTER_AREA to ceil sizes (64, 43)
    assert hw0 == (100, 150) and hw == (43, 64)
    assert np.array_equal(im, cv2.resize(src, (64, 43), interpolation=cv2.INTER_AREA))
    train = LoadImagesAndLabels(tmp_path / "images", img_size=64, augment=True, hyp=Hyp(mosaic=0))
    assert np.array_equal(train.load_image(0)[0], cv2.resize(src, (64, 43), interpolation=cv2.INTER_LINEAR))
    img, labels, path, shapes = val[0]
    # rect batch shape: ratio 2/3 -> ceil(2/3 * 2 + .5) * 32 = 64 tall, ceil(2 + .5) * 32 = 96 wide
    assert img.shape == (3, 64, 96) and img.dtype == torch.uint8 and path.endswith("a.png")
    (h0, w0), ((gh, gw), (padw, padh)) = shapes
    assert (h0, w0) == (100, 150) and (gh, gw) == (0.43, 64 / 150) and (padw, padh) == (16.0, 10.5)
    box = xywhn2xyxy(labels[:, 2:].numpy(), 96, 64)  # back to the original image as val.py does
    box[:, [0, 2]] = (box[:, [0, 2]] - padw) / gw
    box[:, [1, 3]] = (box[:, [1, 3]] - padh) / gh
    np.testing.assert_allclose(box, [[45, 20, 105, 80]], atol=0.05)
    assert labels[0, 1] == 1


def _coloured_split(root, n=4, size=(200, 240)):
    """n images, each with two filled rectangles of its own colours; class = colour index."""
    for k in range(n):
        h, w = size
        im = np.zeros((h, w, 3), np.uint8)
        boxes = [(20, 30, 100, 110), (130, 90, 220, 180)]
        lines = []
        for j, (x1, y1, x2, y2) in enumerate(boxes):
            c = 2 * k + j
            im[y1:y2, x1:x2] = COLORS[c]
            cx, cy, bw, bh = xyxy2xywhn(np.array([[x1, y1, x2, y2]], float), w, h)[0]
            lines.append(f"{c} {cx} {cy} {bw} {bh}")
        cv2.imwrite(str(root / f"images/{k}.png"), im)
        write_label(root / f"images/{k}.png", "\n".join(lines))


@pytest.mark.parametrize("mosaic_p", [1.0, 0.0])
def test_training_items_keep_boxes_on_objects(tmp_path, mosaic_p):
    (tmp_path / "images").mkdir()
    _coloured_split(tmp_path)
    hyp = Hyp(hsv_h=0, hsv_s=0, hsv_v=0, mosaic=mosaic_p, degrees=5, shear=2, flipud=0.5, fliplr=0.5)
    ds = LoadImagesAndLabels(tmp_path / "images", img_size=192, augment=True, hyp=hyp)
    random.seed(0)
    np.random.seed(0)
    compared = 0
    for rep in range(3):
        for i in range(len(ds)):
            img, labels, _, shapes = ds[i]
            assert img.shape == (3, 192, 192) and (shapes is None) == (mosaic_p == 1.0)
            bgr = np.ascontiguousarray(img.numpy()[::-1].transpose(1, 2, 0))
            lab = labels[:, 1:].numpy().astype(float)
            lab[:, 1:] = xywhn2xyxy(lab[:, 1:], 192, 192)
            if len(np.unique(lab[:, 0])) < len(lab):
                continue  # an image used twice in one mosaic repeats its colours
            compared += assert_aligned(bgr, lab, thr=0.85)
    assert compared >= 8


def test_mixup_items(tmp_path):
    (tmp_path / "images").mkdir()
    _coloured_split(tmp_path)
    ds = LoadImagesAndLabels(tmp_path / "images", img_size=128, augment=True, hyp=Hyp(mosaic=1.0, mixup=1.0))
    random.seed(1)
    np.random.seed(1)
    img, labels, _, shapes = ds[0]
    assert img.shape == (3, 128, 128) and shapes is None and len(labels) > 2  # two mosaics' labels
    assert ((labels[:, 2:] >= 0) & (labels[:, 2:] <= 1)).all()


def test_single_cls_and_ram_disk_cache(tmp_path):
    (tmp_path / "images").mkdir()
    _coloured_split(tmp_path, n=3)
    plain = LoadImagesAndLabels(tmp_path / "images", img_size=96, batch_size=2, rect=True)
    ram = LoadImagesAndLabels(tmp_path / "images", img_size=96, batch_size=2, rect=True, cache="ram",
                              single_cls=True)
    disk = LoadImagesAndLabels(tmp_path / "images", img_size=96, batch_size=2, rect=True, cache="disk")
    assert all(im is not None for im in ram.ims) and all((lb[:, 0] == 0).all() for lb in ram.labels)
    assert sorted(p.name for p in (tmp_path / "images").iterdir() if p.suffix == ".npy") == ["0.npy", "1.npy", "2.npy"]
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "images").iterdir())
    for i in range(3):
        a, b, c = plain[i], ram[i], disk[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0]) and a[3] == b[3] == c[3]
        assert torch.equal(a[1], c[1]) and torch.equal(b[1][:, 2:], a[1][:, 2:])
    with pytest.raises(ValueError, match="cache='gpu' is not valid"):
        LoadImagesAndLabels(tmp_path / "images", cache="gpu")


def test_recent_images_are_exact_read_only_and_bounded(tmp_path, monkeypatch):
    import utils.data.dataset as dataset_module

    (tmp_path / "images").mkdir()
    _coloured_split(tmp_path, n=3)
    ds = LoadImagesAndLabels(tmp_path / "images", img_size=96)
    first = ds.load_image(1)
    again = ds.load_image(1)
    assert again[0] is first[0] and not first[0].flags.writeable
    fresh = cv2.resize(cv2.imread(ds.im_files[1]), (96, 80), interpolation=cv2.INTER_AREA)
    assert np.array_equal(first[0], fresh) and first[1:] == ((200, 240), (80, 96))
    monkeypatch.setattr(dataset_module, "RECENT_BYTES", 2 * fresh.nbytes)
    small = LoadImagesAndLabels(tmp_path / "images", img_size=96)
    for i in (0, 1, 2, 0):
        small.load_image(i)
    assert list(small._recent) == [2, 0] and small._recent_bytes == 2 * fresh.nbytes


# ---------------------------------------------------------------------------------------------- dataloader
@pytest.mark.parametrize("workers", [0, 2])
def test_coco128_dataloader_batches(coco128, workers):
    """With worker processes the check runs in a fresh interpreter: a test process that an earlier test left with
    native runtimes' thread pools (ONNX Runtime, OpenVINO) can crash when it forks loader workers."""
    if workers:
        import subprocess
        import sys

        code = f"from tests.test_data import check_coco128_loader; check_coco128_loader({workers})"
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        check_coco128_loader(workers)


def check_coco128_loader(workers: int) -> None:
    cfg = load_data_config("coco128.yaml")
    loader, ds = create_dataloader(cfg.val, 320, 16, 32, rect=True, pad=0.5, workers=workers, prefix="val: ")
    assert loader.num_workers == workers and len(ds) == 128 and ds.shapes.dtype.kind == "i"
    assert sum(len(lb) for lb in ds.labels) == 929 and ds.shapes.shape == (128, 2)
    imgs, targets, paths, shapes = next(iter(loader))
    assert imgs.dtype == torch.uint8 and imgs.shape[:2] == (16, 3)
    assert tuple(imgs.shape[2:]) == tuple(ds.batch_shapes[0]) and len(paths) == 16 and len(shapes) == 16
    assert targets.dtype == torch.float32 and targets.shape[1] == 6
    assert set(targets[:, 0].long().tolist()) <= set(range(16)) and (targets[:, 2:] >= 0).all()
    assert (targets[:, 2:] <= 1).all()
    n0 = len(ds.labels[0])
    assert (targets[:, 0] == 0).sum() == n0
    train, tds = create_dataloader(cfg.train, 320, 16, 32, augment=True, workers=workers, shuffle=True, seed=1)
    imgs, targets, paths, shapes = next(iter(train))
    assert imgs.shape == (16, 3, 320, 320) and len(targets) > 0 and (targets[:, 3:] <= 1).all()


def test_dataloader_rect_disables_shuffle_and_distributed_sampler(tmp_path, coco128, log):
    import torch.distributed as dist

    cfg = load_data_config("coco128.yaml")
    loader, _ = create_dataloader(cfg.val, 160, 8, 32, rect=True, shuffle=True, workers=0)
    assert any("incompatible with DataLoader shuffle" in m for m in log)
    assert isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader, _ = create_dataloader(cfg.train, 160, 8, 32, augment=True, rank=0, workers=0, shuffle=True)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler) and loader.sampler.shuffle
    finally:
        dist.destroy_process_group()


def test_disk_cache_on_a_read_only_data_set_trains_without_a_cache(tmp_path, monkeypatch, log):
    import errno
    import tempfile

    (tmp_path / "images").mkdir()
    _coloured_split(tmp_path, n=3)
    plain = LoadImagesAndLabels(tmp_path / "images", img_size=96, batch_size=2, rect=True)

    def read_only(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    ds = LoadImagesAndLabels(tmp_path / "images", img_size=96, batch_size=2, rect=True, cache="disk")
    assert ds.cache is None and not list((tmp_path / "images").glob("*.npy"))
    assert any("--cache disk writes .npy files beside the images" in m and "Read-only file system" in m for m in log)
    assert torch.equal(ds[1][0], plain[1][0])  # the images still load


def test_workers_spawn_once_a_fork_unsafe_runtime_is_loaded(monkeypatch):
    """DataLoader workers are forked, unless ONNX Runtime or OpenVINO is loaded in the process (a fork then
    crashed the process now and then): then they are spawned."""
    import sys
    import types

    from utils.data.dataset import FORK_UNSAFE, worker_start_method

    for m in FORK_UNSAFE:
        monkeypatch.delitem(sys.modules, m, raising=False)
    assert worker_start_method() is None
    monkeypatch.setitem(sys.modules, "openvino", types.ModuleType("openvino"))
    assert worker_start_method() == "spawn"
