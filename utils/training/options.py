"""train.py's options as one typed object, built once from the command line (or `train.run(**kwargs)`) and
checked before any work starts."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from models.user_modules import import_module_files
from utils.checkpoint import load_checkpoint, training_state
from utils.checks import MAX_IMG_SIZE
from utils.errors import UserError
from utils.files import read_yaml
from utils.training.run_files import latest_run

__all__ = ["TrainOptions", "check_freeze", "resume_options"]


@dataclass(frozen=True)
class TrainOptions:
    """The options of one training run; the defaults and help texts are train.py's command line."""

    weights: str
    cfg: str
    data: Any  # a data YAML path or name, or a dict
    hyp: Any  # a hyp YAML path or name, or a dict
    epochs: int
    batch_size: int  # -1: AutoBatch
    imgsz: int
    rect: bool
    image_weights: bool
    resume: Any  # False, True (the latest run) or the path of a last.pt
    nosave: bool
    noval: bool
    noautoanchor: bool
    noplots: bool
    cache: str | None  # None, "ram", "disk" or "val"
    device: str
    multi_scale: bool
    single_cls: bool
    optimizer: str
    sync_bn: bool
    workers: int
    project: str
    name: str
    exist_ok: bool
    cos_lr: bool
    label_smoothing: float
    patience: int
    freeze: list
    save_period: int
    seed: int
    evolve: int | None
    local_rank: int
    save_dir: str = ""  # the run folder, set once it is chosen
    modules: Any = None  # the user's Python files that register blocks the model uses (models/user_modules.py)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace | dict) -> "TrainOptions":
        """From parsed options; keys that are not options (e.g. in an older run's opt.yaml) are dropped."""
        d = vars(ns) if isinstance(ns, argparse.Namespace) else dict(ns)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_(self, **changes) -> "TrainOptions":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain values, as opt.yaml and the checkpoints store them."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def check(self, distributed: bool = False) -> None:
        """Options that cannot make a run, found before any work (and before the run folder exists)."""
        for k, lo in (("epochs", 1), ("batch_size", 1), ("workers", 0), ("imgsz", 32)):
            v = getattr(self, k)
            if k == "batch_size" and v == -1:  # AutoBatch
                continue
            if not isinstance(v, int) or v < lo:
                raise UserError(f"--{k.replace('_', '-')} {v!r}: must be an integer >= {lo}")
        if self.imgsz > MAX_IMG_SIZE:
            raise UserError(f"--imgsz {self.imgsz}: at most {MAX_IMG_SIZE} pixels")
        if self.modules:
            import_module_files(self.modules)
        if distributed:
            if self.batch_size == -1:
                raise UserError("--batch-size -1 (AutoBatch) sizes one device: give a batch size for DDP runs")
            if self.image_weights:
                raise UserError("--image-weights is not supported in DDP runs (the processes would draw "
                                "different image sets)")


def check_freeze(freeze: list[int], n_layers: int) -> None:
    """--freeze N (layers 0..N-1) must leave the Detect head trainable; --freeze i j ... must name layers."""
    if len(freeze) == 1 and not 0 <= freeze[0] < n_layers:
        raise UserError(f"--freeze {freeze[0]}: freezes layers 0..N-1; valid N: 0..{n_layers - 1} (the model has "
                        f"{n_layers} layers and its last, the Detect head, must train)")
    if len(freeze) > 1 and not all(0 <= x < n_layers - 1 for x in freeze):
        raise UserError(f"--freeze {' '.join(map(str, freeze))}: layer indices must be in 0..{n_layers - 2}")


def resume_options(opt: argparse.Namespace, defaults: argparse.Namespace) -> argparse.Namespace:
    """--resume [path]: the options and hyperparameters of the interrupted run (its opt.yaml, else those in the
    checkpoint, over the `defaults`), pointed at its last.pt; a bare --resume takes the latest under --project."""
    given = isinstance(opt.resume, (str, Path)) and str(opt.resume) != "True"
    last = Path(opt.resume) if given else latest_run(opt.project)
    if last is None or not last.is_file():
        where = f"at {last}" if given else f"under {opt.project}"
        raise FileNotFoundError(f"--resume: no checkpoint {where}; pass the path of a run's weights/last.pt")
    state = training_state(load_checkpoint(last))
    d = state.opt if state else None
    opt_yaml = last.parent.parent / "opt.yaml"
    if opt_yaml.is_file():
        d = read_yaml(opt_yaml)
    if not d or state is None:
        raise UserError(f"--resume: {last} is not resumable (no training options or optimizer state; a finished "
                        f"run's checkpoints are stripped). Start a new run: python train.py --weights {last}")
    new = argparse.Namespace(**{**vars(defaults), **d})
    new.cfg, new.weights, new.resume = "", str(last), True
    new.hyp = state.hyp or new.hyp
    new.save_dir = str(last.parent.parent)
    return new
