"""Experiment logs of a training run: TensorBoard event files in the run folder (when the tensorboard package
is installed; it is in requirements.txt), written through the training hooks of utils/callbacks.py.

Per epoch: the results.csv columns under YOLOv5's tags (train/box_loss ... metrics/mAP_0.5:0.95 ... x/lr0),
the plug-in learning rate (x/plugin_lr), each plug-in layer's share (plugin/share/model.20) and its gate
statistics (plugin/gamma_abs_mean/model.20, plugin/gamma_abs_max/model.20). Once, at the start: the model graph
where it traces. View with `tensorboard --logdir runs/train`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from utils.callbacks import Callbacks
from utils.log import LOGGER, colorstr
from utils.train_utils import RESULTS_KEYS

__all__ = ["TrainLoggers", "gate_stats"]


def gate_stats(model: nn.Module) -> dict[str, tuple[float, float]]:
    """{layer name: (mean |gamma|, max |gamma|)} of every Residual wrapper in `model`."""
    from models.common import Residual

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, Residual):
            g = m.gamma.detach().float().abs()
            out[name] = (float(g.mean()), float(g.max()))
    return out


class TrainLoggers:
    """Registers its writers on `callbacks`; `writer` is None when TensorBoard is not installed."""

    def __init__(self, save_dir: Path, callbacks: Callbacks, graph_imgsz: int | None = None):
        self.save_dir = Path(save_dir)
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a requirement; a trimmed install only loses the event files
            LOGGER.info(f"{colorstr('TensorBoard:')} not installed (pip install tensorboard); no event files")
            return
        self.writer = SummaryWriter(str(self.save_dir))
        LOGGER.info(f"{colorstr('TensorBoard:')} start with 'tensorboard --logdir {self.save_dir.parent}', "
                    f"view at http://localhost:6006/")
        self.graph_imgsz = graph_imgsz
        callbacks.register_action("on_train_start", "tensorboard", self.on_train_start)
        callbacks.register_action("on_fit_epoch_end", "tensorboard", self.on_fit_epoch_end)
        callbacks.register_action("on_train_end", "tensorboard", self.on_train_end)
        self.model: nn.Module | None = None
        self.extra: dict[str, float] = {}

    def set_model(self, model: nn.Module) -> None:
        self.model = model

    def on_train_start(self) -> None:
        if self.writer is None or self.model is None or not self.graph_imgsz:
            return
        from utils.torch_utils import de_parallel

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
        if self.writer is None:
            return
        for k, v in zip(RESULTS_KEYS, vals):
            self.writer.add_scalar(k, float(v), epoch)
        self.writer.add_scalar("metrics/fitness", float(fi), epoch)
        for k, v in self.extra.items():
            self.writer.add_scalar(k, float(v), epoch)
        self.extra = {}
        self.writer.flush()

    def log_plugins(self, shares: dict[str, float], model: nn.Module, plugin_lr: float | None) -> None:
        """Queue this epoch's plug-in figures; written with the epoch's other scalars."""
        for name, s in shares.items():
            self.extra[f"plugin/share/{name}"] = s
        for name, (mean, mx) in gate_stats(model).items():
            self.extra[f"plugin/gamma_abs_mean/{name}"] = mean
            self.extra[f"plugin/gamma_abs_max/{name}"] = mx
        if plugin_lr is not None:
            self.extra["x/plugin_lr"] = plugin_lr

    def on_train_end(self, last, best, epoch, results) -> None:
        if self.writer is not None:
            self.writer.close()
