"""detect.py's options as one typed object, built once from the command line or `detect.run(**kwargs)` and
checked before the model loads."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass, fields
from typing import Any

from models.backends import weights_format
from utils.cli import apply_options
from utils.errors import UserError
from utils.paths import ROOT
from utils.plots import check_line_width

__all__ = ["DetectOptions"]


@dataclass(frozen=True)
class DetectOptions:
    """The options of one detect.py run, each a keyword of `detect.run` with the default here (the command line's
    defaults mean the same: --imgsz 640 is 640x640). What each option does:

    weights: a .pt or an export (.torchscript, .onnx, *_openvino_model), or a list of several: their ensemble
    source: an image, folder, glob, .txt list, video, 0 for a webcam, or a stream URL (or .streams file)
    imgsz: the inference size, h w (one int: square); an export of fixed size runs at its own size
    conf_thres, iou_thres, max_det: NMS's confidence and IoU thresholds and its most boxes per image
    device: '' (the first CUDA device, else the CPU), 'cpu' or CUDA indices such as '0' or '0,1'
    save_txt, save_conf: YOLO labels per image / video frame under <run>/labels, with confidences
    save_format: save_txt's boxes: 0 YOLO (cls cx cy w h, normalized), 1 Pascal-VOC (cls x1 y1 x2 y2, pixels)
    save_crop: each box's crop under <run>/crops/<class>
    nosave: neither drawn images nor videos are written
    classes: the class indices kept (None: all); agnostic_nms: NMS across classes
    project, name, exist_ok: the run folder, project/name (name2, name3, ... unless exist_ok)
    line_thickness: boxes' line width in pixels (0: scale with the image)
    hide_labels, hide_conf: draw boxes without labels, or labels without confidences
    half: FP16 inference (CUDA only; .pt and TorchScript weights)
    vid_stride: every vid_stride-th video frame is read
    visualize_routing: <run>/routing: where BiLevelRoutingAttention routes the most confident detections (.pt)
    augment: test-time augmentation (models.tta)
    visualize: feature-map figures per image (one .pt only)
    view_img: show each drawn image (cv2.imshow)
    save_csv: <run>/predictions.csv (Image Name, Prediction, Confidence)
    ov_precision: what an OpenVINO model computes in: f32, bf16 or f16 (utils.deploy.runtimes.OV_PRECISIONS)
    data: a data YAML whose class names label the boxes instead of the model's own (as many as the model's classes)
    modules: the user's Python files that register blocks the model uses (models/user_modules.py)
    heatmap: <run>/heatmaps: where the model looks on each still image, 'eigencam' or 'gradcam' (utils.heatmaps; .pt)
    """

    weights: Any = "yolov5n.pt"  # a path, or a list or tuple of paths
    source: Any = ROOT / "data/images"  # a str or Path
    imgsz: Any = (640, 640)  # an int, or a sequence of one (square) or two ints
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 1000
    device: str = ""
    save_txt: bool = False
    save_conf: bool = False
    save_format: int = 0
    save_crop: bool = False
    nosave: bool = False
    classes: list[int] | None = None
    agnostic_nms: bool = False
    project: Any = ROOT / "runs/detect"  # a str or Path
    name: str = "exp"
    exist_ok: bool = False
    line_thickness: int = 3
    hide_labels: bool = False
    hide_conf: bool = False
    half: bool = False
    vid_stride: int = 1
    visualize_routing: bool = False
    augment: bool = False
    visualize: bool = False
    view_img: bool = False
    save_csv: bool = False
    ov_precision: str = "f32"
    data: Any = None  # a data YAML path or name
    heatmap: str | None = None  # None, 'eigencam' or 'gradcam'
    modules: Any = None  # a list of .py paths

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace | dict) -> "DetectOptions":
        """From parsed options (detect.parse_opt), which name the same options."""
        return cls(**(vars(ns) if isinstance(ns, argparse.Namespace) else dict(ns)))

    @classmethod
    def from_kwargs(cls, kwargs: dict, who: str = "detect.run") -> "DetectOptions":
        """`kwargs` over the defaults; an unknown name raises a TypeError that lists the valid ones."""
        defaults = argparse.Namespace(**{f.name: f.default for f in fields(cls)})
        return cls.from_namespace(apply_options(defaults, kwargs, who))

    @classmethod
    def signature(cls, return_annotation: Any = inspect.Signature.empty) -> inspect.Signature:
        """The options as keyword-only parameters with their defaults, for `run(**kwargs)`'s help()."""
        params = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in fields(cls)]
        return inspect.Signature(params, return_annotation=return_annotation)

    @property
    def weights_list(self) -> list:
        """The weights as a list: one, or an ensemble's several."""
        return list(self.weights) if isinstance(self.weights, (list, tuple)) else [self.weights]

    def check(self) -> None:
        """Options that cannot make a run, found before the model loads: the line width, and --visualize /
        --visualize-routing, which read inside one PyTorch model."""
        check_line_width(self.line_thickness)
        if self.save_format not in (0, 1):
            raise UserError(f"--save-format {self.save_format!r}: valid are 0 (YOLO: cls cx cy w h, normalized) and 1 "
                            "(Pascal-VOC: cls x1 y1 x2 y2, pixels)")
        ws = self.weights_list
        fmts = [weights_format(x) for x in ws]
        if self.heatmap not in (None, "eigencam", "gradcam"):
            raise UserError(f"--heatmap {self.heatmap!r}: valid are eigencam and gradcam")
        for flag, on, what in (("--visualize-routing", self.visualize_routing, "the attention"),
                               ("--visualize", self.visualize, "the layers' outputs"),
                               ("--heatmap", bool(self.heatmap), "the layers' activations")):
            if on and len(ws) > 1:
                raise UserError(f"{flag} draws one model; got an ensemble of {len(ws)} weights: "
                                f"{' '.join(map(str, ws))}")
            if on and fmts[0] != "pt":
                raise UserError(f"{flag} needs the PyTorch checkpoint (.pt): it reads {what} inside the model, "
                                f"which the {fmts[0]} export {ws[0]} does not expose")
