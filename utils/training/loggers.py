"""Experiment logs of a training run: TensorBoard event files in the run folder (when the tensorboard package
is installed; it is in requirements.txt), written through the training hooks of utils/training/callbacks.py. MLflow and
Weights & Biases log the same figures when the user has installed them (neither is a requirement): MLflow to
its tracking URI (MLFLOW_TRACKING_URI, else ./mlruns), W&B offline unless WANDB_MODE or WANDB_API_KEY says
otherwise. Set YOLO_LOGGERS=tensorboard (or a comma list, or "none") to choose.

Per epoch: the results.csv columns under YOLOv5's tags (train/box_loss ... metrics/mAP_0.5:0.95 ... x/lr0),
the plug-in learning rate (x/plugin_lr), each plug-in layer's share (plugin/share/model.20) and its gate
statistics (plugin/gamma_abs_mean/model.20, plugin/gamma_abs_max/model.20). Once, at the start: the model graph
where it traces. View with `tensorboard --logdir runs/train`.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from models.common import Residual
from models.attention.share import SHARE_CSV, write_epoch_shares
from utils.errors import UserError
from utils.log import LOGGER, colorstr
from utils.torch_utils import de_parallel
from utils.training.callbacks import Callbacks
from utils.training.run_files import RESULTS_KEYS

__all__ = ["TrainLoggers", "gate_stats", "wanted_loggers", "LOGGER_NAMES"]


def gate_stats(model: nn.Module) -> dict[str, tuple[float, float]]:
    """{layer name: (mean |gamma|, max |gamma|)} of every Residual wrapper in `model`."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, Residual):
            g = m.gamma.detach().float().abs()
            out[name] = (float(g.mean()), float(g.max()))
    return out


LOGGER_NAMES = ("tensorboard", "mlflow", "wandb")


def wanted_loggers() -> set[str]:
    """The loggers YOLO_LOGGERS asks for (default: all three, each where it is installed); a name that is none of
    them is a UserError naming the valid ones, never silently no logging."""
    v = os.environ.get("YOLO_LOGGERS", ",".join(LOGGER_NAMES)).lower()
    if v.strip() == "none":
        return set()
    names = {x.strip() for x in v.split(",") if x.strip()}
    bad = sorted(names - set(LOGGER_NAMES))
    if bad:
        raise UserError(f"YOLO_LOGGERS={os.environ.get('YOLO_LOGGERS')!r}: unknown logger(s) {bad}; valid: a comma "
                        f"list of {', '.join(LOGGER_NAMES)}, or none")
    return names


def _optional(module: str):
    """The module when it is installed, else None (an optional logger the user may not have)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class TrainLoggers:
    """Registers its writers on `callbacks`; `writer` is None when TensorBoard is not installed, `mlflow` and
    `wandb` hold those modules when they are installed and wanted."""

    def __init__(self, save_dir: Path, callbacks: Callbacks, graph_imgsz: int | None = None,
                 hyp: dict | None = None, name: str | None = None):
        self.save_dir = Path(save_dir)
        self.writer = None
        self.graph_imgsz = graph_imgsz
        self.model: nn.Module | None = None
        self.extra: dict[str, float] = {}
        wanted = wanted_loggers()
        self.mlflow = _optional("mlflow") if "mlflow" in wanted else None
        self.wandb = _optional("wandb") if "wandb" in wanted else None
        SummaryWriter = getattr(_optional("torch.utils.tensorboard"), "SummaryWriter", None) \
            if "tensorboard" in wanted else None
        if SummaryWriter is not None:
            self.writer = SummaryWriter(str(self.save_dir))
            LOGGER.info(f"{colorstr('TensorBoard:')} start with 'tensorboard --logdir {self.save_dir.parent}', "
                        f"view at http://localhost:6006/")
        elif "tensorboard" in wanted:  # a requirement; a trimmed install only loses the event files
            LOGGER.info(f"{colorstr('TensorBoard:')} not installed (pip install tensorboard); no event files")
        run_name = name or self.save_dir.name
        if self.mlflow is not None:
            self.mlflow.start_run(run_name=run_name)
            self.mlflow.log_params(hyp or {})
            LOGGER.info(f"{colorstr('MLflow:')} logging run {run_name!r} to {self.mlflow.get_tracking_uri()}")
        if self.wandb is not None:
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
            self.wandb.init(project=self.save_dir.parent.name, name=run_name, config=hyp or {},
                            dir=str(self.save_dir), mode=mode)
            LOGGER.info(f"{colorstr('Weights & Biases:')} logging run {run_name!r} ({mode})")
        callbacks.register_action("on_train_start", "loggers", self.on_train_start)
        callbacks.register_action("on_fit_epoch_end", "loggers", self.on_fit_epoch_end)
        callbacks.register_action("on_train_end", "loggers", self.on_train_end)

    def set_model(self, model: nn.Module) -> None:
        self.model = model

    def on_train_start(self) -> None:
        if self.writer is None or self.model is None or not self.graph_imgsz:
            return
        model = de_parallel(self.model)
        p = next(model.parameters())
        im = torch.zeros(1, 3, self.graph_imgsz, self.graph_imgsz, device=p.device, dtype=p.dtype)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python branches
                was = model.training
                model.eval()
                try:
                    self.writer.add_graph(torch.jit.trace(model, im, strict=False, check_trace=False), [])
                finally:
                    model.train(was)
        except Exception as e:  # a graph is a nicety: a model that does not trace still trains and logs
            LOGGER.warning(f"WARNING: TensorBoard graph not written ({type(e).__name__}: {e})")

    def on_fit_epoch_end(self, vals, epoch: int, best_fitness: float, fi: float) -> None:
        scalars = {**dict(zip(RESULTS_KEYS, (float(v) for v in vals))), "metrics/fitness": float(fi),
                   **{k: float(v) for k, v in self.extra.items()}}
        self.extra = {}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, epoch)
            self.writer.flush()
        if self.mlflow is not None:  # MLflow keys take no ':'
            self.mlflow.log_metrics({k.replace(":", "-"): v for k, v in scalars.items()}, step=epoch)
        if self.wandb is not None:
            self.wandb.log({**scalars, "epoch": epoch})

    def log_plugins(self, shares: dict[str, float], model: nn.Module, plugin_lr: float | None,
                    epoch: int | None = None, capped: dict[str, float] | None = None) -> None:
        """Queue this epoch's plug-in figures, written with the epoch's other scalars; with `epoch`, also into the
        run folder's plugin_share.csv (models.attention.share.SHARE_CSV: the share per epoch, which compare.py
        charts). `capped`: {layer: fraction of the epoch's steps at which the share cap held it back}."""
        gates = gate_stats(model)
        for name, f in (capped or {}).items():
            self.extra[f"plugin/capped/{name}"] = f
        for name, s in shares.items():
            self.extra[f"plugin/share/{name}"] = s
        for name, (mean, mx) in gates.items():
            self.extra[f"plugin/gamma_abs_mean/{name}"] = mean
            self.extra[f"plugin/gamma_abs_max/{name}"] = mx
        if shares and epoch is not None:
            write_epoch_shares(self.save_dir / SHARE_CSV, epoch, shares, {k: v[0] for k, v in gates.items()})
        if plugin_lr is not None:
            self.extra["x/plugin_lr"] = plugin_lr

    def on_train_end(self, last, best, epoch, results) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.mlflow is not None:
            for f in (best, last):
                if f is not None and Path(f).is_file():
                    self.mlflow.log_artifact(str(f))
                    break
            self.mlflow.end_run()
        if self.wandb is not None:
            self.wandb.finish()
