"""Validate a detector on a dataset split, as YOLOv5's val.py: P, R, mAP50, mAP50-95 overall and per class.

    python val.py --weights yolov5n.pt --data coco128.yaml --imgsz 640
    python val.py --weights runs/train/exp/weights/best.pt --data coco128.yaml --save-json --verbose
    python val.py --weights best.onnx | best.torchscript | best_openvino_model/ --data coco128.yaml
    python val.py --task speed|study ...
    python val.py --weights a.pt b.pt --data coco128.yaml      # an ensemble: both models' boxes, one NMS
    python val.py --weights yolov5n.pt --augment               # test-time augmentation (3 scales / flips)

--weights also takes the files export.py writes (models.backends.DetectBackend). Images are letterboxed into
rectangular batches (rect, pad 0.5) where the model takes any size (.pt, TorchScript, --dynamic ONNX and
OpenVINO), so a dynamic export is scored on exactly the inputs its .pt gets; an export of fixed size is scored at
its own size and batch, on square letterboxed batches. Exports give no loss (they output the decoded
predictions only), and --half applies to .pt and TorchScript on CUDA. Predictions are compared with the labels
in the original image's pixels at IoU 0.50:0.05:0.95. `--save-json` also scores the detections with pycocotools,
converting the YOLO labels to COCO ground truth when the dataset has no COCO annotation file.

Several --weights make YOLOv5's NMS ensemble (models.ensemble): every model's decoded boxes concatenated before
one NMS; the models must predict the same classes, and exports may take part. --augment is YOLOv5's test-time
augmentation (models.tta): scales 1, 0.83 (mirrored) and 0.67, de-scaled and concatenated before NMS; it needs
a model that takes any input size (a .pt or a --dynamic export). --task speed and study score each of several
--weights on its own, as YOLOv5.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from models.backends import weights_format
from models.ensemble import load_detector, weights_label
from models.tta import augmented_forward
from utils.boxes import scale_boxes, xywh2xyxy, xyxy2xywh
from utils.checks import check_finite_outputs, check_img_size
from utils.cli import cli_errors
from utils.coco_eval import COCO80_TO_91, coco_detections, coco_map, image_ids, yolo_to_coco_gt
from utils.data.config import DataConfig, load_data_config
from utils.data.dataset import create_dataloader
from utils.data.labels import save_one_txt
from utils.deploy.runtimes import OV_PRECISIONS
from utils.errors import UserError
from utils.log import LOGGER, colorstr, setup_logging
from utils.metrics import IOU_THRESHOLDS, ConfusionMatrix, match_predictions, pr_curves
from utils.nms import non_max_suppression
from utils.paths import ROOT, UniqueStems, increment_path
from utils.plots import plot_confusion_matrix, plot_images, plot_metric_curves, plot_val_study
from utils.torch_utils import select_device, time_sync

HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
ROW = "%22s" + "%11i" * 2 + "%11.3g" * 4
BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
STUDY_SIZES = range(256, 1536 + 128, 128)  # --task study: image sizes swept, as YOLOv5


class Metrics(NamedTuple):
    """The first item of run's result, YOLOv5's 7-tuple: mean precision and recall over the classes present (at
    the confidence of best mean F1), mAP50, mAP50-95, and the box, objectness and class losses averaged over the
    batches (0 without `compute_loss`)."""

    mp: float
    mr: float
    map50: float
    map: float
    box: float
    obj: float
    cls: float


class Times(NamedTuple):
    """Milliseconds per image: pre-processing, inference, NMS."""

    preprocess: float
    inference: float
    nms: float


class ValResult(NamedTuple):
    """What run returns; unpacks as YOLOv5's `results, maps, times = val.run(...)`."""

    results: Metrics
    maps: np.ndarray  # (nc,) mAP50-95 per class; classes without labels get the overall mAP50-95
    times: Times


def _data_info(data, single_cls: bool, model) -> tuple[object, int, list[str]]:
    """(DataConfig or None, nc, names) from a DataConfig, a data YAML path/name, a YOLOv5-style dict or None."""
    if isinstance(data, (str, Path)):
        data = load_data_config(data, single_cls=single_cls)
    if isinstance(data, DataConfig):
        nc, names = data.nc, list(data.names)
    elif isinstance(data, dict):
        names = data["names"]
        names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
        nc = int(data.get("nc", len(names)))
    else:
        names = list(getattr(model, "names", []))
        nc = len(names)
    if single_cls:
        nc, names = 1, names if len(names) == 1 else ["item"]
    return data, nc, names


def _load(weights, device, half: bool, imgsz: int, batch_size: int, augment: bool = False, ov_precision: str = "f32"):
    """(model, checked image size, batch size, rect allowed): a .pt checkpoint or an exported model
    (models.backends.DetectBackend), or the ensemble of several (models.ensemble.Ensemble). A fixed-size export
    is validated at its own size (square only, as val.py letterboxes to --imgsz x --imgsz) and batch; a warning
    says where --imgsz or --batch-size disagree. `augment` needs a model that takes any input size."""
    ws = [w for w in (weights if isinstance(weights, (list, tuple)) else [weights]) if w is not None]
    if not ws:
        raise UserError("val.py needs --weights (a checkpoint path, or a name in weights/ such as yolov5n.pt, or "
                        "an export: .torchscript, .onnx, *_openvino_model)")
    model = load_detector(ws, device=device, fp16=half, ov_precision=ov_precision)
    w = weights_label(ws)
    if augment and model.fixed_shape is not None:
        fh, fw = model.fixed_shape
        raise UserError(f"--augment runs the model on rescaled inputs, and {w} was exported for {fh}x{fw} images "
                        "only; use the .pt or an export made with --dynamic")
    if model.fixed_shape is not None:
        h, w_ = model.fixed_shape
        if h != w_:
            raise UserError(f"--weights {w} was exported for {h}x{w_} (h x w) images, and val.py letterboxes to "
                            "square --imgsz: export with a square --imgsz, or with --dynamic")
        if imgsz != h:
            LOGGER.warning(f"WARNING: --imgsz {imgsz} differs from the {h}x{h} that {w} was exported for; "
                           f"validating at {h} (export with --dynamic to validate at any size)")
        imgsz = h
    imgsz = check_img_size(imgsz, s=model.stride)
    if model.fixed_batch is not None and batch_size != model.fixed_batch:
        LOGGER.warning(f"WARNING: --batch-size {batch_size} differs from the batch {model.fixed_batch} that {w} was "
                       f"exported for; using {model.fixed_batch}")
        batch_size = model.fixed_batch
    if device.type != "cpu":  # warm-up, so the first batch's time is not a start-up time
        model.warmup((imgsz, imgsz))
    return model, imgsz, batch_size, model.fixed_shape is None


def _image_stats(pred, labels, im_shape, shape0, ratio_pad, iouv, single_cls):
    """One image: (correct (n, t), conf, cls, label classes) and the detections in original pixels.

    pred (n, 6) in letterboxed pixels; labels (m, 5) [cls, cx, cy, w, h] in letterboxed pixels.
    """
    if single_cls:
        pred[:, 5] = 0
    predn = pred.clone()
    scale_boxes(im_shape, predn[:, :4], shape0, ratio_pad)  # to the original image
    correct = torch.zeros(len(pred), len(iouv), dtype=torch.bool, device=pred.device)
    labelsn = None
    if len(labels):
        tbox = xywh2xyxy(labels[:, 1:5])
        scale_boxes(im_shape, tbox, shape0, ratio_pad)
        labelsn = torch.cat((labels[:, 0:1], tbox), 1)
        if len(pred):
            correct = match_predictions(predn, labelsn, iouv)
    return (correct, pred[:, 4], pred[:, 5], labels[:, 0]), predn, labelsn


def _summarize(stats, nc, names, seen, plots, save_dir, verbose, training):
    """Log the `all` row (and per-class rows); return (mp, mr, map50, map, maps (nc,))."""
    stats = [torch.cat(x, 0).cpu().numpy() for x in zip(*stats)] if stats else []
    mp = mr = map50 = map_ = 0.0
    ap_class, p, r, ap50, ap = np.zeros(0, int), [], [], [], np.zeros(0)
    if len(stats) and stats[0].any():
        curves = pr_curves(*stats)
        if plots:
            plot_metric_curves(curves, save_dir, names)
        _, _, p, r, _, ap, ap_class = curves.stats()
        ap50, ap = ap[:, 0], ap.mean(1)  # AP at IoU 0.5, AP at 0.5:0.95
        mp, mr, map50, map_ = p.mean(), r.mean(), ap50.mean(), ap.mean()
    nt = np.bincount(stats[3].astype(int), minlength=nc) if len(stats) else np.zeros(nc, int)
    LOGGER.info(ROW % ("all", seen, nt.sum(), mp, mr, map50, map_))
    if nt.sum() == 0:
        LOGGER.warning("WARNING: no labels found in the validation set; metrics need labels")
    if (verbose or (nc < 50 and not training)) and nc > 1 and len(stats):
        for i, c in enumerate(ap_class):
            LOGGER.info(ROW % (names[c], seen, nt[c], p[i], r[i], ap50[i], ap[i]))
    maps = np.zeros(nc) + map_
    for i, c in enumerate(ap_class):
        maps[c] = ap[i]
    return float(mp), float(mr), float(map50), float(map_), maps


def _coco_eval(jdict, dataset, data, weights, names, save_dir, split) -> tuple[float, float] | None:
    """Write the detections JSON and log pycocotools' mAP beside ours."""
    w = Path(weights[0] if isinstance(weights, (list, tuple)) else weights).stem if weights else "model"
    pred_json = save_dir / f"{w}_predictions.json"
    pred_json.write_text(json.dumps(jdict))
    anno = _coco_annotation_file(data, split)
    if anno is None:
        gt = yolo_to_coco_gt(dataset.im_files, dataset.labels, dataset.shapes, names)
        anno = save_dir / "instances_gt.json"
        anno.write_text(json.dumps(gt))
    LOGGER.info(f"\nEvaluating pycocotools mAP... saving {pred_json} (ground truth {anno})")
    return coco_map(anno, jdict, img_ids=sorted(image_ids(dataset.im_files).values()))


def _coco_annotation_file(data, split: str) -> Path | None:
    """annotations/instances_<folder>.json beside the images when the dataset ships COCO's own JSON."""
    entries = data.split(split) if hasattr(data, "split") else []
    for e in entries:
        f = Path(data.path) / "annotations" / f"instances_{Path(e).name}.json"
        if f.is_file():
            return f
    return None


def _standalone(data, weights, batch_size, imgsz, task, device, workers, single_cls, save_txt, project, name,
                exist_ok, half, augment=False, ov_precision="f32"):
    """Load the weights and build the loader (rectangular batches where the model takes any size):
    (model, dataloader, data, nc, names, split, save_dir, imgsz, batch_size, half, device)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be an integer >= 1")
    device = select_device(device)
    half &= device.type == "cuda"  # fp16 only on CUDA; the CPU runs fp32
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    model, imgsz, batch_size, any_size = _load(weights, device, half, imgsz, batch_size, augment, ov_precision)
    half = model.fp16  # .pt and TorchScript on CUDA; ONNX and OpenVINO take the dtype their graph declares
    data, nc, names = _data_info(data, single_cls, model)
    ncm = model.nc
    if not single_cls and ncm != nc:
        raise UserError(f"--weights {weights} predict {ncm} classes but --data has nc={nc}; pass weights "
                         "trained on this dataset, or --single-cls")
    if len(getattr(model, "names", [])) == nc:
        names = list(model.names)
    split = task if task in ("train", "val", "test") else "val"
    # rectangular batches where the model takes any size; a fixed-size export gets square letterboxed batches
    pad, rect = (0.0, False) if task == "speed" else (0.5, any_size)
    dataloader = create_dataloader(data.split(split), imgsz, batch_size, model.stride, single_cls, pad=pad,
                                   rect=rect, workers=workers, prefix=colorstr(f"{split}: "),
                                   nc=None if single_cls else nc)[0]
    return model, dataloader, data, nc, names, split, save_dir, imgsz, batch_size, half, device


@torch.no_grad()
def run(data=None, weights=None, batch_size=32, imgsz=640, conf_thres=0.001, iou_thres=0.6, max_det=300,
        task="val", device="", workers=8, single_cls=False, verbose=False, save_txt=False, save_conf=False,
        save_json=False, project=ROOT / "runs/val", name="exp", exist_ok=False, half=True, model=None,
        dataloader=None, save_dir=Path(""), plots=True, compute_loss=None, augment=False, ov_precision="f32"):
    """Validate; returns a ValResult, a 3-tuple that unpacks as YOLOv5's `results, maps, times = val.run(...)`:

        results  Metrics(mp, mr, map50, map, box, obj, cls), a 7-tuple: mean P and R, mAP50, mAP50-95 (with
                 `save_json`, pycocotools' mAP50 and mAP50-95, as YOLOv5), and the three validation losses
                 (0 without `compute_loss`); `results[:4]` and `(_, _, map50, map_, *_), _, _ = run(...)` work.
        maps     (nc,) mAP50-95 per class; classes without labels get the overall mAP50-95.
        times    Times(preprocess, inference, nms), milliseconds per image.

    With `model` (training) that model and `dataloader` are used as they are; otherwise `weights` (a .pt or an
    export: .torchscript, .onnx, *_openvino_model; several: their ensemble) are loaded and a loader is built for
    split `task` of `data`: rectangular batches, or square ones at the export's size for an export of fixed size.
    `augment`: test-time augmentation (models.tta); with `compute_loss` the plain forward runs, as YOLOv5.
    """
    training = model is not None
    if training:
        device = next(model.parameters()).device
        half &= device.type != "cpu"
        model.half() if half else model.float()
        data, nc, names = _data_info(data, single_cls, model)
        split = "val"
    else:
        model, dataloader, data, nc, names, split, save_dir, imgsz, batch_size, half, device = _standalone(
            data, weights, batch_size, imgsz, task, device, workers, single_cls, save_txt, project, name,
            exist_ok, half, augment, ov_precision)
        if not model.pt:
            compute_loss = None  # an export returns the decoded predictions only: no raw maps for a loss
    model.eval()
    out = _Outputs(Path(save_dir), save_txt, save_conf, save_json, plots, names, dataloader.dataset,
                   COCO80_TO_91 if nc == 80 and _coco_annotation_file(data, split) else None)
    confusion_matrix = ConfusionMatrix(nc=nc)
    w = None  # the weights a NaN output names
    if not training:
        w = weights_label(weights)
    stats, seen, dt, loss = _loop(model, dataloader, device, half, conf_thres, iou_thres, max_det, single_cls,
                                  compute_loss, confusion_matrix if plots else None, out, w, augment)
    mp, mr, map50, map_, maps = _summarize(stats, nc, names, seen, plots, out.save_dir, verbose, training)
    t = Times(*(x / max(seen, 1) * 1e3 for x in dt))  # ms per image
    if not training:
        shape = (batch_size, 3, imgsz, imgsz)
        LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {shape}" % t)
    if plots:
        plot_confusion_matrix(confusion_matrix.matrix, out.save_dir / "confusion_matrix.png", names)
    if save_json and out.jdict:
        coco = _coco_eval(out.jdict, dataloader.dataset, data, weights, names, out.save_dir, split)
        LOGGER.info(f"pycocotools: mAP50 {coco[1]:.3f}, mAP50-95 {coco[0]:.3f}  "
                    f"(ours, 101-point interpolation: mAP50 {map50:.3f}, mAP50-95 {map_:.3f})")
        map_, map50 = coco  # returned as YOLOv5 returns them with --save-json
    model.float()
    if not training:
        n = len(list(out.save_dir.glob("labels/*.txt")))
        s = f"\n{n} labels saved to {out.save_dir / 'labels'}" if save_txt else ""
        LOGGER.info(f"Results saved to {colorstr('bold', str(out.save_dir))}{s}")
    losses = (loss.cpu() / max(len(dataloader), 1)).tolist()
    return ValResult(Metrics(mp, mr, map50, map_, *losses), maps, t)


class _Outputs:
    """What is written per image: YOLO txt labels, COCO JSON rows, the first batches as mosaics."""

    def __init__(self, save_dir, save_txt, save_conf, save_json, plots, names, dataset, class_map):
        self.save_dir, self.save_txt, self.save_conf, self.save_json = save_dir, save_txt, save_conf, save_json
        self.plots, self.names, self.class_map, self.jdict = plots, names, class_map, []
        self.stem = UniqueStems()  # a/img.jpg and b/img.jpg: labels img.txt and img_1.txt
        self.ids = image_ids(getattr(dataset, "im_files", [])) if save_json else {}

    def image(self, path: Path, predn: torch.Tensor, shape0) -> None:
        if self.save_txt:
            save_one_txt(predn, self.save_conf, shape0, file=self.save_dir / "labels" / f"{self.stem(path)}.txt")
        if self.save_json:
            iid = self.ids[str(path)]
            self.jdict += coco_detections(predn, iid, self.class_map)

    def batch(self, batch_i: int, im, targets, paths, preds) -> None:
        if self.plots and batch_i < 3:
            plot_images(im, targets, paths, self.save_dir / f"val_batch{batch_i}_labels.jpg", self.names)
            plot_images(im, _to_targets(preds), paths, self.save_dir / f"val_batch{batch_i}_pred.jpg", self.names)


def _forward(model, im: torch.Tensor, augment: bool, compute_loss) -> tuple:
    """(decoded, raw maps or None): a DetectBackend / Ensemble does its own --augment; a training Model runs
    models.tta here. With a loss to compute, the plain forward (YOLOv5 ignores --augment then)."""
    if not augment or compute_loss:
        return model(im)
    if hasattr(model, "fixed_shape"):  # DetectBackend, Ensemble
        return model(im, augment=True)
    return augmented_forward(model, im, gs=int(model.stride.max()), nl=model.model[-1].nl), None


def _loop(model, dataloader, device, half, conf_thres, iou_thres, max_det, single_cls, compute_loss,
          confusion_matrix, out: _Outputs, weights=None, augment=False):
    """Run the model over the loader; returns (per-image stats, images seen, [pre, inference, NMS] s, loss).
    With `weights` (a standalone run), NaN or inf outputs raise an error naming that file."""
    iouv = IOU_THRESHOLDS.to(device)
    seen, dt, loss, stats = 0, [0.0, 0.0, 0.0], torch.zeros(3, device=device), []
    if not sys.stderr.isatty():  # the bar (on stderr) carries the header; logs need it too
        LOGGER.info(HEADER)
    for batch_i, (im, targets, paths, shapes) in enumerate(tqdm(dataloader, desc=HEADER, bar_format=BAR_FORMAT)):
        t1 = time_sync()
        im = im.to(device, non_blocking=True)
        targets = targets.to(device)
        im = (im.half() if half else im.float()) / 255
        _, _, height, width = im.shape
        t2 = time_sync()
        preds, train_out = _forward(model, im, augment, compute_loss)  # eval mode: (decoded, raw maps)
        if weights is not None:
            check_finite_outputs(preds, weights, f"batch {batch_i} ({paths[0]}, ...)")
        t3 = time_sync()
        if compute_loss:
            loss += compute_loss(train_out, targets)[1]
        targets[:, 2:] *= torch.tensor((width, height, width, height), device=device)  # to pixels
        preds = non_max_suppression(preds, conf_thres, iou_thres, multi_label=True, agnostic=single_cls,
                                    max_det=max_det, time_limit=None)  # no image may be dropped
        t4 = time_sync()
        dt = [dt[0] + t2 - t1, dt[1] + t3 - t2, dt[2] + t4 - t3]
        for si, pred in enumerate(preds):
            labels = targets[targets[:, 0] == si, 1:]
            seen += 1
            s, predn, labelsn = _image_stats(pred, labels, im[si].shape[1:], shapes[si][0], shapes[si][1], iouv,
                                             single_cls)
            stats.append(s)
            if confusion_matrix is not None:
                if len(pred):
                    confusion_matrix.process_batch(predn, labelsn if labelsn is not None else labels)  # labels: (0, 5)
                elif len(labels):
                    confusion_matrix.process_batch(None, labels[:, 0])
            out.image(Path(paths[si]), predn, shapes[si][0])
        out.batch(batch_i, im, targets, paths, preds)
    return stats, seen, dt, loss


def _to_targets(preds: list[torch.Tensor]) -> torch.Tensor:
    """NMS output -> (n, 7) [img_idx, cls, cx, cy, w, h, conf] in pixels, for plot_images."""
    rows = [torch.cat((torch.full_like(p[:, :1], i), p[:, 5:6], xyxy2xywh(p[:, :4]), p[:, 4:5]), 1)
            for i, p in enumerate(preds)]
    return torch.cat(rows, 0).cpu() if rows else torch.zeros(0, 7)


def parse_opt(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--data", type=str, default="coco128.yaml", help="dataset.yaml path (or a name in data/)")
    p.add_argument("--weights", nargs="+", type=str, default="yolov5n.pt",
                   help="model path(s); several make an ensemble")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    p.add_argument("--task", default="val", help="train, val, test, speed or study")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    p.add_argument("--verbose", action="store_true", help="report mAP by class")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-json", action="store_true", help="save a COCO-JSON results file")
    p.add_argument("--project", default=str(ROOT / "runs/val"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    p.add_argument("--ov-precision", default="f32", choices=OV_PRECISIONS,
                   help="what an OpenVINO model computes in: f32 (default, on every CPU), or bf16 / f16 where the "
                        "CPU has them")
    p.add_argument("--augment", action="store_true", help="augmented inference (TTA: 3 scales, one mirrored)")
    return p.parse_args(argv)


def _study(opt: argparse.Namespace, weights: list[str]) -> None:
    """mAP and speed against image size, 256 to 1536 in steps of 128, one txt and one plot per weights."""
    out = increment_path(Path(opt.project) / "study", exist_ok=opt.exist_ok, mkdir=True)
    for w in weights:
        rows = []
        for size in STUDY_SIZES:
            r, _, t = run(**{**vars(opt), "weights": w, "imgsz": size, "plots": False})
            rows.append([size, *r[:4], *t])
        f = out / f"study_{Path(opt.data).stem}_{Path(w).stem}.txt"
        np.savetxt(f, rows, fmt="%10.4g", header="imgsz P R mAP50 mAP50-95 pre_ms inference_ms nms_ms")
        plot_val_study(np.array(rows), f.with_suffix(".png"), label=Path(w).stem)
        LOGGER.info(f"Study saved to {f} and {f.with_suffix('.png')}")


def main(opt: argparse.Namespace) -> None:
    setup_logging()
    weights = opt.weights if isinstance(opt.weights, list) else [opt.weights]
    if opt.half and select_device(opt.device).type != "cuda":
        LOGGER.warning("WARNING: --half needs CUDA; validating in FP32")
    elif opt.half and any(weights_format(w) in ("onnx", "openvino") for w in weights):
        LOGGER.warning("WARNING: --half applies to .pt and TorchScript weights; ONNX and OpenVINO models run in "
                       "the precision they were exported in")
    if opt.task in ("train", "val", "test"):
        if opt.conf_thres > 0.001:
            LOGGER.info(f"WARNING: confidence threshold {opt.conf_thres} > 0.001 gives an mAP that is not "
                        "comparable with published values")
        run(**vars(opt))
    elif opt.task == "speed":
        for w in weights:
            run(**{**vars(opt), "weights": w, "conf_thres": 0.25, "iou_thres": 0.45, "save_json": False,
                   "plots": False})
    elif opt.task == "study":
        _study(opt, weights)
    else:
        raise UserError(f"--task {opt.task!r} is not one of train, val, test, speed, study")


def cli(argv: list[str] | None = None) -> None:
    """The command line: user errors end as one `ERROR: ...` line and exit status 2."""
    cli_errors(main)(parse_opt(argv))


if __name__ == "__main__":
    cli()
