"""Run a detector on images, folders, globs, .txt lists, videos, webcams and streams, as YOLOv5's detect.py.

    python detect.py --weights yolov5n.pt --source data/images          # a folder
    python detect.py --source img.jpg | 'photos/*.jpg' | list.txt | clip.mp4 | 0 | rtsp://host/stream
    python detect.py --weights best.onnx | best.torchscript | best_openvino_model/   # export.py's files
    python detect.py --weights a.pt b.pt          # an ensemble (models.ensemble): both models' boxes, one NMS
    python detect.py --augment --save-csv --view-img --visualize

An export of fixed size (no --dynamic) runs at the size it was exported for, images letterboxed to it exactly;
.pt, TorchScript and --dynamic exports letterbox to the smallest stride multiple, as YOLOv5.

Annotated images and videos (same size and frame rate as the input) go to runs/detect/exp, exp2, ...;
--save-txt writes YOLO labels per image (`<stem>.txt`) or per video frame (`<stem>_<frame>.txt`), afresh each
run. Sources that share a name (a/img.jpg, b/img.jpg) get distinct outputs: img.jpg, then img_1.jpg (and .txt).
An image that cannot be read, resized or drawn is skipped with a warning naming it; the run goes on.

--augment is YOLOv5's test-time augmentation (models.tta; a .pt or an export that takes any size). --save-csv
writes predictions.csv (Image Name, Prediction, Confidence; one row per box, least confident first per image, as
YOLOv5; afresh each run). --view-img shows each drawn image (cv2.imshow); without a display it warns once and
goes on. --visualize saves YOLOv5's feature-map figures: for each image (video frame: <stem>_<frame>) a folder
<run>/<stem> with stage<i>_<type>_features.png (the first 32 channels of layer i's output) and .npy (the whole
map) per layer; it hooks the layers of a .pt model, so exports and ensembles cannot be visualized.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from models.attention.routing import bra_layers, visualize_routing
from models.backends import weights_format
from models.ensemble import load_detector, weights_label
from models.user_modules import import_module_files
from utils.boxes import scale_boxes
from utils.checks import check_finite_outputs, check_img_size
from utils.cli import cli_errors
from utils.data.config import data_names
from utils.data.images import IMG_FORMATS
from utils.data.inputs import fetch_url_source
from utils.data.sources import LoadImages, LoadStreams, cv2_reason, is_stream_source
from utils.deploy.runtimes import OV_PRECISIONS
from utils.detection.features import FeatureMaps
from utils.detection.options import DetectOptions
from utils.detection.outputs import ImageOutputs
from utils.detection.progress import describe
from utils.errors import UserError
from utils.heatmaps import photo_heatmap
from utils.log import LOGGER, colorstr, setup_logging
from utils.nms import non_max_suppression
from utils.paths import ROOT, increment_path
from utils.plots import Annotator, colors
from utils.torch_utils import select_device, time_sync

MAX_STREAM_RECORDS = 10_000  # frames of a webcam / stream whose detections run() returns


@dataclass
class ImageDetections:
    """One image or frame: its source path, frame number (0 for images) and boxes (n, 6) [x1, y1, x2, y2, conf,
    cls] in the original image's pixels."""

    path: str
    frame: int
    boxes: np.ndarray


class _Source(NamedTuple):
    """The images or streams to read, and whether they are streams (a webcam, a URL, a .streams file)."""

    dataset: LoadImages | LoadStreams
    webcam: bool


def _load_model(w, device, half: bool, imgsz, ov_precision: str = "f32"):
    """(model, stride, imgsz (h, w)) of `w`: a .pt checkpoint, whose weights must be finite, or an export
    (models.backends.DetectBackend); a list of several: their ensemble (models.ensemble.Ensemble). An export of
    fixed size runs at its own size; a warning says when --imgsz differs."""
    model = load_detector(w, device=device, fp16=half, ov_precision=ov_precision)
    w = weights_label(w)
    stride = model.stride
    imgsz = list(imgsz) * (2 if len(imgsz) == 1 else 1)
    if model.fixed_shape is not None and tuple(imgsz) != tuple(model.fixed_shape):
        fh, fw = model.fixed_shape
        LOGGER.warning(f"WARNING: --imgsz {' '.join(map(str, imgsz))} differs from the {fh}x{fw} (h x w) that {w} "
                       f"was exported for; running at {fh}x{fw} (export with --dynamic to run at any size)")
        imgsz = list(model.fixed_shape)
    imgsz = check_img_size(imgsz, s=stride)
    if device.type != "cpu":  # warm-up
        model.warmup(tuple(imgsz))
    return model, stride, tuple(imgsz)


def _dataset(source: str, imgsz, stride: int, vid_stride: int, auto: bool = True) -> _Source:
    """The images or streams of `source`; `auto` letterboxes to the smallest stride multiple (rectangular), else
    to imgsz exactly (square), as an export of fixed size needs."""
    if is_stream_source(source):
        return _Source(LoadStreams(source, img_size=imgsz, stride=stride, auto=auto, vid_stride=vid_stride), True)
    return _Source(LoadImages(source, img_size=imgsz, stride=stride, auto=auto, vid_stride=vid_stride), False)


@dataclass
class _Infer:
    """The model on one batch, then NMS (`nms_kw`); NaN or inf outputs raise an error naming `weights`.
    `augment`: test-time augmentation (models.tta)."""

    model: Any
    device: torch.device
    half: bool
    nms_kw: dict
    weights: str
    augment: bool = False

    def __call__(self, im: np.ndarray, path):
        """(input batch (B, 3, H, W), per-image detections in input pixels, [pre, inference, NMS] seconds)."""
        t1 = time_sync()
        x = torch.from_numpy(im).to(self.device)
        x = (x.half() if self.half else x.float()) / 255
        x = x[None] if x.ndim == 3 else x
        t2 = time_sync()
        pred = self.model(x, augment=self.augment)[0]
        check_finite_outputs(pred, self.weights, path)
        t3 = time_sync()
        pred = non_max_suppression(pred, **self.nms_kw)
        return x, pred, [t2 - t1, t3 - t2, time_sync() - t3]


def _one_image(out: ImageOutputs, src: _Source, batch: tuple, i: int, det: torch.Tensor, x: torch.Tensor,
               ms: float) -> ImageDetections:
    """Map image i of `batch` (path, im, im0s, vid_cap, s) to its original pixels, draw and save its detections,
    log or advance the video bar."""
    path, _, im0s, vid_cap, s = batch
    dataset = src.dataset
    if src.webcam:
        p, im0, frame, line = Path(path[i]), im0s[i].copy(), dataset.frame, f"{i}: "
    else:
        p, im0, frame, line = Path(path), im0s.copy(), getattr(dataset, "frame", 0), s
    video, stem = dataset.mode != "image", out.stem(p)
    det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], im0.shape).round()
    txt = out.save_dir / "labels" / (stem + (f"_{frame}" if video else "") + ".txt")
    im0 = out.annotate(det, im0, stem, txt, p.name)
    out.viewer.show(str(p), im0)
    dst = out.save_dir / (stem + p.suffix)
    if out.save_img and video:
        out.sinks.write(dst, im0, vid_cap.get(cv2.CAP_PROP_FPS) if vid_cap else dataset.fps[i])
    elif out.save_img and not cv2.imwrite(str(dst), im0):
        LOGGER.warning(f"WARNING: {p}: could not write {dst}")
    if dataset.mode == "video":
        out.bar.update(str(p), dataset.frames, s, det, ms)
    else:
        LOGGER.info(f"{line}{'%gx%g ' % x.shape[2:]}{describe(det, out.names) or '(no detections), '}{ms:.1f}ms")
    return ImageDetections(str(p), frame if video else 0, det.cpu().numpy())


def _detect_all(infer: _Infer, src: _Source, out: ImageOutputs, features: FeatureMaps | None):
    """Every image / frame of `src` through the model into `out`; returns (detections, for streams of the first
    MAX_STREAM_RECORDS frames; images seen; [pre, inference, NMS] seconds summed). Closes the outputs, the hooks
    and a stream source, however it ends."""
    dataset, webcam = src
    records, seen, dt = [], 0, [0.0, 0.0, 0.0]
    try:
        for batch in dataset:
            path, im = batch[:2]
            if features is not None:  # the batch's first image: <run>/<stem>, or <stem>_<frame> of a video
                video = dataset.mode != "image"
                stem = out.stem(Path(path[0] if webcam else path))
                features.target(out.save_dir / (stem + (f"_{dataset.frame}" if video else "")))
            x, pred, times = infer(im, path)
            dt = [a + b for a, b in zip(dt, times)]
            for i, det in enumerate(pred):
                seen += 1
                try:
                    r = _one_image(out, src, batch, i, det, x, times[1] * 1e3)
                except cv2.error as e:  # OpenCV could not draw on or write this one: skip it, the run goes on
                    LOGGER.warning(f"WARNING: skipping {path[i] if webcam else path}: {cv2_reason(e)}")
                    continue
                if not webcam or len(records) < MAX_STREAM_RECORDS:  # a stream may run for hours
                    records.append(r)
    finally:
        out.close()
        if features is not None:
            features.close()
        if webcam:
            dataset.close()
    return records, seen, dt


def run(**kwargs) -> tuple[Path, list[ImageDetections]]:
    """Detect with the options of utils.detection.options.DetectOptions, each a keyword here with its default
    (help(DetectOptions) says what each does), as the command line would: `detect.run(source='img.jpg',
    imgsz=320)`; an unknown keyword raises a TypeError listing them. Returns (run folder, detections of every
    image / frame in original pixels; for streams the first MAX_STREAM_RECORDS frames). `visualize_routing` also
    draws, for models with BiLevelRoutingAttention, the regions each of the most confident detections routes to,
    into <run folder>/routing (a .pt checkpoint only: exports do not expose the attention). `weights` is a .pt or
    an export (.torchscript, .onnx, *_openvino_model), or a list of several: their ensemble; an export of fixed
    size runs at its own size. `augment`: test-time augmentation; `visualize`: feature-map figures per image (one
    .pt only); `view_img`: show each drawn image; `save_csv`: <run folder>/predictions.csv (see the module's
    docstring)."""
    return _detect(DetectOptions.from_kwargs(kwargs, "detect.run"))


run.__signature__ = DetectOptions.signature(return_annotation="tuple[Path, list[ImageDetections]]")


def _names(data, names: list[str]) -> list[str]:
    """--data's class names in place of the model's own; a count that differs is a UserError naming both."""
    if not data:
        return names
    given = data_names(data)
    if len(given) != len(names):
        raise UserError(f"--data {data}: {len(given)} class names, but the model has {len(names)} classes")
    return given


def _warn_classes(classes, names) -> None:
    """A warning naming the --classes the model does not have (they would filter every detection away)."""
    outside = sorted({int(c) for c in (classes or []) if not 0 <= int(c) < len(names)})
    if outside:
        LOGGER.warning(f"WARNING: --classes {' '.join(map(str, outside))}: the model has {len(names)} classes "
                       f"(0..{len(names) - 1}); {'this class is' if len(outside) == 1 else 'these are'} never "
                       "detected")


@torch.no_grad()
def _detect(opt: DetectOptions) -> tuple[Path, list[ImageDetections]]:
    """detect.run with its options built."""
    source = str(opt.source)
    device = select_device(opt.device)
    half = opt.half
    if half and device.type != "cuda":
        LOGGER.warning(f"WARNING: --half needs CUDA; running in FP32 on {device.type}")
        half = False
    opt.check()
    import_module_files(opt.modules)  # before any checkpoint is read
    ws = opt.weights_list
    fmts = [weights_format(x) for x in ws]
    if half and any(f in ("onnx", "openvino") for f in fmts):
        fmt = next(f for f in fmts if f in ("onnx", "openvino"))
        LOGGER.warning(f"WARNING: --half applies to .pt and TorchScript weights; the {fmt} model runs in the "
                       "precision it was exported in")
    imgsz = [opt.imgsz] if isinstance(opt.imgsz, int) else list(opt.imgsz)
    model, stride, imgsz = _load_model(ws[0] if len(ws) == 1 else ws, device, half, imgsz, opt.ov_precision)
    if opt.augment and model.fixed_shape is not None:
        fh, fw = model.fixed_shape
        raise UserError(f"--augment runs the model on rescaled inputs, and {' '.join(map(str, ws))} was exported "
                        f"for {fh}x{fw} images only; use the .pt or an export made with --dynamic")
    names = _names(opt.data, list(model.names))
    _warn_classes(opt.classes, names)
    src = _dataset(fetch_url_source(source), imgsz, stride, opt.vid_stride, auto=model.fixed_shape is None)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    (save_dir / "labels" if opt.save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    out = ImageOutputs(opt, save_dir, names)
    features = FeatureMaps(model.model) if opt.visualize else None
    nms_kw = dict(conf_thres=opt.conf_thres, iou_thres=opt.iou_thres, classes=opt.classes, agnostic=opt.agnostic_nms,
                  max_det=opt.max_det)
    infer = _Infer(model, device, model.fp16, nms_kw, " + ".join(map(str, ws)), opt.augment)  # ws: what NaN names
    records, seen, dt = _detect_all(infer, src, out, features)
    _report(seen, dt, imgsz, len(src.dataset) if src.webcam else 1, save_dir, opt.save_txt,
            out.save_img or opt.save_crop)
    if out.csv_path is not None:
        LOGGER.info(f"Predictions saved to {colorstr('bold', str(out.csv_path))}")
    if features is not None:
        LOGGER.info(f"Feature maps: {features.saved} figures saved to {colorstr('bold', str(save_dir))}/<image>/")
    if opt.visualize_routing:
        _draw_routing(model.model, records, save_dir / "routing", max(imgsz), opt.conf_thres, opt.iou_thres)
    if opt.heatmap:
        _draw_heatmaps(model.model, records, save_dir / "heatmaps", max(imgsz), opt.heatmap, out.names)
    return save_dir, records


def _draw_heatmaps(model, records: list[ImageDetections], save_dir: Path, imgsz: int, method: str, names) -> None:
    """Each still image's heatmap (utils.heatmaps; Grad-CAM explains the classes detected there) with its boxes."""
    images = [r for r in records if Path(r.path).suffix.lower().lstrip(".") in IMG_FORMATS]
    if not images:
        LOGGER.warning("WARNING: --heatmap draws on still images only; this source had none")
        return
    save_dir.mkdir(parents=True, exist_ok=True)
    model = model.float()
    for r in images:
        photo = cv2.imread(str(r.path))
        im = photo_heatmap(model, photo, imgsz, method, classes=[int(c) for *_, c in r.boxes] or None)
        annotator = Annotator(im, line_width=2)
        for *xyxy, conf, c in r.boxes:
            annotator.box_label(xyxy, f"{names[int(c)]} {conf:.2f}", color=colors(int(c), True))
        cv2.imwrite(str(save_dir / Path(r.path).name), annotator.result())
    LOGGER.info(f"Heatmaps ({method}): {len(images)} saved to {colorstr('bold', str(save_dir))}")


def _draw_routing(model, records: list[ImageDetections], save_dir: Path, imgsz: int, conf_thres: float,
                  iou_thres: float) -> None:
    """The routing figure for the still images of this run (video frames are skipped)."""
    if not bra_layers(model):
        LOGGER.warning("WARNING: --visualize-routing needs a model with BiLevelRoutingAttention; nothing drawn")
        return
    images = sorted({r.path for r in records if Path(r.path).suffix.lower().lstrip(".") in IMG_FORMATS})
    if not images:
        LOGGER.warning("WARNING: --visualize-routing draws on still images only; this source had none")
        return
    paths = visualize_routing(model.float(), images, save_dir, imgsz=imgsz, conf_thres=conf_thres,
                              iou_thres=iou_thres)
    LOGGER.info(f"Routing figures: {len(paths)} saved to {colorstr('bold', str(save_dir))}")


def _report(seen, dt, imgsz, bs, save_dir: Path, save_txt: bool, saved: bool) -> None:
    t = tuple(x / max(seen, 1) * 1e3 for x in dt)
    LOGGER.info(f"Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape {(bs, 3, *imgsz)}" % t)
    if save_txt or saved:
        n = len(list(save_dir.glob("labels/*.txt")))
        s = f"\n{n} labels saved to {save_dir / 'labels'}" if save_txt else ""
        LOGGER.info(f"Results saved to {colorstr('bold', str(save_dir))}{s}")


def parse_opt(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", nargs="+", type=str, default="yolov5n.pt",
                   help="model path(s): .pt, .torchscript, .onnx or *_openvino_model; several make an ensemble")
    p.add_argument("--source", type=str, default=str(ROOT / "data/images"),
                   help="file/dir/glob/.txt list/video, 0 for webcam, or a stream URL")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="inference size h,w")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-format", type=int, default=0,
                   help="--save-txt boxes: 0 YOLO (cls cx cy w h, normalized), 1 Pascal-VOC (cls x1 y1 x2 y2, pixels)")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--project", default=str(ROOT / "runs/detect"), help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    p.add_argument("--hide-labels", default=False, action="store_true", help="hide labels")
    p.add_argument("--hide-conf", default=False, action="store_true", help="hide confidences")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    p.add_argument("--ov-precision", default="f32", choices=OV_PRECISIONS,
                   help="what an OpenVINO model computes in: f32 (default, on every CPU), or bf16 / f16 where the "
                        "CPU has them")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    p.add_argument("--visualize-routing", action="store_true",
                   help="draw where BiLevelRoutingAttention routes the most confident detections")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-csv", action="store_true", help="save results in CSV format")
    p.add_argument("--augment", action="store_true", help="augmented inference (TTA: 3 scales, one mirrored)")
    p.add_argument("--visualize", action="store_true", help="visualize features (.pt only)")
    p.add_argument("--modules", nargs="+", metavar="FILE", help="your Python file(s) registering blocks the model uses")
    p.add_argument("--data", type=str, default=None, help="(optional) dataset.yaml whose class names label the boxes")
    p.add_argument("--heatmap", choices=("eigencam", "gradcam"), help="where the model looks: <run>/heatmaps/ (.pt)")
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> None:
    setup_logging()
    _detect(DetectOptions.from_namespace(opt))


def cli(argv: list[str] | None = None) -> None:
    """The command line: user errors end as one `ERROR: ...` line and exit status 2."""
    cli_errors(main)(parse_opt(argv))


if __name__ == "__main__":
    cli()
