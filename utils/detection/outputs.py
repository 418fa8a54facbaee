"""What detect.py draws and writes for each image or video frame: the drawn image or video, YOLO labels, crops,
predictions.csv rows, the viewer's window and the per-video progress bar."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.data.labels import save_one_txt
from utils.detection.options import DetectOptions
from utils.detection.progress import VideoBar
from utils.detection.viewer import Viewer
from utils.errors import UserError
from utils.paths import UniqueStems, safe_name
from utils.plots import Annotator, colors, save_one_box

__all__ = ["CSV_HEADER", "ImageOutputs", "VideoSinks"]

CSV_HEADER = ("Image Name", "Prediction", "Confidence")  # --save-csv columns, as YOLOv5


class VideoSinks:
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


@dataclass
class ImageOutputs:
    """What is drawn and written for each image of one run, as its options say, and where: the run folder
    `save_dir`, each source's output stem (unique in the run), predictions.csv (--save-csv: its header written
    afresh, even into an --exist-ok folder), the --view-img viewer, the video writers and the per-video bar."""

    opt: DetectOptions
    save_dir: Path
    names: list[str]
    stem: UniqueStems = field(default_factory=UniqueStems)  # source path -> its output stem, unique in the run

    def __post_init__(self):
        self.viewer = Viewer(self.opt.view_img)
        self.sinks = VideoSinks()
        self.bar = VideoBar(self.names)
        self.csv_path = self.save_dir / "predictions.csv" if self.opt.save_csv else None
        if self.csv_path is not None:
            with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(CSV_HEADER)

    @property
    def save_img(self) -> bool:
        return not self.opt.nosave

    def annotate(self, det: torch.Tensor, im0: np.ndarray, stem: str, txt_path: Path, image_name: str) -> np.ndarray:
        """Draw `det` (original pixels) on im0 and write its txt lines, CSV rows and crops; returns the drawn
        image."""
        o = self.opt
        imc = im0.copy() if o.save_crop else im0
        annotator = Annotator(im0, line_width=o.line_thickness)
        if o.save_txt and len(det):
            save_one_txt(det.flip(0), o.save_conf, im0.shape[:2], txt_path,  # least confident first, as YOLOv5
                         voc=o.save_format == 1)
        elif o.save_txt:
            txt_path.unlink(missing_ok=True)  # no detections now: an earlier run's file (--exist-ok) must not stay
        rows = []
        for *xyxy, conf, cls in reversed(det.tolist()):
            c = int(cls)
            rows.append((image_name, self.names[c], f"{conf:.2f}"))
            if self.save_img or o.view_img:
                label = None if o.hide_labels else (self.names[c] if o.hide_conf else f"{self.names[c]} {conf:.2f}")
                annotator.box_label(xyxy, label, color=colors(c, bgr=True))
            if o.save_crop:
                save_one_box(xyxy, imc, file=self.save_dir / "crops" / safe_name(self.names[c]) / f"{stem}.jpg")
        if self.csv_path is not None and rows:
            with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows)
        return annotator.result()

    def close(self) -> None:
        """Ends the video bar (its summary line), the video files and the viewer's windows."""
        self.bar.close()
        self.sinks.close()
        self.viewer.close()
