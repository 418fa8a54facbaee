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
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.backends import weights_format
from models.ensemble import load_detector, weights_label
from models.tta import augmented_forward
from models.user_modules import import_module_files
from utils.checks import check_finite_outputs, check_img_size
from utils.cli import cli_errors
from utils.coco_eval import COCO80_TO_91
from utils.data.dataset import create_dataloader
from utils.deploy.runtimes import OV_PRECISIONS
from utils.errors import UserError
from utils.log import LOGGER, colorstr, setup_logging
from utils.metrics import IOU_THRESHOLDS, ConfusionMatrix
from utils.nms import non_max_suppression
from utils.paths import ROOT, increment_path
from utils.plots import plot_confusion_matrix, plot_val_study
from utils.torch_utils import select_device, time_sync
from utils.validation.options import ValOptions
from utils.validation.outputs import Outputs, coco_annotation_file, coco_eval
from utils.validation.image_stats import IMAGE_STATS, save_image_stats
from utils.validation.scoring import HEADER, ROW, Metrics, Times, ValResult, data_info, image_stats, summarize

__all__ = ["HEADER", "ROW", "Metrics", "Times", "ValOptions", "ValResult", "run"]

BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
STUDY_SIZES = range(256, 1536 + 128, 128)  # --task study: image sizes swept, as YOLOv5


@dataclass
class _Setup:
    """What one validation runs on: the model and loader, the data set's classes and split, where it writes, the
    size and batch it runs at, and the file a NaN output names (None in training)."""

    model: object
    dataloader: object
    data: object
    nc: int
    names: list[str]
    split: str
    save_dir: Path
    imgsz: int
    batch_size: int
    half: bool
    device: torch.device
    label: str | None = None


def _load(opt: ValOptions, device: torch.device, half: bool):
    """(model, checked image size, batch size, rect allowed): a .pt checkpoint or an exported model
    (models.backends.DetectBackend), or the ensemble of several (models.ensemble.Ensemble). A fixed-size export
    is validated at its own size (square only, as val.py letterboxes to --imgsz x --imgsz) and batch; a warning
    says where --imgsz or --batch-size disagree. --augment needs a model that takes any input size."""
    imgsz, batch_size = opt.imgsz, opt.batch_size
    ws = [w for w in (opt.weights if isinstance(opt.weights, (list, tuple)) else [opt.weights]) if w is not None]
    if not ws:
        raise UserError("val.py needs --weights (a checkpoint path, or a name in weights/ such as yolov5n.pt, or "
                        "an export: .torchscript, .onnx, *_openvino_model)")
    model = load_detector(ws, device=device, fp16=half, ov_precision=opt.ov_precision)
    w = weights_label(ws)
    if opt.augment and model.fixed_shape is not None:
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


def _standalone(opt: ValOptions) -> _Setup:
    """Load the weights and build the loader (rectangular batches where the model takes any size)."""
    batch_size = opt.batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be an integer >= 1")
    device = select_device(opt.device)
    half = opt.half and device.type == "cuda"  # fp16 only on CUDA; the CPU runs fp32
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    (save_dir / "labels" if opt.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    model, imgsz, batch_size, any_size = _load(opt, device, half)
    half = model.fp16  # .pt and TorchScript on CUDA; ONNX and OpenVINO take the dtype their graph declares
    data, nc, names = data_info(opt.data, opt.single_cls, model)
    ncm = model.nc
    if not opt.single_cls and ncm != nc:
        raise UserError(f"--weights {opt.weights} predict {ncm} classes but --data has nc={nc}; pass weights "
                         "trained on this dataset, or --single-cls")
    if len(getattr(model, "names", [])) == nc:
        names = list(model.names)
    split = opt.task if opt.task in ("train", "val", "test") else "val"
    # rectangular batches where the model takes any size; a fixed-size export gets square letterboxed batches
    pad, rect = (0.0, False) if opt.task == "speed" else (0.5, any_size)
    dataloader = create_dataloader(data.split(split), imgsz, batch_size, model.stride, opt.single_cls, pad=pad,
                                   rect=rect, workers=opt.workers, prefix=colorstr(f"{split}: "),
                                   nc=None if opt.single_cls else nc)[0]
    return _Setup(model, dataloader, data, nc, names, split, save_dir, imgsz, batch_size, half, device,
                  weights_label(opt.weights))


def _in_training(opt: ValOptions, model, dataloader, save_dir: Path) -> _Setup:
    """The model and loader a training hands over, used as they are."""
    device = next(model.parameters()).device
    half = opt.half and device.type != "cpu"
    model.half() if half else model.float()
    data, nc, names = data_info(opt.data, opt.single_cls, model)
    return _Setup(model, dataloader, data, nc, names, "val", Path(save_dir), opt.imgsz, opt.batch_size, half,
                  device)


@torch.no_grad()
def run(data=None, weights=None, *, model=None, dataloader=None, save_dir=Path(""), compute_loss=None, **options):
    """Validate; returns a ValResult, a 3-tuple that unpacks as YOLOv5's `results, maps, times = val.run(...)`:

        results  Metrics(mp, mr, map50, map, box, obj, cls), a 7-tuple: mean P and R, mAP50, mAP50-95 (with
                 `save_json`, pycocotools' mAP50 and mAP50-95, as YOLOv5), and the three validation losses
                 (0 without `compute_loss`); `results[:4]` and `(_, _, map50, map_, *_), _, _ = run(...)` work.
        maps     (nc,) mAP50-95 per class; classes without labels get the overall mAP50-95.
        times    Times(preprocess, inference, nms), milliseconds per image.

    `options` are ValOptions' fields (val.py's flags with underscores, e.g. batch_size=32, imgsz=640,
    conf_thres=0.001, iou_thres=0.6, task='val', save_json=False, half=True, augment=False, plots=True); an
    unknown name is a TypeError listing them. With `model` (training) that model and `dataloader` are used as
    they are, and `save_dir` is where plots go; otherwise `weights` (a .pt or an export: .torchscript, .onnx,
    *_openvino_model; several: their ensemble) are loaded and a loader is built for split `task` of `data`:
    rectangular batches, or square ones at the export's size for an export of fixed size. `augment`: test-time
    augmentation (models.tta); with `compute_loss` the plain forward runs, as YOLOv5.
    """
    opt = ValOptions.from_kwargs(dict(options, data=data, weights=weights))
    import_module_files(opt.modules)  # before any checkpoint is read
    training = model is not None
    if training:
        s = _in_training(opt, model, dataloader, save_dir)
    else:
        s = _standalone(opt)
        if not s.model.pt:
            compute_loss = None  # an export returns the decoded predictions only: no raw maps for a loss
    s.model.eval()
    out = Outputs(s.save_dir, opt, s.names, s.dataloader.dataset,
                  COCO80_TO_91 if s.nc == 80 and coco_annotation_file(s.data, s.split) else None)
    confusion_matrix = ConfusionMatrix(nc=s.nc)
    r = _loop(s, opt, compute_loss, confusion_matrix if opt.plots else None, out)
    by_class = opt.verbose or (s.nc < 50 and not training)
    mp, mr, map50, map_, maps = summarize(r.stats, s.nc, s.names, r.seen, s.save_dir if opt.plots else None, by_class)
    if opt.save_stats:
        save_image_stats(s.save_dir / IMAGE_STATS, r.stats, r.files)
    t = Times(*(x / max(r.seen, 1) * 1e3 for x in r.dt))  # ms per image
    if not training:
        shape = (s.batch_size, 3, s.imgsz, s.imgsz)
        LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {shape}" % t)
    if opt.plots:
        plot_confusion_matrix(confusion_matrix.matrix, s.save_dir / "confusion_matrix.png", s.names)
    if opt.save_json and out.jdict:
        coco = coco_eval(out, s.dataloader.dataset, s.data, opt.weights, s.split)
        LOGGER.info(f"pycocotools: mAP50 {coco[1]:.3f}, mAP50-95 {coco[0]:.3f}  "
                    f"(ours, 101-point interpolation: mAP50 {map50:.3f}, mAP50-95 {map_:.3f})")
        map_, map50 = coco  # returned as YOLOv5 returns them with --save-json
    s.model.float()
    if not training:
        n = len(list(s.save_dir.glob("labels/*.txt")))
        saved = f"\n{n} labels saved to {s.save_dir / 'labels'}" if opt.save_txt else ""
        LOGGER.info(f"Results saved to {colorstr('bold', str(s.save_dir))}{saved}")
    losses = (r.loss.cpu() / max(len(s.dataloader), 1)).tolist()
    return ValResult(Metrics(mp, mr, map50, map_, *losses), maps, t)


def _forward(model, im: torch.Tensor, augment: bool, compute_loss) -> tuple:
    """(decoded, raw maps or None): a DetectBackend / Ensemble does its own --augment; a training Model runs
    models.tta here. With a loss to compute, the plain forward (YOLOv5 ignores --augment then)."""
    if not augment or compute_loss:
        return model(im)
    if hasattr(model, "fixed_shape"):  # DetectBackend, Ensemble
        return model(im, augment=True)
    return augmented_forward(model, im, gs=int(model.stride.max()), nl=model.model[-1].nl), None


@dataclass
class _Pass:
    """One pass over the loader: per-image (correct, conf, cls, label cls) in loader order and those images' files,
    the images seen, seconds of [pre-processing, inference, NMS], and the summed validation losses."""

    stats: list
    files: list[str]
    seen: int
    dt: list[float]
    loss: torch.Tensor


def _loop(s: _Setup, opt: ValOptions, compute_loss, confusion_matrix, out: Outputs) -> _Pass:
    """Run the model over the loader. In a standalone run (`s.label` set), NaN or inf outputs raise an error
    naming that file."""
    device = s.device
    iouv = IOU_THRESHOLDS.to(device)
    seen, dt, loss, stats, files = 0, [0.0, 0.0, 0.0], torch.zeros(3, device=device), [], []
    if not sys.stderr.isatty():  # the bar (on stderr) carries the header; logs need it too
        LOGGER.info(HEADER)
    for batch_i, (im, targets, paths, shapes) in enumerate(tqdm(s.dataloader, desc=HEADER, bar_format=BAR_FORMAT)):
        t1 = time_sync()
        im = im.to(device, non_blocking=True)
        targets = targets.to(device)
        im = (im.half() if s.half else im.float()) / 255
        _, _, height, width = im.shape
        t2 = time_sync()
        preds, train_out = _forward(s.model, im, opt.augment, compute_loss)  # eval mode: (decoded, raw maps)
        if s.label is not None:
            check_finite_outputs(preds, s.label, f"batch {batch_i} ({paths[0]}, ...)")
        t3 = time_sync()
        if compute_loss:
            loss += compute_loss(train_out, targets)[1]
        targets[:, 2:] *= torch.tensor((width, height, width, height), device=device)  # to pixels
        preds = non_max_suppression(preds, opt.conf_thres, opt.iou_thres, multi_label=True,
                                    agnostic=opt.single_cls, max_det=opt.max_det,
                                    time_limit=None)  # no image may be dropped
        t4 = time_sync()
        dt = [dt[0] + t2 - t1, dt[1] + t3 - t2, dt[2] + t4 - t3]
        for si, pred in enumerate(preds):
            labels = targets[targets[:, 0] == si, 1:]
            seen += 1
            st, predn, labelsn = image_stats(pred, labels, im[si].shape[1:], shapes[si], iouv, opt.single_cls)
            stats.append(st)
            files.append(str(paths[si]))
            if confusion_matrix is not None:
                if len(pred):
                    confusion_matrix.process_batch(predn, labelsn if labelsn is not None else labels)  # labels: (0, 5)
                elif len(labels):
                    confusion_matrix.process_batch(None, labels[:, 0])
            out.image(Path(paths[si]), predn, shapes[si][0])
        out.batch(batch_i, im, targets, paths, preds)
    return _Pass(stats, files, seen, dt, loss)


def parse_opt(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    p.add_argument("--save-stats", action="store_true",
                   help="save each image's matched detections and labels (image_stats.npz) so that mAP can be "
                        "recomputed on resamples of the images (utils.validation.image_stats)")
    p.add_argument("--modules", nargs="+", metavar="FILE", help="your Python file(s) registering blocks the model uses")
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
