"""detect.py on a photo, a folder, a video written here, every bad source; drawing helpers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import detect
from models import load_model
from utils.augment import letterbox
from utils.boxes import scale_boxes, xyxy2xywh
from utils.nms import non_max_suppression
from utils.plots import Annotator, colors, text_color
from .conftest import LogCapture

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "data/images"
BUS = IMAGES / "bus.jpg"




def _run(tmp_path, **kw):
    with LogCapture() as log:
        save_dir, records = detect.run(**{"imgsz": 320, "project": tmp_path, **kw})
    return save_dir, records, log.text


def test_photo_matches_direct_inference(tmp_path):
    save_dir, records, text = _run(tmp_path, source=BUS, save_txt=True, save_conf=True)
    assert save_dir == tmp_path / "exp"
    # the same by hand: letterbox to the smallest 32-multiple rectangle, infer, NMS, back to the photo
    model = load_model("yolov5n.pt", fuse=True)
    im0 = cv2.imread(str(BUS))
    im = letterbox(im0, (320, 320), stride=32, auto=True)[0]
    x = torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
    with torch.no_grad():
        det = non_max_suppression(model(x)[0], 0.25, 0.45, max_det=1000)[0]
    det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], im0.shape).round()
    assert len(records) == 1 and records[0].path == str(BUS) and records[0].frame == 0
    np.testing.assert_allclose(records[0].boxes, det.numpy(), atol=1e-5)
    assert len(det) >= 3

    out = cv2.imread(str(save_dir / "bus.jpg"))
    assert out.shape == im0.shape and not np.array_equal(out, im0)  # drawn, same size
    lines = np.loadtxt(save_dir / "labels" / "bus.txt", ndmin=2)
    d = det.numpy().astype(np.float64)
    gn = np.array([im0.shape[1], im0.shape[0]] * 2)
    want = np.concatenate((d[:, 5:6], xyxy2xywh(d[:, :4]) / gn, d[:, 4:5]), 1)[::-1]
    np.testing.assert_allclose(lines, want, atol=1e-5)

    counts = {}
    for c in det[:, 5].int().tolist():
        counts[c] = counts.get(c, 0) + 1
    found = "".join(f"{n} {model.names[c]}{'s' * (n > 1)}, " for c, n in sorted(counts.items()))
    assert re.search(rf"image 1/1 {re.escape(str(BUS))}: {x.shape[2]}x{x.shape[3]} {found}\d+\.\dms", text)
    assert "Speed: " in text and "per image at shape (1, 3, 320, 320)" in text
    assert "1 labels saved to" in text


def test_folder_and_options(tmp_path):
    save_dir, records, text = _run(tmp_path, source=IMAGES, save_crop=True)
    names = sorted(p.name for p in IMAGES.glob("*.jpg"))
    assert sorted(Path(r.path).name for r in records) == names
    assert sorted(p.name for p in save_dir.glob("*.jpg")) == names
    assert [line.split(":")[0] for line in text.splitlines() if line.startswith("image ")] == \
        [f"image {i}/5 {IMAGES / n}" for i, n in enumerate(names, 1)]
    assert any((save_dir / "crops" / "person").glob("*.jpg"))

    _, globbed, _ = _run(tmp_path, source=str(IMAGES / "[bz]*.jpg"), nosave=True)
    assert [Path(r.path).name for r in globbed] == ["bus.jpg", "zidane.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{IMAGES / 'zidane.jpg'}\n{BUS}\n")
    listed_dir, listed, _ = _run(tmp_path, source=listing)
    assert [Path(r.path).name for r in listed] == ["zidane.jpg", "bus.jpg"]
    assert sorted(p.name for p in listed_dir.glob("*.jpg")) == ["bus.jpg", "zidane.jpg"]

    _, persons, _ = _run(tmp_path, source=BUS, classes=[0], nosave=True, max_det=2)
    assert set(persons[0].boxes[:, 5].tolist()) == {0.0} and len(persons[0].boxes) == 2
    assert not list((tmp_path / "exp4").glob("*.jpg"))  # --nosave
    full = cv2.imread(str(_run(tmp_path, source=BUS)[0] / "bus.jpg"))
    bare = cv2.imread(str(_run(tmp_path, source=BUS, hide_labels=True)[0] / "bus.jpg"))
    noconf = cv2.imread(str(_run(tmp_path, source=BUS, hide_conf=True, line_thickness=1)[0] / "bus.jpg"))
    assert (full != bare).any() and (full != noconf).any()
    with LogCapture() as log:
        detect.run(source=BUS, imgsz=320, project=tmp_path, half=True, nosave=True)  # CPU: warns, runs fp32
    assert "--half needs CUDA" in log.text


def _write_video(path: Path, n: int, size=(320, 240), fps: float = 7.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    base = cv2.imread(str(BUS))
    for i in range(n):
        crop = base[i * 20: i * 20 + 800, :]  # the scene drifting up
        writer.write(cv2.resize(crop, size))
    writer.release()


def test_video(tmp_path):
    video = tmp_path / "clip.mp4"
    _write_video(video, 6)
    save_dir, records, text = _run(tmp_path / "runs", source=video, save_txt=True, conf_thres=0.1)
    out = cv2.VideoCapture(str(save_dir / "clip.mp4"))
    assert int(out.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (int(out.get(cv2.CAP_PROP_FRAME_WIDTH)), int(out.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (320, 240)
    assert out.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0, abs=0.01)
    out.release()
    assert [r.frame for r in records] == [1, 2, 3, 4, 5, 6]
    txts = sorted(p.name for p in (save_dir / "labels").glob("*.txt"))
    assert txts == [f"clip_{r.frame}.txt" for r in records if len(r.boxes)] and len(txts) >= 4
    assert re.search(rf"video {re.escape(str(video))}: 6 frames, \d+ persons", text)

    _, strided, _ = _run(tmp_path / "runs", source=video, vid_stride=2, nosave=True)
    assert [r.frame for r in strided] == [1, 2, 3]

    # the stream path (as for a webcam or URL), through a .streams file naming the video
    streams = tmp_path / "cams.streams"
    streams.write_text(f"{video}\n")
    save_dir, records, text = _run(tmp_path / "runs", source=streams)
    assert records and all(r.path == str(video) for r in records)
    assert re.search(r"^0: 256x320 \d+ person", text, re.M)
    cap = cv2.VideoCapture(str(save_dir / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(records) and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0)
    cap.release()


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an image" * 10)
    return path


def test_bad_sources(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect.run(source=tmp_path / "missing.jpg", project=tmp_path)
    with pytest.raises(FileNotFoundError, match="no files match"):
        detect.run(source=str(tmp_path / "nothing*.jpg"), project=tmp_path)
    bad = _garbage(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="could be decoded"):
        detect.run(source=bad, project=tmp_path)
    with pytest.raises(ValueError, match="could be decoded"):
        detect.run(source=_garbage(tmp_path / "bad.mp4"), project=tmp_path)

    for argv in (["--source", str(tmp_path / "missing.jpg")], ["--source", str(bad)]):
        with pytest.raises(SystemExit) as e:
            detect.main(detect.parse_opt(argv + ["--project", str(tmp_path / "cli")]))
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("ERROR: ") and "Traceback" not in err

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(BUS, mixed / "a_bus.jpg")
    _garbage(mixed / "b_broken.jpg")
    shutil.copy(IMAGES / "zidane.jpg", mixed / "c_zidane.jpg")
    save_dir, records, text = _run(tmp_path / "runs", source=mixed)
    assert "skipping" in text and "b_broken.jpg" in text
    assert [Path(r.path).name for r in records] == ["a_bus.jpg", "c_zidane.jpg"]
    assert sorted(p.name for p in save_dir.glob("*.jpg")) == ["a_bus.jpg", "c_zidane.jpg"]


def test_annotator_colours():
    assert text_color((0, 255, 255)) == (0, 0, 0)  # yellow (BGR): black text
    assert text_color((236, 24, 0)) == (255, 255, 255)  # dark blue: white text
    assert colors(0) == (255, 56, 56) and colors(0, bgr=True) == (56, 56, 255) and colors(20) == colors(0)
    im = np.zeros((100, 200, 3), np.uint8)
    a = Annotator(im, line_width=2)
    a.box_label((50, 40, 150, 90), "person 0.91", color=(56, 56, 255))
    out = a.result()
    assert tuple(out[65, 50]) == (56, 56, 255)  # left edge of the box
    tag = out[25:38, 52:100].reshape(-1, 3)  # tag above the box: its colour and black/white text pixels
    assert (tag == (56, 56, 255)).all(1).mean() > 0.4 and (tag.max(1) > 200).any()
    edge = Annotator(np.zeros((100, 200, 3), np.uint8), line_width=2)
    edge.box_label((180, 40, 199, 90), "a long label", color=(0, 255, 0))
    assert (edge.result()[30, :120] == (0, 255, 0)).all(1).any()  # tag slid left to stay inside
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        Annotator(np.zeros((10, 10), np.uint8))
