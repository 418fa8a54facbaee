"""val.py's options as one typed object: the command line's flags, or `val.run(**kwargs)` with run's defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any

from utils.paths import ROOT

__all__ = ["ValOptions"]


@dataclass(frozen=True)
class ValOptions:
    """The options of one validation; the defaults are `val.run`'s (YOLOv5's), the command line's are in
    val.parse_opt (there --data and --weights default to coco128.yaml and yolov5n.pt, --half to off)."""

    data: Any = None  # a DataConfig, a data YAML path or name, a YOLOv5-style dict, or None (the model's names)
    weights: Any = None  # a path, or a list of paths (an ensemble)
    batch_size: int = 32
    imgsz: int = 640
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    task: str = "val"  # train, val, test, speed or study
    device: str = ""
    workers: int = 8
    single_cls: bool = False
    verbose: bool = False  # rows by class
    save_txt: bool = False
    save_conf: bool = False
    save_json: bool = False
    project: Any = str(ROOT / "runs/val")
    name: str = "exp"
    exist_ok: bool = False
    half: bool = True  # fp16 where the device is CUDA
    modules: Any = None  # the user's .py files that register blocks the model uses (models/user_modules.py)
    ov_precision: str = "f32"  # what an OpenVINO model computes in
    augment: bool = False  # test-time augmentation (models.tta)
    save_stats: bool = False  # image_stats.npz: per-image matches and labels (utils.validation.image_stats)
    plots: bool = True  # not a flag: training turns it off between its final epochs

    @classmethod
    def from_kwargs(cls, kwargs: dict, who: str = "val.run") -> "ValOptions":
        """From keyword options; an unknown name raises a TypeError that lists the valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"{who}() got an unknown option {unknown[0]!r}; options: {sorted(names)}")
        return cls(**kwargs)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> "ValOptions":
        return cls.from_kwargs(vars(ns), "val.py")
