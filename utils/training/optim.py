"""Optimisation pieces of YOLOv5's recipe: parameter groups, learning-rate lambdas, weight EMA, early stopping, and
the check that stops a diverged training.

    optimizer = smart_optimizer(model, "SGD", lr=0.01, momentum=0.937, decay=5e-4)
    scheduler = LambdaLR(optimizer, one_cycle(1, lrf, epochs) if cos_lr else linear_lr(lrf, epochs))
    ema = ModelEMA(model); ...; ema.update(model)
"""

from __future__ import annotations

import math
from collections.abc import Collection
from copy import deepcopy
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from utils.checkpoint import cast_state
from utils.checks import non_finite_tensors
from utils.errors import UserError
from utils.log import LOGGER, colorstr
from utils.torch_utils import de_parallel

__all__ = ["NBS", "OPTIMIZERS", "smart_optimizer", "param_groups", "one_cycle", "linear_lr", "accumulate_steps",
           "warmup", "ModelEMA", "EarlyStopping", "divergence"]

NBS = 64  # nominal batch size: gradients accumulate to about this many images per optimizer step
OPTIMIZERS = ("SGD", "Adam", "AdamW")
# every normalisation layer torch.nn defines (BatchNorm*, LayerNorm, GroupNorm, SyncBatchNorm, ...)
_NORMS = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))


def param_groups(model: nn.Module, exclude: Collection[nn.Parameter] = ()) -> tuple[list, list, list]:
    """(weights that decay, normalisation weights, biases): each parameter not in `exclude` in exactly one group."""
    decay, norm, bias = [], [], []
    skip = {id(p) for p in exclude}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in skip:
                continue
            if name == "bias":
                bias.append(p)
            elif name == "weight" and isinstance(module, _NORMS):
                norm.append(p)
            else:
                decay.append(p)
    return decay, norm, bias


def smart_optimizer(model: nn.Module, name: str = "SGD", lr: float = 0.01, momentum: float = 0.937,
                    decay: float = 5e-4, exclude: Collection[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """YOLOv5's optimizer: param_groups[0] biases (no decay), [1] weights (decay), [2] norm weights (no decay).

    The warmup ramps group 0 from `warmup_bias_lr`, so the order matters. `exclude`: parameters that another
    optimizer trains (utils.training.plugin_optim).
    """
    decay_w, norm_w, bias = param_groups(model, exclude)
    if name == "SGD":
        optimizer = torch.optim.SGD(bias, lr=lr, momentum=momentum, nesterov=True)
    elif name == "Adam":
        optimizer = torch.optim.Adam(bias, lr=lr, betas=(momentum, 0.999))
    elif name == "AdamW":
        optimizer = torch.optim.AdamW(bias, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        raise UserError(f"--optimizer {name!r} is not supported; choose one of {', '.join(OPTIMIZERS)}")
    optimizer.add_param_group({"params": decay_w, "weight_decay": decay})
    optimizer.add_param_group({"params": norm_w, "weight_decay": 0.0})
    LOGGER.info(f"{colorstr('optimizer:')} {type(optimizer).__name__}(lr={lr}) with parameter groups "
                f"{len(norm_w)} weight(decay=0.0), {len(decay_w)} weight(decay={decay}), {len(bias)} bias")
    return optimizer


def one_cycle(y1: float = 0.0, y2: float = 1.0, steps: int = 100) -> Callable[[float], float]:
    """Half-cosine ramp from y1 at 0 to y2 at `steps` (https://arxiv.org/pdf/1812.01187.pdf)."""
    return lambda x: ((1 - math.cos(x * math.pi / steps)) / 2) * (y2 - y1) + y1


def linear_lr(lrf: float, epochs: int) -> Callable[[float], float]:
    """YOLOv5's default schedule: 1 at epoch 0 falling linearly to lrf at `epochs`."""
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


def accumulate_steps(batch_size: int) -> int:
    """Batches whose gradients make one optimizer step after warmup: about NBS images."""
    return max(round(NBS / batch_size), 1)


def warmup(optimizer: torch.optim.Optimizer, ni: int, nw: int, batch_size: int, hyp, lf_epoch: float) -> float:
    """Gradient accumulation for batch `ni`; during the `nw` warmup batches it grows from 1 to about NBS images,
    and each group's lr (the bias group from hyp.warmup_bias_lr, the others from 0) ramps to initial_lr * lf_epoch
    and the momentum from hyp.warmup_momentum to hyp.momentum, linearly, as YOLOv5 does."""
    if ni > nw:
        return accumulate_steps(batch_size)
    xi = [0, nw]
    accumulate = max(1, float(np.interp(ni, xi, [1, NBS / batch_size]).round()))
    for j, x in enumerate(optimizer.param_groups):  # plain floats: checkpoints hold no NumPy objects
        x["lr"] = float(np.interp(ni, xi, [hyp.warmup_bias_lr if j == 0 else 0.0, x["initial_lr"] * lf_epoch]))
        if "momentum" in x:
            x["momentum"] = float(np.interp(ni, xi, [hyp.warmup_momentum, hyp.momentum]))
    return accumulate


class ModelEMA:
    """Exponential moving average of a model's state (weights and buffers), as YOLOv5 keeps it.

    The decay ramps up as d = decay * (1 - exp(-updates / tau)), so early updates follow the model closely.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = deepcopy(de_parallel(model)).eval()
        self.updates = updates
        self.decay_max, self.tau = decay, tau
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def decay(self, updates: int) -> float:
        return self.decay_max * (1 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay(self.updates)
        msd = de_parallel(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:  # integer buffers (BN num_batches_tracked) are not averaged
                v *= d
                v += (1 - d) * msd[k].detach()

    def load(self, ema_state: dict, updates: int) -> None:
        self.ema.load_state_dict(cast_state(ema_state))
        self.updates = int(updates)


class EarlyStopping:
    """Stop when fitness has not improved for `patience` epochs (0 or None: never)."""

    def __init__(self, patience: int | None = 30):
        self.best_fitness = 0.0
        self.best_epoch = 0
        self.patience = patience or float("inf")
        self.possible_stop = False  # the next epoch may be the last: validate it even under --noval

    def __call__(self, epoch: int, fitness: float) -> bool:
        if fitness >= self.best_fitness:  # >= so that a run stuck at 0 fitness in its first epochs goes on
            self.best_epoch = epoch
            self.best_fitness = fitness
        delta = epoch - self.best_epoch
        self.possible_stop = delta >= (self.patience - 1)
        stop = delta >= self.patience
        if stop:
            LOGGER.info(f"Stopping training early as no improvement observed in last {self.patience} epochs. "
                        f"Best results observed at epoch {self.best_epoch}, best model saved as best.pt.\n"
                        f"To update EarlyStopping(patience={self.patience}) pass a new patience value, "
                        f"i.e. `python train.py --patience 300` or use `--patience 0` to disable EarlyStopping.")
        return stop


def divergence(models: dict[str, nn.Module], epoch: int, results: tuple, lr0: float) -> str | None:
    """Why the training has diverged after `epoch` (NaN or inf in the weights of one of `models`, {what: model},
    e.g. the EMA and the trained model, or in the validation losses results[4:7]), or None. A diverged epoch
    writes no checkpoint: best.pt never holds non-finite weights."""
    for what, model in models.items():
        bad = non_finite_tensors(model)
        if bad:
            return (f"training diverged at epoch {epoch}: {len(bad)} of {len(model.state_dict())} weight tensors of "
                    f"the {what} model hold NaN or inf (first: {bad[0]}); lower lr0 (now {lr0:g}). No "
                    "checkpoint of this epoch was written")
    losses = [float(x) for x in results[4:7]]
    if not all(math.isfinite(x) for x in losses):
        return (f"training diverged at epoch {epoch}: validation losses box, obj, cls = {losses}; lower lr0 (now "
                f"{lr0:g}). No checkpoint of this epoch was written")
    return None
