"""A training run's folder as train.py opens it once the model and the data are known to work: hyp.yaml,
opt.yaml, weights/ (checked for room), the label plots and the loggers."""

from __future__ import annotations

from pathlib import Path

from utils.files import yaml_save
from utils.hyp import Hyp
from utils.training.callbacks import Callbacks
from utils.training.loggers import TrainLoggers
from utils.training.options import TrainOptions
from utils.training.plots import plot_labels, plot_labels_correlogram
from utils.training.run_files import Checkpoints
from utils.training.setup import TrainSetup

__all__ = ["open_run_folder"]


def open_run_folder(opt: TrainOptions, hyp: Hyp, setup: TrainSetup, save_dir: Path,
                     callbacks: Callbacks) -> tuple[Checkpoints, TrainLoggers]:
    """hyp.yaml, opt.yaml, the weights folder (checked for room), label plots and the loggers."""
    w = save_dir / "weights"
    w.mkdir(parents=True, exist_ok=True)
    yaml_save(save_dir / "hyp.yaml", hyp.to_dict())
    yaml_save(save_dir / "opt.yaml", opt.to_dict())
    ck = Checkpoints(w, save_dir / "results.csv")
    ck.check_writable(3 * sum(p.numel() * p.element_size() for p in setup.model.parameters()))
    if not opt.resume and not opt.noplots:
        plot_labels(setup.dataset.labels, setup.data.names, save_dir)
        plot_labels_correlogram(setup.dataset.labels, save_dir)
    # the model graph is a plot, as official YOLOv5's: --noplots leaves it out (its trace takes a second or more)
    loggers = TrainLoggers(save_dir, callbacks, graph_imgsz=None if opt.noplots else setup.imgsz, hyp=hyp.to_dict())
    loggers.set_model(setup.model)
    return ck, loggers
