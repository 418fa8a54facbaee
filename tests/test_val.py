"""val.py end to end on 5 COCO128 images at 320: the printed and returned metrics equal a recomputation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import val
from models import load_model
from utils.boxes import scale_boxes, xywhn2xyxy
from utils.coco_eval import coco_map
from utils.data.augment import letterbox
from utils.metrics import IOU_THRESHOLDS, ap_per_class, match_predictions
from utils.nms import non_max_suppression

from .conftest import VAL_STEMS as STEMS
from .conftest import LogCapture

ROOT = Path(__file__).resolve().parent.parent
IMGSZ = 320






def _rect_shape(h0: int, w0: int) -> tuple[int, int]:
    """YOLOv5's rectangular shape of a batch holding one image: ceil(ratio * imgsz / 32 + 0.5) * 32."""
    ar = h0 / w0
    rel = (ar, 1.0) if ar < 1 else (1.0, 1 / ar) if ar > 1 else (1.0, 1.0)
    return tuple(int(math.ceil(x * IMGSZ / 32 + 0.5)) * 32 for x in rel)


def _recompute() -> tuple[float, float, float, float]:
    """The same evaluation written out image by image: load, resize (INTER_AREA), letterbox into the image's
    rectangle, infer, NMS, map boxes back, match against the labels in original pixels."""
    model = load_model("yolov5n.pt", fuse=True)
    stats = []
    for s in STEMS:
        im0 = cv2.imread(str(ROOT / "data/coco128/images/train2017" / f"{s}.jpg"))
        h0, w0 = im0.shape[:2]
        r = IMGSZ / max(h0, w0)
        im = cv2.resize(im0, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=cv2.INTER_AREA)
        h, w = im.shape[:2]
        im, _, pad = letterbox(im, _rect_shape(h0, w0), auto=False, scaleup=False)
        x = torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
        with torch.no_grad():
            pred = non_max_suppression(model(x)[0], 0.001, 0.6, multi_label=True, max_det=300)[0]
        scale_boxes(x.shape[2:], pred[:, :4], (h0, w0), ((h / h0, w / w0), pad))
        lb = np.loadtxt(ROOT / "data/coco128/labels/train2017" / f"{s}.txt", ndmin=2, dtype=np.float32)
        labelsn = torch.tensor(np.concatenate((lb[:, :1], xywhn2xyxy(lb[:, 1:], w=w0, h=h0)), 1))
        stats.append((match_predictions(pred, labelsn, IOU_THRESHOLDS).numpy(), pred[:, 4].numpy(),
                      pred[:, 5].numpy(), lb[:, 0]))
    tp, conf, pcls, tcls = (np.concatenate(x, 0) for x in zip(*stats))
    _, _, p, r, _, ap, _ = ap_per_class(tp, conf, pcls, tcls)
    return p.mean(), r.mean(), ap[:, 0].mean(), ap.mean(1).mean()


def test_val_end_to_end(tiny_data, tmp_path):
    with LogCapture() as log:
        (mp, mr, map50, map_, *losses), maps, t = val.run(
            data=tiny_data, weights="yolov5n.pt", batch_size=1, imgsz=IMGSZ, workers=0, project=tmp_path,
            save_txt=True, save_conf=True, plots=True)
    want = _recompute()
    np.testing.assert_allclose((mp, mr, map50, map_), want, atol=1e-6)
    assert 0.2 < map50 <= 1  # a real operating point

    # the table: header and 'all' row with 5 images and 15 labels; no per-class rows (80 classes, not verbose)
    text = log.text
    assert val.HEADER in text
    rows = [line for line in text.splitlines() if line.startswith(" " * 10) and "Class" not in line]
    assert rows == [val.ROW % ("all", 5, 15, *want)]
    assert f"at shape (1, 3, {IMGSZ}, {IMGSZ})" in text and "ms pre-process" in text
    assert losses == [0.0, 0.0, 0.0] and len(t) == 3 and maps.shape == (80,)
    assert maps[4] == pytest.approx(want[3]) and maps[45] != pytest.approx(want[3])  # absent class: the mean

    out = tmp_path / "exp"
    for f in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png",
              "val_batch0_labels.jpg", "val_batch0_pred.jpg"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert sorted(p.stem for p in (out / "labels").glob("*.txt")) == STEMS
    lines = np.loadtxt(out / "labels" / f"{STEMS[0]}.txt", ndmin=2)
    assert lines.shape[1] == 6 and (lines[:, 1:5] >= 0).all() and (lines[:, 1:5] <= 1).all()


def test_val_save_json_and_verbose(tiny_data, tmp_path):
    """--save-json: COCO files written, pycocotools' mAP50-95 / mAP50 returned (as YOLOv5); --verbose rows."""
    with LogCapture() as log:
        (mp, mr, map50, map_, *_), _, _ = val.run(
            data=tiny_data, weights="yolov5n.pt", batch_size=5, imgsz=IMGSZ, workers=0, project=tmp_path,
            save_json=True, plots=False, verbose=True)
    out = tmp_path / "exp"
    gt = json.loads((out / "instances_gt.json").read_text())
    assert len(gt["images"]) == 5 and len(gt["annotations"]) == 15
    assert {im["id"] for im in gt["images"]} == {int(s) for s in STEMS}
    coco = coco_map(out / "instances_gt.json", out / "yolov5n_predictions.json", verbose=False)
    assert (map_, map50) == pytest.approx(coco, abs=1e-12)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in log.text
    assert f"pycocotools: mAP50 {coco[1]:.3f}, mAP50-95 {coco[0]:.3f}  (ours" in log.text
    # on 15 labels the step vs. linear reading of the PR envelope and maxDets=100 (vs 300) weigh more than on
    # COCO128 (see test_metrics): a sanity bound only
    assert coco[0] == pytest.approx(_recompute()[3], abs=0.06)
    classes = {line.split()[0] for line in log.text.splitlines() if line.startswith(" " * 10)
               and "Class" not in line}
    assert {"all", "person"} <= classes


def test_training_call_with_loss(tiny_data, tmp_path):
    """As train.py calls it: an unfused model, a given loader, compute_loss; same metrics, losses > 0."""
    from utils.data.dataset import create_dataloader
    from utils.hyp import Hyp
    from utils.training.loss import ComputeLoss

    model = load_model("yolov5n.pt")
    loader = create_dataloader(str(tiny_data.parent / "images"), IMGSZ, 5, 32, pad=0.5, rect=True, workers=0)[0]
    compute_loss = ComputeLoss(model, Hyp())
    with LogCapture():
        res = val.run(
            data=tiny_data, model=model, dataloader=loader, save_dir=tmp_path, plots=False,
            compute_loss=compute_loss, batch_size=5, imgsz=IMGSZ)
    (mp, mr, map50, map_, *losses), maps, _ = res
    assert len(losses) == 3 and all(v > 0 for v in losses)
    # the named result is YOLOv5's tuple: 3 items, the first 7, fields in the same order
    assert isinstance(res, tuple) and len(res) == 3 and len(res.results) == 7 and len(res.times) == 3
    assert res.results[:4] == (mp, mr, map50, map_) == (res.results.mp, res.results.mr, res.results.map50,
                                                         res.results.map)
    assert [res.results.box, res.results.obj, res.results.cls] == losses and res.maps is maps
    assert tuple(float(x) for x in res.results) == tuple(res.results)
    assert 0.2 < map50 <= 1 and maps.shape == (80,)
    assert next(model.parameters()).dtype == torch.float32


def test_cli_errors(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        val.cli(["--weights", str(tmp_path / "missing.pt"), "--data", str(tiny_data)])
    assert e.value.code == 2
    assert "ERROR: weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        val.cli(["--data", str(tmp_path / "nope.yaml"), "--project", str(tmp_path)])
    assert "ERROR: data file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        val.cli(["--task", "bogus", "--data", str(tiny_data)])
    assert "--task 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        val.cli(["--batch-size", "0", "--data", str(tiny_data), "--project", str(tmp_path / "bs0")])
    assert e.value.code == 2 and "ERROR: --batch-size 0: must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "bs0").exists()  # refused before any run folder


def test_speed_and_study_tasks(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(val, "STUDY_SIZES", (256, 320))
    opt = val.parse_opt(["--data", str(tiny_data), "--imgsz", "320", "--project", str(tmp_path), "--workers", "0",
                         "--batch-size", "5"])
    with LogCapture() as log:
        opt.task = "speed"
        val.main(opt)
        opt.task = "study"
        val.main(opt)
    assert "Speed:" in log.text
    study = np.loadtxt(tmp_path / "study" / "study_tiny_yolov5n.txt", ndmin=2)
    assert study[:, 0].tolist() == [256, 320] and study.shape[1] == 8
    assert (tmp_path / "study" / "study_tiny_yolov5n.png").is_file()


def test_main_called_from_python_raises_instead_of_exiting(tiny_data, tmp_path):
    from utils.errors import UserError

    with pytest.raises(UserError, match="--task 'bogus'"):
        val.main(val.parse_opt(["--task", "bogus", "--data", str(tiny_data)]))
    with pytest.raises(FileNotFoundError):
        val.main(val.parse_opt(["--weights", str(tmp_path / "missing.pt"), "--data", str(tiny_data)]))


def test_internal_errors_keep_their_traceback():
    from utils.cli import cli_errors

    def buggy(_):
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):  # not turned into an ERROR line
        cli_errors(buggy)(None)


def test_parser_flags_and_official_prefixes(capsys):
    """--augment and several --weights parse; official YOLOv5's prefixes (--conf, --iou, --batch) mean the options
    they begin; an unknown flag is an error."""
    opt = val.parse_opt(["--augment", "--weights", "a.pt", "b.pt"])
    assert opt.augment and opt.weights == ["a.pt", "b.pt"]
    assert not val.parse_opt([]).augment
    opt = val.parse_opt(["--conf", "0.5", "--iou", "0.7", "--batch", "4", "--aug"])
    assert (opt.conf_thres, opt.iou_thres, opt.batch_size, opt.augment) == (0.5, 0.7, 4, True)
    with pytest.raises(SystemExit) as e:
        val.parse_opt(["--confidence", "0.5"])
    assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_flags_are_the_options_and_unknown_keywords_are_refused():
    """val.py's flags are ValOptions' fields (plots alone is not a flag); val.run refuses an unknown keyword by
    name, listing the valid ones, before any work."""
    from dataclasses import fields

    assert set(vars(val.parse_opt([]))) == {f.name for f in fields(val.ValOptions)} - {"plots"}
    with pytest.raises(TypeError, match=r"val.run\(\) got an unknown option 'conf'; options: \[.*'conf_thres'"):
        val.run(data="coco128.yaml", weights="yolov5n.pt", conf=0.5)


def test_saved_image_stats_give_vals_map_and_resample_it(tiny_data, tmp_path):
    """val.py --save-stats keeps each image's matches: recomputed over every image they give val's mAP50 and
    mAP50-95 exactly; the weighted resampling gives them on the identity resample and, for a subset of the
    images, what ap_per_class gives on that subset's detections."""
    from utils.validation.image_stats import IMAGE_STATS, load_image_stats

    val.cli(["--data", str(tiny_data), "--weights", "yolov5n.pt", "--imgsz", str(IMGSZ), "--batch-size", "2",
             "--workers", "0", "--project", str(tmp_path), "--save-stats"])
    s = load_image_stats(tmp_path / "exp" / IMAGE_STATS)
    (_, _, map50, map_, *_), _, _ = val.run(data=tiny_data, weights="yolov5n.pt", batch_size=2, imgsz=IMGSZ,
                                            workers=0, project=tmp_path, plots=False)
    assert s.n_images == 5 and sorted(Path(f).stem for f in s.files) == STEMS and len(s.tcls) == 15
    assert s.map() == (map50, map_)
    np.testing.assert_allclose(s.resampled_maps(np.ones((1, 5))), [[map50, map_]], rtol=0, atol=1e-12)
    keep = np.array([1, 0, 1, 1, 0])
    sub = np.isin(s.pimg, np.flatnonzero(keep))
    ap = ap_per_class(s.correct[sub], s.conf[sub], s.pcls[sub], s.tcls[np.isin(s.timg, np.flatnonzero(keep))]).ap
    np.testing.assert_allclose(s.resampled_maps(keep[None]), [[ap[:, 0].mean(), ap.mean()]], rtol=0, atol=1e-12)
    assert s.resampled_maps(np.zeros((1, 5))).tolist() == [[0.0, 0.0]]  # nothing drawn: no class present
    shuffled = s.reordered(list(reversed(s.files)))
    np.testing.assert_allclose(shuffled.resampled_maps(keep[::-1][None]), s.resampled_maps(keep[None]), atol=1e-12)
