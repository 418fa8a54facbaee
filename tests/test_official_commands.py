"""Official YOLOv5's README and tutorial commands, written here verbatim, parse and mean what they mean there:
its aliases (--img, --img-size) and the unambiguous prefixes its users type (--batch, --conf, --iou) are accepted,
and an ambiguous prefix is argparse's error naming the candidates."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import compare
import detect
import export
import train
import val
from benchmarks import deploy as deploy_bench

ROOT = Path(__file__).resolve().parent.parent
PARSERS = {"train.py": lambda a: train.parse_opt(args=a), "val.py": val.parse_opt, "detect.py": detect.parse_opt,
           "export.py": export.parse_opt, "compare.py": lambda a: compare.parse_opt(args=a),
           "benchmarks.py": deploy_bench.parse_opt}

# (command as official YOLOv5's README, tutorials and issue answers write it, what it means there)
OFFICIAL = [
    ("python train.py --img 640 --batch 16 --epochs 3 --data coco128.yaml --weights yolov5s.pt --cache",
     dict(imgsz=640, batch_size=16, epochs=3, data="coco128.yaml", weights="yolov5s.pt", cache="ram")),
    ("python train.py --data coco.yaml --epochs 300 --weights '' --cfg yolov5n.yaml  --batch-size 128",
     dict(data="coco.yaml", epochs=300, weights="", cfg="yolov5n.yaml", batch_size=128)),
    ("python train.py --img 640 --batch 16 --epochs 3 --data coco128.yaml --weights yolov5s.pt --freeze 10",
     dict(imgsz=640, batch_size=16, freeze=[10])),
    ("python train.py --epochs 10 --data coco128.yaml --weights yolov5s.pt --cache --evolve",
     dict(epochs=10, evolve=300, cache="ram")),
    ("python train.py --img-size 640 --batch-size 16 --resume", dict(imgsz=640, batch_size=16, resume=True)),
    ("python val.py --weights yolov5s.pt --data coco.yaml --img 640 --conf 0.001 --iou 0.65",
     dict(weights=["yolov5s.pt"], data="coco.yaml", imgsz=640, conf_thres=0.001, iou_thres=0.65)),
    ("python val.py --weights yolov5x.pt --data coco.yaml --img 832 --augment --half",
     dict(weights=["yolov5x.pt"], imgsz=832, augment=True, half=True)),
    ("python val.py --weights yolov5x.pt yolov5l6.pt --data coco.yaml --img 640 --half",
     dict(weights=["yolov5x.pt", "yolov5l6.pt"], half=True)),
    ("python val.py --weights yolov5s.pt --data coco128.yaml --img 640 --task speed",
     dict(task="speed", imgsz=640)),
    ("python detect.py --weights yolov5s.pt --img 640 --conf 0.25 --source data/images",
     dict(weights=["yolov5s.pt"], imgsz=[640], conf_thres=0.25, source="data/images")),
    ("python detect.py --weights yolov5x.pt yolov5l6.pt --img 640 --source data/images",
     dict(weights=["yolov5x.pt", "yolov5l6.pt"], imgsz=[640])),
    ("python detect.py --weights yolov5s.pt --source 'path/*.jpg' --iou 0.5 --classes 0 2",
     dict(source="path/*.jpg", iou_thres=0.5, classes=[0, 2])),
    ("python export.py --weights yolov5s.pt --include torchscript onnx",
     dict(weights=["yolov5s.pt"], include=["torchscript", "onnx"])),
    ("python export.py --weights yolov5s.pt --include onnx --img 640 --batch 1 --dynamic",
     dict(include=["onnx"], imgsz=[640], batch_size=1, dynamic=True)),
    ("python benchmarks.py --weights yolov5s.pt --img 640", dict(weights="yolov5s.pt", imgsz=640, device="")),
    ("python compare.py --cfgs yolov5n.yaml yolov5n_biformer.yaml --img 320 --batch 8 --epochs 5",
     dict(imgsz=320, batch_size=8, epochs=5)),
]


@pytest.mark.parametrize("command,meaning", OFFICIAL, ids=[c for c, _ in OFFICIAL])
def test_official_command_means_what_it_means_there(command, meaning):
    _, script, *argv = shlex.split(command)
    opt = vars(PARSERS[script](argv))
    assert {k: opt[k] for k in meaning} == meaning


@pytest.mark.parametrize("script,argv,candidates", [
    ("val.py", ["--save", "x"], ["--save-txt", "--save-conf", "--save-json"]),
    ("detect.py", ["--save-c"], ["--save-conf", "--save-crop", "--save-csv"]),
    ("train.py", ["--no"], ["--nosave", "--noval"]),
])
def test_an_ambiguous_prefix_names_the_candidates(script, argv, candidates, capsys):
    with pytest.raises(SystemExit) as e:
        PARSERS[script](argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"ambiguous option: {argv[0]} could match" in err
    assert all(c in err for c in candidates)


def test_exact_flags_win_over_longer_ones():
    """--visualize is a flag of its own beside --visualize-routing: the exact match wins."""
    opt = detect.parse_opt(["--visualize"])
    assert opt.visualize and not opt.visualize_routing
    opt = detect.parse_opt(["--visualize-r"])
    assert opt.visualize_routing and not opt.visualize


def test_official_detect_command_runs(tmp_path):
    """The README's detect command with official prefixes, through the command line; --save-format 1 writes the
    same boxes as Pascal-VOC lines (cls x1 y1 x2 y2 conf, pixels), and another value is one ERROR line."""
    import cv2
    import numpy as np

    def detect_cli(*extra):
        return subprocess.run([sys.executable, str(ROOT / "detect.py"), "--weights",
                               str(ROOT / "weights" / "yolov5n.pt"), "--img", "320", "--conf", "0.5", "--iou", "0.5",
                               "--source", str(ROOT / "data" / "images" / "bus.jpg"), "--save-txt", "--save-conf",
                               "--project", str(tmp_path), "--device", "cpu", *extra],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)

    r = detect_cli()
    assert r.returncode == 0, r.stderr[-2000:]
    yolo = np.loadtxt(tmp_path / "exp" / "labels" / "bus.txt", ndmin=2)
    assert 0 in yolo[:, 0] and set(yolo[:, 0]) <= {0, 5}  # people and the bus, nothing else at confidence 0.5
    r = detect_cli("--save-format", "1", "--nosave")
    assert r.returncode == 0, r.stderr[-2000:]
    voc = np.loadtxt(tmp_path / "exp2" / "labels" / "bus.txt", ndmin=2)
    h, w = cv2.imread(str(ROOT / "data" / "images" / "bus.jpg")).shape[:2]
    assert voc[:, 3].max() > 1  # pixels
    as_yolo = np.stack([voc[:, 0], (voc[:, 1] + voc[:, 3]) / 2 / w, (voc[:, 2] + voc[:, 4]) / 2 / h,
                        (voc[:, 3] - voc[:, 1]) / w, (voc[:, 4] - voc[:, 2]) / h, voc[:, 5]], 1)
    np.testing.assert_allclose(as_yolo, yolo, atol=2e-3)  # %g keeps 6 digits
    r = detect_cli("--save-format", "2")
    assert r.returncode == 2 and "ERROR: --save-format 2: valid are 0 (YOLO" in r.stderr


def test_detect_downloads_an_image_url(tmp_path):
    """An image URL as --source is downloaded into the working directory and detected, as official YOLOv5 does
    (it was opened as a stream and failed); a URL that cannot be fetched is one ERROR line naming it. The URL is
    served by an HTTP server this test starts on 127.0.0.1."""
    import functools
    import http.server
    import shutil
    import threading

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(ROOT / "data" / "images" / "bus.jpg", site / "bus.jpg")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    work = tmp_path / "work"
    work.mkdir()
    try:
        def detect_cli(source, name):
            return subprocess.run([sys.executable, str(ROOT / "detect.py"), "--weights",
                                   str(ROOT / "weights" / "yolov5n.pt"), "--img", "320", "--source", source,
                                   "--save-txt", "--save-conf", "--nosave", "--project", str(tmp_path),
                                   "--name", name, "--device", "cpu"],
                                  cwd=work, capture_output=True, text=True, timeout=300)

        r = detect_cli(f"{url}/bus.jpg?size=full", "url")
        assert r.returncode == 0, r.stderr[-2000:]
        assert (work / "bus.jpg").read_bytes() == (site / "bus.jpg").read_bytes()
        local = detect_cli(str(site / "bus.jpg"), "local")
        assert local.returncode == 0, local.stderr[-2000:]
        got = (tmp_path / "url" / "labels" / "bus.txt").read_text()
        assert got and got == (tmp_path / "local" / "labels" / "bus.txt").read_text()
        r = detect_cli(f"{url}/missing.jpg", "missing")
        assert r.returncode == 2 and "ERROR: --source " in r.stderr and "missing.jpg: cannot download" in r.stderr
        assert "Traceback" not in r.stderr and not (work / "missing.jpg").exists()
    finally:
        server.shutdown()
