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
from utils.boxes import scale_boxes, xyxy2xywh
from utils.data.augment import letterbox
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
            detect.cli(argv + ["--project", str(tmp_path / "cli")])
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


def _thin_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "thin"
    folder.mkdir()
    shutil.copy(BUS, folder / "a_bus.jpg")
    cv2.imwrite(str(folder / "b_tall.png"), np.full((5000, 10, 3), 90, np.uint8))  # 10x5000
    cv2.imwrite(str(folder / "c_wide.png"), np.full((4, 8000, 3), 90, np.uint8))  # 8000x4: 0 rows at 640
    shutil.copy(IMAGES / "zidane.jpg", folder / "d_zidane.jpg")
    return folder


def test_extreme_aspect_ratios_do_not_stop_a_folder(tmp_path, capsys):
    folder = _thin_folder(tmp_path)
    detect.cli(["--source", str(folder), "--project", str(tmp_path / "cli"), "--nosave"])
    assert "ERROR" not in capsys.readouterr().err  # main returned: exit status 0
    save_dir, records, text = _run(tmp_path, source=folder, imgsz=640)
    assert [Path(r.path).name for r in records] == ["a_bus.jpg", "b_tall.png", "c_wide.png", "d_zidane.jpg"]
    assert len(records[0].boxes) >= 3 and len(records[3].boxes) >= 2
    assert cv2.imread(str(save_dir / "c_wide.png")).shape == (4, 8000, 3)
    assert re.search(r"image 3/4 \S+c_wide.png: 32x640 ", text)  # 1 row letterboxed to one stride


def test_a_frame_opencv_cannot_handle_is_skipped(tmp_path, monkeypatch):
    import utils.data.sources

    real = utils.data.sources.letterbox

    def fails_on_tall(im, *args, **kwargs):
        if im.shape[0] > 10 * im.shape[1]:
            raise cv2.error("OpenCV(5.0.0) resize.cpp:1: error: (-215:Assertion failed) inv_scale_x > 0")
        return real(im, *args, **kwargs)

    real_write = cv2.imwrite

    def fails_on_zidane(path, im, *args):
        if "zidane" in str(path):
            raise cv2.error("OpenCV(5.0.0) loadsave.cpp:1: error: (-2:Unspecified error) could not write")
        return real_write(path, im, *args)

    monkeypatch.setattr(utils.data.sources, "letterbox", fails_on_tall)
    monkeypatch.setattr(cv2, "imwrite", fails_on_zidane)
    save_dir, records, text = _run(tmp_path, source=_thin_folder(tmp_path), imgsz=128)
    assert [Path(r.path).name for r in records] == ["a_bus.jpg", "c_wide.png"]
    assert re.search(r"WARNING: skipping \S+b_tall.png: cannot letterbox a 10x5000 image \(\(-215", text)
    assert re.search(r"WARNING: skipping \S+d_zidane.jpg: \(-2:Unspecified error\) could not write", text)


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        detect.cli(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("ERROR: ") and err.count("\n") == 1, err
    return err


def test_line_thickness_and_imgsz_are_bounded(tmp_path, capsys):
    common = ["--source", str(BUS), "--project", str(tmp_path)]
    for lw in ("-5", "5000"):
        assert f"--line-thickness {lw}: must be an integer from 0" in _cli_error(common + ["--line-thickness", lw],
                                                                              capsys)
    assert "--imgsz 100000: image sizes must be at most 8192" in _cli_error(common + ["--imgsz", "100000"], capsys)
    import val

    with pytest.raises(SystemExit) as e:
        val.cli(["--imgsz", "100000", "--project", str(tmp_path), "--data", "coco128.yaml"])
    assert e.value.code == 2 and "at most 8192" in capsys.readouterr().err
    _run(tmp_path, source=BUS, imgsz=128, line_thickness=0, nosave=True)  # 0: scale with the image


def _png_header(path: Path, w: int, h: int) -> Path:
    """A PNG that declares w x h pixels (its data is cut short: only the header may be read)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


def test_huge_image_is_skipped_before_decoding(tmp_path, monkeypatch):
    folder = tmp_path / "huge"
    folder.mkdir()
    shutil.copy(BUS, folder / "a_bus.jpg")
    _png_header(folder / "b_huge.png", 20000, 20000)
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or real(buf, flags))
    _, records, text = _run(tmp_path, source=folder, imgsz=128, nosave=True)
    assert [Path(r.path).name for r in records] == ["a_bus.jpg"] and len(decoded) == 1
    assert re.search(r"WARNING: skipping \S+b_huge.png: image too large: (20000x20000 = )?400,000,000 pixels, over "
                     r"the limit of 178,956,970", text)


def test_same_file_names_get_distinct_outputs_written_afresh(tmp_path):
    for sub, src in (("a", BUS), ("b", IMAGES / "zidane.jpg")):
        (tmp_path / sub).mkdir()
        shutil.copy(src, tmp_path / sub / "img.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'a/img.jpg'}\n{tmp_path / 'b/img.jpg'}\n")
    kw = dict(source=listing, save_txt=True, name="same", exist_ok=True)
    save_dir, records, _ = _run(tmp_path / "runs", **kw)
    assert sorted(p.name for p in save_dir.glob("*.jpg")) == ["img.jpg", "img_1.jpg"]
    assert cv2.imread(str(save_dir / "img.jpg")).shape == cv2.imread(str(BUS)).shape
    assert cv2.imread(str(save_dir / "img_1.jpg")).shape == cv2.imread(str(IMAGES / "zidane.jpg")).shape
    first = {p.name: p.read_text() for p in (save_dir / "labels").glob("*.txt")}
    assert sorted(first) == ["img.txt", "img_1.txt"]
    assert [len(first[n].splitlines()) for n in ("img.txt", "img_1.txt")] == [len(r.boxes) for r in records]
    again, _, _ = _run(tmp_path / "runs", **kw)  # --exist-ok: the same folder, each label file rewritten
    assert again == save_dir and {p.name: p.read_text() for p in (save_dir / "labels").glob("*.txt")} == first


def _checkpoint_with(tmp_path: Path, name: str, names=None, nan: bool = False) -> Path:
    from models import resolve_weights
    from utils.checkpoint import load_checkpoint, save_checkpoint

    ckpt = dict(load_checkpoint(resolve_weights("yolov5n.pt")))
    ckpt["model"] = dict(ckpt["model"])
    if names is not None:
        ckpt["names"] = names
    if nan:
        ckpt["model"]["model.24.m.0.bias"] = torch.full_like(ckpt["model"]["model.24.m.0.bias"], float("nan"))
    ckpt.pop("format", None)
    return save_checkpoint(ckpt, tmp_path / name)


def test_class_names_never_leave_the_crops_folder(tmp_path):
    from utils.paths import safe_name

    assert safe_name("../../../../tmp/x") == "_.._.._.._tmp_x" and safe_name("/abs") == "_abs"
    assert safe_name("..") == "_" and safe_name("traffic light") == "traffic light" and safe_name("a\\b") == "a_b"
    names = [f"person{i}" for i in range(80)]
    names[0], names[5] = "../../../escaped", str(tmp_path / "abs")  # person, bus
    weights = _checkpoint_with(tmp_path, "names.pt", {i: n for i, n in enumerate(names)})  # a dict, as YOLOv8
    save_dir, records, text = _run(tmp_path / "runs", weights=weights, source=BUS, save_crop=True, nosave=True)
    assert {0, 5} <= set(records[0].boxes[:, 5].astype(int).tolist())
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "abs").exists()
    crops = sorted(p.relative_to(save_dir / "crops").parent.name for p in save_dir.rglob("*.jpg"))
    assert set(crops) == {"_.._.._escaped", safe_name(tmp_path / "abs")}
    assert "../../../escaped" in text  # the log still says what the class is called


def test_nan_weights_and_outputs_are_errors_naming_the_file(tmp_path, capsys, monkeypatch):
    import models
    import val

    weights = _checkpoint_with(tmp_path, "nan.pt", nan=True)
    err = _cli_error(["--weights", str(weights), "--source", str(BUS), "--project", str(tmp_path)], capsys)
    assert f"ERROR: {weights}: 1 weight tensors hold NaN or inf values (first: model.24.m.0" in err
    with pytest.raises(SystemExit) as e:
        val.cli(["--weights", str(weights), "--project", str(tmp_path)])
    assert e.value.code == 2 and f"ERROR: {weights}: 1 weight tensors hold NaN" in capsys.readouterr().err

    real = models.load_model

    def nan_outputs(*args, **kwargs):
        model = real(*args, **kwargs)
        model.model[-1].register_forward_hook(lambda m, i, out: (out[0] * float("nan"), *out[1:]))
        return model

    monkeypatch.setattr(models, "load_model", nan_outputs)
    with pytest.raises(ValueError, match=r"yolov5n.pt: the model's outputs on \S+bus.jpg are NaN or inf"):
        _run(tmp_path, source=BUS, imgsz=128)


def test_save_csv_and_view_img(tmp_path, monkeypatch):
    """--save-csv: YOLOv5's predictions.csv, written afresh each run; --view-img: each drawn image shown, or
    without a display one warning and the run goes on."""
    import csv

    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(BUS, folder / "bus.jpg")
    shutil.copy(IMAGES / "zidane.jpg", folder / "zidane.jpg")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    kw = dict(source=folder, imgsz=128, nosave=True, save_csv=True, view_img=True, name="csv", exist_ok=True)
    save_dir, records, text = _run(tmp_path / "runs", **kw)
    assert len(records) == 2 and text.count("--view-img: cannot show images (no display") == 1
    with open(save_dir / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    names = load_model("yolov5n.pt").names
    want = [[Path(r.path).name, names[int(c)], f"{conf:.2f}"] for r in records for *_, conf, c in r.boxes[::-1]]
    assert rows[0] == ["Image Name", "Prediction", "Confidence"] and rows[1:] == want and len(want) >= 4
    assert not list(save_dir.glob("*.jpg"))  # --nosave still holds

    shown = []
    monkeypatch.setenv("DISPLAY", ":0")
    for fn in ("namedWindow", "resizeWindow", "destroyAllWindows"):
        monkeypatch.setattr(cv2, fn, lambda *a: None, raising=False)
    monkeypatch.setattr(cv2, "imshow", lambda name, im: shown.append((name, im.copy())), raising=False)
    monkeypatch.setattr(cv2, "waitKey", lambda ms: -1, raising=False)
    save_dir, _, text = _run(tmp_path / "runs", **kw)
    assert "WARNING" not in text
    assert [n for n, _ in shown] == [str(folder / "bus.jpg"), str(folder / "zidane.jpg")]
    assert shown[0][1].shape == cv2.imread(str(BUS)).shape and (shown[0][1] != cv2.imread(str(BUS))).any()  # drawn
    with open(save_dir / "predictions.csv", newline="") as f:
        assert list(csv.reader(f)) == rows  # the same folder (--exist-ok): written afresh, not appended


def test_visualize_feature_maps(tmp_path):
    """--visualize: per image a folder of per-layer figures (first 32 channels) and maps; of a --augment run the
    first pass (the plain one); exports and ensembles are refused."""
    from utils.errors import UserError

    save_dir, _, _ = _run(tmp_path, source=BUS, imgsz=128, nosave=True, visualize=True)
    model = load_model("yolov5n.pt")
    pngs = sorted((save_dir / "bus").glob("*.png"), key=lambda p: int(p.name[5:].split("_")[0]))
    types = [m.type.split(".")[-1] for m in model.model[:-1]]  # nn.Upsample: Upsample, as YOLOv5; no Detect
    assert [p.name for p in pngs] == [f"stage{i}_{t}_features.png" for i, t in enumerate(types)]
    x = np.load(save_dir / "bus" / "stage0_Conv_features.npy")
    assert x.shape == (16, 64, 48)  # 16 channels at stride 2 of the 128x96 input
    fig = cv2.imread(str(pngs[0]))
    assert fig.shape[1] > fig.shape[0] > 0 and len(np.unique(fig.reshape(-1, 3), axis=0)) > 50  # 2 rows of 8
    aug_dir, _, _ = _run(tmp_path, source=BUS, imgsz=128, nosave=True, visualize=True, augment=True)
    assert len(list((aug_dir / "bus").glob("*.png"))) == len(pngs)
    np.testing.assert_array_equal(np.load(aug_dir / "bus" / "stage0_Conv_features.npy"), x)
    with pytest.raises(UserError, match=r"--visualize needs the PyTorch checkpoint \(.pt\).*onnx export m.onnx"):
        detect.run(weights="m.onnx", source=BUS, project=tmp_path, visualize=True)


def test_parser_exact_flags_and_prefixes(capsys):
    """'--visualize' is its own flag beside --visualize-routing (an exact match wins); unambiguous prefixes mean
    the option they begin, as in official YOLOv5; an ambiguous one is an error naming the candidates."""
    opt = detect.parse_opt(["--visualize", "--augment", "--view-img", "--save-csv"])
    assert opt.visualize and not opt.visualize_routing and opt.augment and opt.view_img and opt.save_csv
    opt = detect.parse_opt(["--visualize-rout", "--conf", "0.5", "--save-cs"])
    assert opt.visualize_routing and not opt.visualize and opt.conf_thres == 0.5 and opt.save_csv
    with pytest.raises(SystemExit) as e:
        detect.parse_opt(["--save-c"])
    assert e.value.code == 2 and "ambiguous option: --save-c" in capsys.readouterr().err


def test_every_option_is_a_typed_field():
    """detect.py's command line, DetectOptions and detect.run's keywords name the same options: a flag added to one
    only would be refused (or missing) when the options are built; their defaults mean the same."""
    import inspect
    from dataclasses import fields

    from utils.detection.options import DetectOptions

    names = {f.name for f in fields(DetectOptions)}
    assert set(vars(detect.parse_opt([]))) == names
    assert set(inspect.signature(detect.run).parameters) == names
    cli, defaults = vars(detect.parse_opt([])), DetectOptions()
    assert {k for k in names if cli[k] != getattr(defaults, k)} == {"source", "project", "imgsz"}
    assert cli["source"] == str(defaults.source) and cli["project"] == str(defaults.project)
    assert cli["imgsz"] == [640] and defaults.imgsz == (640, 640)  # one size: a square
    with pytest.raises(TypeError, match=r"detect.run\(\) got an unknown option 'conf'; options: \['agnostic_nms'"):
        detect.run(conf=0.5)


def test_classes_the_model_lacks_are_warned_about(tmp_path):
    """--classes 500 on an 80-class model filtered every detection away without a word."""
    _, records, text = _run(tmp_path, source=BUS, classes=[0, 500, -1], nosave=True)
    assert "WARNING: --classes -1 500: the model has 80 classes (0..79); these are never detected" in text
    assert all(int(c) == 0 for r in records for c in r.boxes[:, 5]) and len(records[0].boxes) > 0
    _, _, text = _run(tmp_path, source=BUS, classes=[0, 5], nosave=True)
    assert "--classes" not in text


def test_data_names_label_the_boxes_from_the_command_line(tmp_path):
    """`detect.py --data my.yaml` (as official YOLOv5's): the YAML's class names label the boxes (predictions.csv
    here) instead of the model's; a YAML with another number of classes is one line naming both counts."""
    import csv
    import subprocess
    import sys

    import yaml

    root = Path(detect.__file__).resolve().parent
    names = [f"thing{i}" for i in range(80)]
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"names": names}))
    cmd = [sys.executable, str(root / "detect.py"), "--weights", "yolov5n.pt", "--source", str(BUS), "--img", "128",
           "--nosave", "--save-csv", "--project", str(tmp_path), "--device", "cpu"]
    r = subprocess.run(cmd + ["--data", str(tmp_path / "mine.yaml")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / "exp" / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    model_names = load_model("yolov5n.pt").names
    assert rows and all(row[1] in names for row in rows) and not any(row[1] in model_names for row in rows)
    (tmp_path / "three.yaml").write_text(yaml.safe_dump({"names": ["a", "b", "c"]}))
    r = subprocess.run(cmd + ["--data", str(tmp_path / "three.yaml")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (f"ERROR: --data {tmp_path / 'three.yaml'}: 3 class names, but the "
                                                 "model has 80 classes")
