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
import csv
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from models.attention.routing import bra_layers, visualize_routing
from models.backends import weights_format
from models.ensemble import load_detector, weights_label
from utils.boxes import scale_boxes
from utils.checks import check_finite_outputs, check_img_size
from utils.cli import cli_errors
from utils.data.images import IMG_FORMATS
from utils.data.labels import save_one_txt
from utils.data.sources import LoadImages, LoadStreams, cv2_reason, is_stream_source
from utils.deploy.runtimes import OV_PRECISIONS
from utils.errors import UserError
from utils.log import LOGGER, colorstr, setup_logging
from utils.nms import non_max_suppression
from utils.paths import ROOT, UniqueStems, increment_path, safe_name
from utils.plots import Annotator, check_line_width, colors, feature_visualization, save_one_box
from utils.torch_utils import select_device, time_sync

MAX_STREAM_RECORDS = 10_000  # frames of a webcam / stream whose detections run() returns
CSV_HEADER = ("Image Name", "Prediction", "Confidence")  # --save-csv columns, as YOLOv5


@dataclass
class Detections:
    """One image or frame: its source path, frame number (0 for images) and boxes (n, 6) [x1, y1, x2, y2, conf,
    cls] in the original image's pixels."""

    path: str
    frame: int
    boxes: np.ndarray


@dataclass
class _Options:
    """What is drawn and written for each image."""

    save_dir: Path
    names: list[str]
    save_img: bool = True
    save_txt: bool = False
    save_conf: bool = False
    save_crop: bool = False
    line_thickness: int = 3
    hide_labels: bool = False
    hide_conf: bool = False
    stem: UniqueStems = field(default_factory=UniqueStems)  # source path -> its output stem, unique in the run
    view_img: bool = False
    csv_path: Path | None = None  # --save-csv: predictions.csv, its header written
    viewer: _Viewer = field(default_factory=lambda: _Viewer(False))


def describe(det: torch.Tensor, names: list[str]) -> str:
    """'4 persons, 1 bus, ' for detections (n, 6), classes in increasing order."""
    s = ""
    for c in det[:, 5].unique():
        n = int((det[:, 5] == c).sum())
        s += f"{n} {names[int(c)]}{'s' * (n > 1)}, "
    return s


def _annotate(det: torch.Tensor, im0: np.ndarray, stem: str, txt_path: Path, o: _Options,
              image_name: str) -> np.ndarray:
    """Draw `det` (original pixels) on im0 and write its txt lines, CSV rows and crops; returns the drawn image."""
    imc = im0.copy() if o.save_crop else im0
    annotator = Annotator(im0, line_width=o.line_thickness)
    if o.save_txt and len(det):
        save_one_txt(det.flip(0), o.save_conf, im0.shape[:2], txt_path)  # least confident first, as YOLOv5
    elif o.save_txt:
        txt_path.unlink(missing_ok=True)  # no detections now: an earlier run's file (--exist-ok) must not stay
    rows = []
    for *xyxy, conf, cls in reversed(det.tolist()):
        c = int(cls)
        rows.append((image_name, o.names[c], f"{conf:.2f}"))
        if o.save_img or o.view_img:
            label = None if o.hide_labels else (o.names[c] if o.hide_conf else f"{o.names[c]} {conf:.2f}")
            annotator.box_label(xyxy, label, color=colors(c, bgr=True))
        if o.save_crop:
            save_one_box(xyxy, imc, file=o.save_dir / "crops" / safe_name(o.names[c]) / f"{stem}.jpg")
    if o.csv_path is not None and rows:
        with open(o.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
    return annotator.result()


def _no_display() -> str | None:
    """Why no window can be opened here, or None where one may be (OpenCV still has the last word)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display: neither DISPLAY nor WAYLAND_DISPLAY is set"
    return None


class _Viewer:
    """--view-img: each drawn image in a window named by its source (cv2.imshow, a 1 ms wait), as YOLOv5. Where
    no window can be opened (no display, an OpenCV without GUI) one warning says why and the run goes on."""

    def __init__(self, enabled: bool):
        self.enabled, self.windows = enabled, []

    def show(self, name: str, im: np.ndarray) -> None:
        if not self.enabled:
            return
        reason = _no_display()
        if reason is None:
            try:
                if name not in self.windows:
                    if sys.platform.startswith("linux"):  # a resizable window at the image's size, as YOLOv5
                        cv2.namedWindow(name, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
                        cv2.resizeWindow(name, im.shape[1], im.shape[0])
                    self.windows.append(name)
                cv2.imshow(name, im)
                cv2.waitKey(1)
                return
            except cv2.error as e:
                reason = cv2_reason(e)
        LOGGER.warning(f"WARNING: --view-img: cannot show images ({reason}); going on without showing them")
        self.enabled = False

    def close(self) -> None:
        if self.windows:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
            self.windows.clear()


class _FeatureMaps:
    """--visualize: a forward hook on every layer of a .pt Model saves its output as YOLOv5's feature-map figure
    (utils.plots.feature_visualization) into the folder set by `target`, once per layer and target: of a --augment
    forward only the first pass (scale 1, not flipped) is drawn."""

    def __init__(self, model: torch.nn.Module):
        self.folder: Path | None = None
        self.done: set[int] = set()
        self.saved = 0
        self.handles = [layer.register_forward_hook(self._hook) for layer in model.model]

    def target(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.done = folder, set()

    def _hook(self, module, inputs, output) -> None:
        i = getattr(module, "i", None)
        if self.folder is None or i in self.done:
            return
        self.done.add(i)
        if feature_visualization(output, getattr(module, "type", type(module).__name__), i, save_dir=self.folder):
            self.saved += 1

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class _VideoSinks:
    """One cv2.VideoWriter per output file (mp4v), opened at the first frame with the input's size and fps."""

    def __init__(self):
        self.writers: dict[str, cv2.VideoWriter] = {}

    def write(self, save_path: Path, im0: np.ndarray, fps: float) -> None:
        key = str(save_path.with_suffix(".mp4"))
        if key not in self.writers:
            h, w = im0.shape[:2]
            writer = cv2.VideoWriter(key, cv2.VideoWriter_fourcc(*"mp4v"), fps if fps > 0 else 30.0, (w, h))
            if not writer.isOpened():
                raise UserError(f"cannot write video {key} (OpenCV has no mp4v encoder here); use --nosave")
            self.writers[key] = writer
        self.writers[key].write(im0)

    def close(self) -> None:
        for w in self.writers.values():
            w.release()
        self.writers.clear()


class _VideoBar:
    """A tqdm bar per video; its per-frame counts go to the bar, and one line per video to the log."""

    def __init__(self, names: list[str]):
        self.names = names
        self.bar, self.path, self.frames, self.counts, self.ms = None, None, 0, {}, 0.0

    def update(self, path: str, total: int, prefix: str, det: torch.Tensor, ms: float) -> None:
        if path != self.path:
            self.close()
            desc = f"{prefix.split(' (frame')[0]} {Path(path).name}"  # 'video 1/2 clip.mp4'
            self.bar = tqdm(total=total or None, desc=desc, unit="frame", bar_format="{l_bar}{bar:10}{r_bar}")
            self.path, self.frames, self.counts, self.ms = path, 0, {}, 0.0
        for c in det[:, 5].int().tolist():
            self.counts[c] = self.counts.get(c, 0) + 1
        self.frames += 1
        self.ms += ms
        self.bar.set_postfix_str((describe(det, self.names) or "(no detections), ") + f"{ms:.1f}ms", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is None:
            return
        self.bar.close()
        found = ", ".join(f"{n} {self.names[c]}{'s' * (n > 1)}" for c, n in sorted(self.counts.items())) or \
            "no detections"
        LOGGER.info(f"video {self.path}: {self.frames} frames, {found} (boxes over all frames), "
                    f"{self.ms / max(self.frames, 1):.1f}ms per frame")
        self.bar = self.path = None


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


def _dataset(source: str, imgsz, stride: int, vid_stride: int, auto: bool = True):
    """(images or streams, whether a stream); `auto` letterboxes to the smallest stride multiple (rectangular),
    else to imgsz exactly (square), as an export of fixed size needs."""
    if is_stream_source(source):
        return LoadStreams(source, img_size=imgsz, stride=stride, auto=auto, vid_stride=vid_stride), True
    return LoadImages(source, img_size=imgsz, stride=stride, auto=auto, vid_stride=vid_stride), False


def _infer(model, im: np.ndarray, device, half: bool, nms_kw: dict, weights, path, augment: bool = False):
    """(input batch (B, 3, H, W), per-image detections in input pixels, [pre, inference, NMS] seconds); NaN or
    inf outputs raise an error naming the `weights` file. `augment`: test-time augmentation (models.tta)."""
    t1 = time_sync()
    x = torch.from_numpy(im).to(device)
    x = (x.half() if half else x.float()) / 255
    x = x[None] if x.ndim == 3 else x
    t2 = time_sync()
    pred = model(x, augment=augment)[0]
    check_finite_outputs(pred, weights, path)
    t3 = time_sync()
    pred = non_max_suppression(pred, **nms_kw)
    return x, pred, [t2 - t1, t3 - t2, time_sync() - t3]


def _one_image(i, det, x, path, im0s, vid_cap, s, dataset, webcam, o: _Options, sinks, bar, ms) -> Detections:
    """Map image i's detections to its original pixels, draw and save them, log or advance the video bar."""
    if webcam:
        p, im0, frame, line = Path(path[i]), im0s[i].copy(), dataset.frame, f"{i}: "
    else:
        p, im0, frame, line = Path(path), im0s.copy(), getattr(dataset, "frame", 0), s
    video, stem = dataset.mode != "image", o.stem(p)
    det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], im0.shape).round()
    txt = o.save_dir / "labels" / (stem + (f"_{frame}" if video else "") + ".txt")
    im0 = _annotate(det, im0, stem, txt, o, p.name)
    o.viewer.show(str(p), im0)
    out = o.save_dir / (stem + p.suffix)
    if o.save_img and video:
        sinks.write(out, im0, vid_cap.get(cv2.CAP_PROP_FPS) if vid_cap else dataset.fps[i])
    elif o.save_img and not cv2.imwrite(str(out), im0):
        LOGGER.warning(f"WARNING: {p}: could not write {out}")
    if dataset.mode == "video":
        bar.update(str(p), dataset.frames, s, det, ms)
    else:
        LOGGER.info(f"{line}{'%gx%g ' % x.shape[2:]}{describe(det, o.names) or '(no detections), '}{ms:.1f}ms")
    return Detections(str(p), frame if video else 0, det.cpu().numpy())


@torch.no_grad()
def run(weights="yolov5n.pt", source=ROOT / "data/images", imgsz=(640, 640), conf_thres=0.25, iou_thres=0.45,
        max_det=1000, device="", save_txt=False, save_conf=False, save_crop=False, nosave=False, classes=None,
        agnostic_nms=False, project=ROOT / "runs/detect", name="exp", exist_ok=False, line_thickness=3,
        hide_labels=False, hide_conf=False, half=False, vid_stride=1,
        visualize_routing=False, augment=False, visualize=False, view_img=False,
        save_csv=False, ov_precision="f32") -> tuple[Path, list[Detections]]:
    """Detect; returns (run folder, detections of every image / frame in original pixels; for streams the
    first MAX_STREAM_RECORDS frames). `visualize_routing` also draws, for models with BiLevelRoutingAttention,
    the regions each of the most confident detections routes to, into <run folder>/routing (a .pt checkpoint
    only: exports do not expose the attention). `weights` is a .pt or an export (.torchscript, .onnx,
    *_openvino_model), or a list of several: their ensemble; an export of fixed size runs at its own size.
    `augment`: test-time augmentation; `visualize`: feature-map figures per image (one .pt only); `view_img`:
    show each drawn image; `save_csv`: <run folder>/predictions.csv (see the module's docstring)."""
    source = str(source)
    device = select_device(device)
    if half and device.type != "cuda":
        LOGGER.warning(f"WARNING: --half needs CUDA; running in FP32 on {device.type}")
        half = False
    check_line_width(line_thickness)
    ws = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    w = ws[0] if len(ws) == 1 else ws
    fmts = [weights_format(x) for x in ws]
    for flag, on, what in (("--visualize-routing", visualize_routing, "the attention"),
                           ("--visualize", visualize, "the layers' outputs")):
        if on and len(ws) > 1:
            raise UserError(f"{flag} draws one model; got an ensemble of {len(ws)} weights: "
                            f"{' '.join(map(str, ws))}")
        if on and fmts[0] != "pt":
            raise UserError(f"{flag} needs the PyTorch checkpoint (.pt): it reads {what} inside the model, "
                            f"which the {fmts[0]} export {ws[0]} does not expose")
    if half and any(f in ("onnx", "openvino") for f in fmts):
        fmt = next(f for f in fmts if f in ("onnx", "openvino"))
        LOGGER.warning(f"WARNING: --half applies to .pt and TorchScript weights; the {fmt} model runs in the "
                       "precision it was exported in")
    model, stride, imgsz = _load_model(w, device, half, [imgsz] if isinstance(imgsz, int) else list(imgsz),
                                       ov_precision)
    if augment and model.fixed_shape is not None:
        fh, fw = model.fixed_shape
        raise UserError(f"--augment runs the model on rescaled inputs, and {' '.join(map(str, ws))} was exported "
                        f"for {fh}x{fw} images only; use the .pt or an export made with --dynamic")
    half = model.fp16
    outside = sorted({int(c) for c in (classes or []) if not 0 <= int(c) < len(model.names)})
    if outside:
        LOGGER.warning(f"WARNING: --classes {' '.join(map(str, outside))}: the model has {len(model.names)} classes "
                       f"(0..{len(model.names) - 1}); {'this class is' if len(outside) == 1 else 'these are'} never "
                       "detected")
    dataset, webcam = _dataset(source, imgsz, stride, vid_stride, auto=model.fixed_shape is None)
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    names = list(model.names)
    o = _Options(save_dir, names, not nosave, save_txt, save_conf, save_crop, line_thickness, hide_labels, hide_conf,
                 view_img=view_img, csv_path=save_dir / "predictions.csv" if save_csv else None,
                 viewer=_Viewer(view_img))
    if o.csv_path is not None:  # afresh each run, even into an --exist-ok folder
        with open(o.csv_path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(CSV_HEADER)
    features = _FeatureMaps(model.model) if visualize else None
    nms_kw = dict(conf_thres=conf_thres, iou_thres=iou_thres, classes=classes, agnostic=agnostic_nms,
                  max_det=max_det)
    wl = " + ".join(map(str, ws))  # what a NaN output names
    sinks, bar, records, seen, dt = _VideoSinks(), _VideoBar(names), [], 0, [0.0, 0.0, 0.0]
    try:
        for path, im, im0s, vid_cap, s in dataset:
            if features is not None:  # the batch's first image: <run>/<stem>, or <stem>_<frame> of a video
                video = dataset.mode != "image"
                stem = o.stem(Path(path[0] if webcam else path))
                features.target(save_dir / (stem + (f"_{dataset.frame}" if video else "")))
            x, pred, times = _infer(model, im, device, half, nms_kw, wl, path, augment)
            dt = [a + b for a, b in zip(dt, times)]
            for i, det in enumerate(pred):
                seen += 1
                try:
                    r = _one_image(i, det, x, path, im0s, vid_cap, s, dataset, webcam, o, sinks, bar, times[1] * 1e3)
                except cv2.error as e:  # OpenCV could not draw on or write this one: skip it, the run goes on
                    LOGGER.warning(f"WARNING: skipping {path[i] if webcam else path}: {cv2_reason(e)}")
                    continue
                if not webcam or len(records) < MAX_STREAM_RECORDS:  # a stream may run for hours
                    records.append(r)
    finally:
        bar.close()
        sinks.close()
        o.viewer.close()
        if features is not None:
            features.close()
        if webcam:
            dataset.close()
    _report(seen, dt, imgsz, len(dataset) if webcam else 1, save_dir, save_txt, o.save_img or save_crop)
    if o.csv_path is not None:
        LOGGER.info(f"Predictions saved to {colorstr('bold', str(o.csv_path))}")
    if features is not None:
        LOGGER.info(f"Feature maps: {features.saved} figures saved to {colorstr('bold', str(save_dir))}/<image>/")
    if visualize_routing:
        _draw_routing(model.model, records, save_dir / "routing", max(imgsz), conf_thres, iou_thres)
    return save_dir, records


def _draw_routing(model, records: list[Detections], save_dir: Path, imgsz: int, conf_thres: float,
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
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
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
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> None:
    setup_logging()
    run(**vars(opt))


def cli(argv: list[str] | None = None) -> None:
    """The command line: user errors end as one `ERROR: ...` line and exit status 2."""
    cli_errors(main)(parse_opt(argv))


if __name__ == "__main__":
    cli()
