"""One-call inference, as YOLOv5's torch.hub models: `AutoShape` takes images in any common form and returns
`Detections`; `create` builds what hubconf.py's entries return.

    model = torch.hub.load("path/to/this/repo", "custom", path="best.pt", source="local")
    results = model(["data/images/bus.jpg", pil_image, rgb_array], size=640)
    results.print(); results.save(); boxes = results.xyxy[0]  # (n, 6): x1, y1, x2, y2, conf, cls

Inputs (a single one or a list): a file path (str or Path), an http(s) URL, a PIL image, a numpy array HWC in
RGB order (YOLOv5's convention: an OpenCV image is passed as `cv2.imread(f)[..., ::-1]`; CHW is accepted too),
or a torch tensor (B, 3, H, W) of 0-1 values, which goes to the model unchanged and returns its raw output, as
in YOLOv5. Files are read as detect.py reads them (OpenCV, EXIF orientation applied), so both see the same
pixels. Each image is letterboxed (utils.data.augment.letterbox) to the batch's shape: its longer side scaled to
`size`, every side a multiple of the model's stride, as YOLOv5's AutoShape does.

`model(ims, augment=True)` is YOLOv5's test-time augmentation (models.tta: three scaled / mirrored passes joined
before NMS), as detect.py --augment. The model may be an export (`custom` with best.onnx, best.torchscript or
best_openvino_model, run through models.backends.DetectBackend): one exported without --dynamic runs at the size
it was exported for, every image letterboxed to exactly that size (a warning says when `size` asks for another),
and cannot take augment=True.
"""

from __future__ import annotations

import contextlib
from copy import copy
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

import models
from models import WEIGHTS_DIR, model_from_checkpoint, resolve_weights
from models.backends import DetectBackend, weights_format
from models.config import SCALED_NAME, resolve_config_path
from models.registry import make_divisible
from models.tta import augmented_forward
from models.yolo import Model
from utils.boxes import scale_boxes, xyxy2xywh
from utils.checkpoint import load_checkpoint
from utils.checks import check_finite
from utils.data.augment import letterbox
from utils.data.inputs import INPUTS_HELP, URL_TIMEOUT, as_rgb
from utils.errors import UserError
from utils.log import LOGGER, colorstr, setup_logging
from utils.nms import non_max_suppression
from utils.paths import UniqueStems, increment_path, safe_name
from utils.plots import Annotator, colors, save_one_box
from utils.torch_utils import select_device, time_sync
from utils.transfer import transfer_weights

__all__ = ["AutoShape", "Detections", "create", "URL_TIMEOUT"]

class AutoShape(nn.Module):
    """A detection model that takes images as they come and returns `Detections` (YOLOv5's AutoShape).

    The NMS settings are attributes, as in YOLOv5: `model.conf = 0.5; model.classes = [0]`.
    """

    conf = 0.25  # NMS confidence threshold
    iou = 0.45  # NMS IoU threshold
    agnostic = False  # class-agnostic NMS
    multi_label = False  # several labels per box
    classes: list[int] | None = None  # keep only these class indices
    max_det = 1000  # detections per image
    amp = False  # autocast on CUDA

    def __init__(self, model: nn.Module, verbose: bool = True):
        super().__init__()
        if verbose:
            LOGGER.info("Adding AutoShape... ")
        self.model = model.eval()
        self.names = list(getattr(model, "names", []))
        self.yaml = getattr(model, "yaml", None)
        self._size_warned: set = set()  # the sizes a fixed-size export was already warned about

    @property
    def stride(self) -> int:
        return int(torch.as_tensor(self.model.stride).max())

    @property
    def backend(self) -> bool:
        """Whether the model is a models.backends.DetectBackend (an export, or a .pt loaded through it)."""
        return isinstance(self.model, DetectBackend)

    @property
    def fixed_shape(self) -> tuple[int, int] | None:
        """(h, w) an export without --dynamic requires, else None (any size runs)."""
        s = getattr(self.model, "fixed_shape", None)
        return None if s is None else (int(s[0]), int(s[1]))

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        """Where inputs go and their dtype: the parameters' own, else (an ONNX / OpenVINO export, which has none)
        the backend's device in fp32 (DetectBackend converts to what the graph declares)."""
        p = next(self.model.parameters(), None)
        if p is not None:
            return p.device, p.dtype
        return torch.device(getattr(self.model, "device", "cpu")), torch.float32

    def _run(self, x: torch.Tensor, augment: bool):
        """The model's output on x; `augment`: YOLOv5's test-time augmentation (models.tta), (decoded, None)."""
        if augment and self.fixed_shape is not None:
            fh, fw = self.fixed_shape
            raise UserError(f"augment=True runs the model on rescaled inputs, and {self.model.weights} was exported "
                            f"for {fh}x{fw} images only; use augment=False, the .pt, or an export made with "
                            f"--dynamic")
        if self.backend:
            return self.model(x, augment=augment)
        if not augment:
            return self.model(x)
        return augmented_forward(self.model, x, gs=self.stride, nl=int(self.model.model[-1].nl)), None

    def _batch_shape(self, size: tuple[int, int], shape0: list[tuple[int, int]]) -> list[int]:
        """(h, w) every image of the batch is letterboxed to: an export's fixed size (a warning, once per size, when
        `size` asks for another), else the longer sides scaled to max(size), each a multiple of the stride."""
        fixed = self.fixed_shape
        if fixed is None:
            gains = [max(size) / max(s) for s in shape0]
            biggest = np.array([[int(y * g) for y in s] for s, g in zip(shape0, gains)]).max(0)
            return [make_divisible(int(x), self.stride) for x in biggest]
        asked = (size[0],) if size[0] == size[1] else size  # an int size names the longer side
        if asked not in (fixed, (max(fixed),)) and asked not in self._size_warned:
            self._size_warned.add(asked)
            LOGGER.warning(f"WARNING: size {'x'.join(map(str, asked))} differs from the {fixed[0]}x{fixed[1]} (h x w) "
                           f"that {self.model.weights} was exported for; running at {fixed[0]}x{fixed[1]} (export "
                           f"with --dynamic to run at any size)")
        return list(fixed)

    @torch.no_grad()
    def forward(self, ims, size: int | tuple[int, int] = 640, augment: bool = False, profile: bool = False):
        """`Detections` of `ims` (one image or a list; see the module docstring) letterboxed to `size` (the longer
        side, or (h, w) whose larger value is used, as YOLOv5; an export of fixed size runs at its own size). A
        torch tensor returns the model's raw output. `augment`: YOLOv5's test-time augmentation (models.tta), as
        detect.py --augment. `profile` is accepted for YOLOv5's signature; the times are always in
        `Detections.t`."""
        t0 = time_sync()
        device, dtype = self._device_dtype()
        amp = self.amp and device.type == "cuda"
        autocast = torch.autocast("cuda") if amp else contextlib.nullcontext()
        if isinstance(ims, torch.Tensor):
            with autocast:
                return self._run(ims.to(device).type(dtype), augment)
        size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
            raise UserError(f"size {size!r}: must be a positive int or (height, width)")
        size = (int(size[0]), int(size[1]))
        items = list(ims) if isinstance(ims, (list, tuple)) else [ims]
        if not items:
            raise UserError(f"no images given; give {INPUTS_HELP}")
        rgb, sources = zip(*(as_rgb(im, i) for i, im in enumerate(items)))
        stems = UniqueStems()  # two images named img.jpg (two folders, or one given twice) save as img, img_1
        files = [safe_name(stems(Path(str(i)) / Path(f).name)) + ".jpg" for i, f in enumerate(sources)]
        shape0 = [im.shape[:2] for im in rgb]
        shape1 = self._batch_shape(size, shape0)  # (h, w) of the batch
        x = np.stack([letterbox(im, shape1, auto=False)[0] for im in rgb])
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device).type(dtype) / 255
        t1 = time_sync()
        with autocast:
            y = self._run(x, augment)
        y = y[0] if isinstance(y, (tuple, list)) else y
        t2 = time_sync()
        pred = non_max_suppression(y, self.conf, self.iou, self.classes, self.agnostic, self.multi_label,
                                   max_det=self.max_det)
        for det, s0 in zip(pred, shape0):
            scale_boxes(shape1, det[:, :4], s0)
        return Detections(list(rgb), pred, files, (t1 - t0, t2 - t1, time_sync() - t2), self.names, tuple(x.shape))


class Detections:
    """YOLOv5's results object: per image, boxes in several forms, and ways to print, draw, save and crop them.

    Attributes (lists with one entry per image):
        ims: the images, HWC RGB uint8 (annotated in place by `render()`).
        xyxy, xywh: Tensor (n, 6) in the image's pixels: x1, y1, x2, y2 (or cx, cy, w, h), confidence, class.
        xyxyn, xywhn: the same with coordinates divided by the image's width and height.
        names: class names; files: the file name each image saves as; t: milliseconds per image for
        pre-processing, inference and NMS; s: the shape of the batch the model ran on (B, 3, H, W).
    """

    def __init__(self, ims: list[np.ndarray], pred: list[torch.Tensor], files: list[str],
                 times: tuple[float, float, float] = (0.0, 0.0, 0.0), names: list[str] | None = None,
                 shape: tuple[int, ...] = ()):
        self.ims, self.pred, self.files = ims, pred, files
        self.names = list(names or [])
        self.times = times
        gn = [torch.tensor([im.shape[1], im.shape[0], im.shape[1], im.shape[0], 1, 1], device=p.device,
                           dtype=p.dtype) for im, p in zip(ims, pred)]
        self.xyxy = pred
        self.xywh = [xyxy2xywh(x) for x in pred]
        self.xyxyn = [x / g for x, g in zip(self.xyxy, gn)]
        self.xywhn = [x / g for x, g in zip(self.xywh, gn)]
        self.n = len(pred)
        self.t = tuple(x / max(self.n, 1) * 1e3 for x in times)
        self.s = tuple(shape)

    def _name(self, c: float) -> str:
        c = int(c)
        return self.names[c] if 0 <= c < len(self.names) else str(c)

    def _summary(self, i: int) -> str:
        im, det = self.ims[i], self.pred[i]
        s = f"image {i + 1}/{self.n}: {im.shape[0]}x{im.shape[1]} "
        if not len(det):
            return s + "(no detections)"
        counts = [(int((det[:, 5] == c).sum()), self._name(c)) for c in det[:, 5].unique()]
        return s + ", ".join(f"{k} {name}{'s' * (k > 1)}" for k, name in counts)

    def _annotated_bgr(self, i: int, labels: bool) -> np.ndarray:
        """Image i as BGR with its boxes drawn (the project's Annotator draws in BGR)."""
        annotator = Annotator(np.ascontiguousarray(self.ims[i][..., ::-1]))
        for *box, conf, cls in reversed(self.pred[i].tolist()):
            label = f"{self._name(cls)} {conf:.2f}" if labels else ""
            annotator.box_label(box, label, color=colors(int(cls), bgr=True))
        return annotator.result()

    def __str__(self) -> str:
        lines = [self._summary(i) for i in range(self.n)]
        speed = "Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image" % self.t
        return "\n".join(lines + [f"{speed} at shape {self.s}"])

    def __repr__(self) -> str:
        return f"YOLOv5 {self.__class__} instance\n{self}"

    def __len__(self) -> int:
        return self.n

    def print(self) -> None:
        """Log one line per image (its size and what was found) and the speed."""
        LOGGER.info(str(self))

    def render(self, labels: bool = True) -> list[np.ndarray]:
        """Draw the boxes into `ims` (RGB, in place, as YOLOv5) and return them."""
        for i in range(self.n):
            self.ims[i] = np.ascontiguousarray(self._annotated_bgr(i, labels)[..., ::-1])
        return self.ims

    def save(self, labels: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> Path:
        """Write the annotated images as JPEGs into `save_dir` (relative to the working directory, as YOLOv5;
        exp2, exp3, ... when it exists, unless `exist_ok`); returns the folder."""
        save_dir = increment_path(save_dir, exist_ok=exist_ok, mkdir=True)
        for i, f in enumerate(self.files):
            if not cv2.imwrite(str(save_dir / f), self._annotated_bgr(i, labels)):
                raise OSError(f"could not write {save_dir / f}")
        LOGGER.info(f"Saved {self.n} image{'s' * (self.n > 1)} to {colorstr('bold', str(save_dir))}")
        return save_dir

    def crop(self, save: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> list[dict]:
        """One dict per detection: box (xyxy), conf, cls, label, and im, the crop (BGR, as YOLOv5 returns it);
        with `save`, the crops are also written to save_dir/crops/<class name>/<file>."""
        save_dir = increment_path(save_dir, exist_ok=exist_ok, mkdir=True) if save else None
        crops = []
        for i, (im, det) in enumerate(zip(self.ims, self.pred)):
            bgr = np.ascontiguousarray(im[..., ::-1])
            for *box, conf, cls in reversed(det):
                name = self._name(cls)
                file = save_dir / "crops" / safe_name(name) / self.files[i] if save else Path("unused")
                crops.append({"box": box, "conf": conf, "cls": cls, "label": f"{name} {float(conf):.2f}",
                              "im": save_one_box([float(b) for b in box], bgr, file=file, save=save)})
        if save:
            LOGGER.info(f"Saved results to {save_dir}")
        return crops

    def pandas(self) -> "Detections":
        """A copy whose xyxy, xyxyn, xywh and xywhn are pandas DataFrames (columns as YOLOv5's)."""
        try:
            import pandas as pd  # optional: only results.pandas() needs it
        except ModuleNotFoundError:
            raise ModuleNotFoundError("results.pandas() needs pandas, which is not installed here "
                                      "(pip install pandas); the same numbers are in results.xyxy, .xywh, "
                                      ".xyxyn and .xywhn as tensors") from None
        new = copy(self)
        ca = "xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"
        cb = "xcenter", "ycenter", "width", "height", "confidence", "class", "name"
        for k, cols in zip(("xyxy", "xyxyn", "xywh", "xywhn"), (ca, ca, cb, cb)):
            rows = [[[*r[:5], int(r[5]), self._name(r[5])] for r in x.tolist()] for x in getattr(self, k)]
            setattr(new, k, [pd.DataFrame(r, columns=cols) for r in rows])
        return new

    def tolist(self) -> list["Detections"]:
        """One Detections per image."""
        times = tuple(t / max(self.n, 1) for t in self.times)  # each image's share
        return [Detections([self.ims[i]], [self.pred[i]], [self.files[i]], times, self.names, self.s)
                for i in range(self.n)]


def _base_weights(name: str) -> Path:
    """The bundled weights a named entry starts from: weights/yolov5n.pt for yolov5n and yolov5n_biformer."""
    m = SCALED_NAME.match(f"{name}.yaml")
    return WEIGHTS_DIR / (f"{m['arch']}{m['scale']}.pt" if m else f"{name}.pt")


def _named_model(name: str, pretrained: bool, channels: int, classes: int) -> nn.Module:
    """The model of a named entry: the bundled checkpoint itself when it is that model, else built from the
    config with the bundled weights transferred by structure (utils/transfer.py) when they exist."""
    resolve_config_path(f"{name}.yaml")  # FileNotFoundError listing the configs for an unknown name
    weights = _base_weights(name)
    if pretrained and weights.is_file() and weights.stem == name and channels == 3 and classes == 80:
        return model_from_checkpoint(load_checkpoint(weights))
    model = Model(f"{name}.yaml", ch=channels, nc=classes, verbose=False)
    if not pretrained:
        LOGGER.info(f"{name}: pretrained=False, the weights are random (initialised from the config)")
    elif not weights.is_file():
        have = ", ".join(p.name for p in sorted(weights.parent.glob("*.pt"))) or "none"
        LOGGER.warning(f"WARNING: {name}: no bundled weights {weights.name} in {weights.parent} (bundled: {have}); "
                       f"the weights are random (initialised from {name}.yaml). Nothing is downloaded")
    else:
        ckpt = load_checkpoint(weights)
        own_anchors = model.yaml["anchors"] != ckpt["yaml"].get("anchors")
        report = transfer_weights(model, ckpt, exclude=("anchors",) if own_anchors else ())
        LOGGER.info(report.summary(weights.name))
        if len(ckpt.get("names") or []) == classes:
            model.names = list(ckpt["names"])
    return model


def _custom_model(path: str | Path, device: torch.device) -> tuple[nn.Module, bool]:
    """(model, whether it is a PyTorch Model to fuse) of `custom`'s path: a .pt checkpoint loads as a Model, an
    export (.torchscript, .onnx, *_openvino_model or its .xml) as a models.backends.DetectBackend. A bare name
    also finds weights/; a UserError names the valid formats for anything else."""
    try:
        fmt = weights_format(path)
    except UserError:
        raise UserError(f"custom: path={str(path)!r} is not a model file this entry loads; valid: a PyTorch "
                        f"checkpoint (.pt), a TorchScript (.torchscript), an ONNX (.onnx) or an OpenVINO folder "
                        f"(*_openvino_model, or its .xml), as export.py writes them") from None
    if fmt == "pt":
        file = resolve_weights(path)
        model = models.load_model(file, device=device)  # via the module, so patches apply
        check_finite(model, file)
        return model, True
    backend = DetectBackend(path, device=device)
    shape = "any size" if backend.fixed_shape is None else "{}x{} (h x w) only".format(*backend.fixed_shape)
    LOGGER.info(f"Loaded {backend.weights} ({fmt}, stride {backend.stride}, {backend.nc} classes, runs at {shape})")
    return backend, False


def create(name: str | Path, pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
           verbose: bool = True, device: str | torch.device | None = None, custom: bool = False) -> nn.Module:
    """What hubconf.py's entries return: a model on `device`, wrapped in AutoShape (and BatchNorm fused) when
    `autoshape`. `custom`: `name` is a .pt checkpoint or an export (.torchscript, .onnx, *_openvino_model; a bare
    name also finds weights/), an export returned as its models.backends.DetectBackend; else a config name such
    as 'yolov5n' or 'yolov5n_biformer'. Nothing is ever downloaded."""
    if not isinstance(channels, int) or channels < 1 or not isinstance(classes, int) or classes < 1:
        raise UserError(f"channels={channels!r}, classes={classes!r}: both must be integers >= 1")
    if not LOGGER.handlers:  # used as a library: print the project's messages as its scripts do
        setup_logging()
    level = LOGGER.level
    if not verbose:
        LOGGER.setLevel("WARNING")
    try:
        dev = select_device("" if device is None else device)
        if custom:
            model, fusable = _custom_model(name, dev)
        else:
            model, fusable = _named_model(str(name), pretrained, channels, classes).to(dev).eval(), True
        if not autoshape:
            return model
        return AutoShape(model.fuse() if fusable else model, verbose=verbose)
    finally:
        LOGGER.setLevel(level)
