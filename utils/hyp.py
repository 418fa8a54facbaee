"""Training hyperparameters: a typed object read from `data/hyps/*.yaml` that rejects unknown keys."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from utils.errors import UserError
from utils.files import read_yaml

__all__ = ["Hyp", "load_hyp", "HYP_DIR"]

HYP_DIR = Path(__file__).resolve().parent.parent / "data" / "hyps"


@dataclass
class Hyp:
    """YOLOv5's hyperparameters; defaults are those of hyp.scratch-low.yaml."""

    lr0: float = 0.01  # initial learning rate (SGD=1E-2, Adam=1E-3)
    lrf: float = 0.01  # final learning rate as a fraction of lr0
    momentum: float = 0.937  # SGD momentum / Adam beta1
    weight_decay: float = 0.0005  # optimizer weight decay, scaled by batch size / nominal batch
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    box: float = 0.05  # box loss gain
    cls: float = 0.5  # cls loss gain
    cls_pw: float = 1.0  # cls BCE positive weight
    obj: float = 1.0  # obj loss gain (scales with pixels)
    obj_pw: float = 1.0  # obj BCE positive weight
    iou_t: float = 0.20  # IoU training threshold (unused by the loss; kept for YOLOv5 files)
    anchor_t: float = 4.0  # anchor-multiple threshold
    anchors: float = 0.0  # anchors per output layer (0 to ignore)
    fl_gamma: float = 0.0  # focal loss gamma (0 = plain BCE)
    hsv_h: float = 0.015  # image HSV-Hue augmentation (fraction)
    hsv_s: float = 0.7  # image HSV-Saturation augmentation (fraction)
    hsv_v: float = 0.4  # image HSV-Value augmentation (fraction)
    degrees: float = 0.0  # image rotation (+/- deg)
    translate: float = 0.1  # image translation (+/- fraction)
    scale: float = 0.5  # image scale (+/- gain)
    shear: float = 0.0  # image shear (+/- deg)
    perspective: float = 0.0  # image perspective (+/- fraction), range 0-0.001
    flipud: float = 0.0  # image flip up-down (probability)
    fliplr: float = 0.5  # image flip left-right (probability)
    mosaic: float = 1.0  # image mosaic (probability)
    mixup: float = 0.0  # image mixup (probability)
    copy_paste: float = 0.0  # segment copy-paste (probability)
    label_smoothing: float = 0.0  # set from --label-smoothing, not from the file
    # plug-in layers the pretrained weights did not cover train with AdamW of their own
    # (utils/training/plugin_optim.py); 0 trains them with the recipe's optimizer. Default chosen in
    # benchmarks/README.md ("Plug-ins that learn").
    plugin_lr: float = 0.003
    plugin_weight_decay: float = 0.0  # AdamW's decoupled weight decay for those layers
    plugin_block_lr: float = 0.7  # the plug-in blocks' learning rate as a fraction of plugin_lr (gates keep plugin_lr)
    plugin_warmup: float = 0.0  # 1: plugin_lr ramps up from 0 over the recipe's warmup iterations; 0: no ramp
    plugin_share_max: float = 0.5  # each Residual plug-in's share held at or below this in training (0: no bound)

    @classmethod
    def from_dict(cls, d: dict, source: str = "hyperparameters") -> "Hyp":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"{source}: unknown hyperparameter(s) {unknown}; valid keys: {sorted(known)}")
        bad = {k: v for k, v in d.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        if bad:
            raise UserError(f"{source}: hyperparameters must be numbers, got {bad}")
        hyp = cls(**{k: float(v) for k, v in d.items()})
        hyp.check(source)
        return hyp

    def check(self, source: str = "hyperparameters") -> None:
        """ValueError naming every value outside its valid range (_RANGES)."""
        bad = []
        for k, (lo, hi, lo_open) in _RANGES.items():
            v = getattr(self, k)
            if not (lo < v if lo_open else lo <= v) or v > hi or not math.isfinite(v):  # inf and NaN never
                bad.append(f"{k}={v} (valid: {'(' if lo_open else '['}{lo}, {hi}{')' if hi == _INF else ']'})")
        if bad:
            raise UserError(f"{source}: hyperparameter(s) out of range: {', '.join(bad)}")

    def to_dict(self) -> dict:
        return asdict(self)


_INF = float("inf")
# key -> (low, high, low excluded): what the recipe can use; a value outside is a typo, not a setting
_RANGES = {
    "lr0": (0.0, _INF, True), "lrf": (0.0, 1.0, False), "momentum": (0.0, 1.0, False),
    "weight_decay": (0.0, 1.0, False), "warmup_epochs": (0.0, _INF, False), "warmup_momentum": (0.0, 1.0, False),
    "warmup_bias_lr": (0.0, _INF, False), "box": (0.0, _INF, False), "cls": (0.0, _INF, False),
    "cls_pw": (0.0, _INF, True), "obj": (0.0, _INF, False), "obj_pw": (0.0, _INF, True),
    "iou_t": (0.0, 1.0, False), "anchor_t": (1.0, _INF, True), "anchors": (0.0, 100.0, False),
    "fl_gamma": (0.0, _INF, False), "hsv_h": (0.0, 1.0, False), "hsv_s": (0.0, 1.0, False),
    "hsv_v": (0.0, 1.0, False), "degrees": (0.0, 360.0, False), "translate": (0.0, 1.0, False),
    "scale": (0.0, 1.0, False), "shear": (0.0, 180.0, False), "perspective": (0.0, 0.001, False),
    "flipud": (0.0, 1.0, False), "fliplr": (0.0, 1.0, False), "mosaic": (0.0, 1.0, False),
    "mixup": (0.0, 1.0, False), "copy_paste": (0.0, 1.0, False), "label_smoothing": (0.0, 1.0, False),
    "plugin_lr": (0.0, _INF, False), "plugin_weight_decay": (0.0, 1.0, False), "plugin_block_lr": (0.0, 1.0, True),
    "plugin_warmup": (0.0, 1.0, False), "plugin_share_max": (0.0, _INF, False),
}


def load_hyp(hyp: str | Path | dict | Hyp | None = None) -> Hyp:
    """A Hyp from a path, a bare name in data/hyps/ (e.g. 'hyp.scratch-low.yaml'), a dict, or the defaults."""
    if hyp is None:
        return Hyp()
    if isinstance(hyp, Hyp):
        return hyp
    if isinstance(hyp, dict):
        return Hyp.from_dict(hyp)
    path = Path(hyp)
    if not path.is_file():
        path = HYP_DIR / path.name
    if not path.is_file():
        have = ", ".join(p.name for p in sorted(HYP_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"hyperparameter file {str(hyp)!r} not found; bundled: {have}")
    d = read_yaml(path) or {}
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected a mapping of hyperparameters, got {type(d).__name__}")
    return Hyp.from_dict(d, source=str(path))
