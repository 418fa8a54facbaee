"""Optimisation settings of their own for plug-in layers inserted into a pretrained network.

A plug-in wrapped in `Residual` (x + gamma * block(x), gamma = 0) starts as the identity, so a transferred
model predicts exactly what its baseline predicts. Under YOLOv5's SGD the gate barely moves: its gradient is
the product of the block's output and the loss gradient, both small, and SGD steps in proportion to it
(benchmarks/README.md, "Plug-ins that learn"). AdamW steps by about its learning rate whatever the gradient's
scale, so the plug-in parameters get an AdamW of their own beside the SGD of the pretrained layers, as
mmengine's `paramwise_cfg` and detectron2 give new layers settings of their own.

    names = plugin_parameter_names(model, report)     # the parameters the checkpoint did not cover
    opt = plugin_optimizer(model, names, hyp)          # None when hyp.plugin_lr is 0 or nothing is new

hyp.plugin_lr = 0 turns this off: every parameter then trains with the recipe's optimizer, as in YOLOv5.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn as nn

from models.registry import inserts_dim, lookup
from utils.errors import UserError
from utils.hyp import Hyp
from utils.log import LOGGER, colorstr

__all__ = ["plugin_parameter_names", "plugin_optimizer", "plugin_warmup", "is_plugin_layer"]


def is_plugin_layer(layer: nn.Module) -> bool:
    """A top-level layer that is an attention plug-in: a Residual wrapper or a bare channel-preserving plug-in."""
    name = getattr(layer, "type", "")
    if name == "Residual":
        return True
    try:
        return lookup(name).channels is inserts_dim
    except KeyError:  # torch.nn layers such as nn.Upsample are not in the registry
        return False


def plugin_parameter_names(model: nn.Module, transferred: Collection[str] | None) -> list[str]:
    """Names of the parameters that get the plug-in optimizer.

    transferred: the model keys that received checkpoint tensors (TransferReport.mapping), or None for a
    model trained from scratch. Fine-tuning: every parameter the checkpoint did not cover, outside the Detect
    head (a fresh head for another class count trains with the recipe, as it does in the baseline). From
    scratch: the parameters of plug-in layers (is_plugin_layer).
    """
    layers = list(model.model)
    head = f"model.{len(layers) - 1}."
    if transferred is None:
        return [n for i, layer in enumerate(layers) if is_plugin_layer(layer)
                for n, _ in layer.named_parameters(prefix=f"model.{i}")]
    covered = set(transferred)
    return [n for n, _ in model.named_parameters() if n not in covered and not n.startswith(head)]


def plugin_optimizer(model: nn.Module, names: Collection[str], hyp: Hyp) -> torch.optim.Optimizer | None:
    """AdamW(lr=hyp.plugin_lr, weight_decay=hyp.plugin_weight_decay) over the named parameters; None when
    hyp.plugin_lr is 0 or `names` is empty. With hyp.plugin_block_lr < 1 the gates (Residual's gamma) form group 0
    at plugin_lr and the rest group 1 at plugin_lr * plugin_block_lr."""
    if hyp.plugin_lr <= 0 or not names:
        return None
    wanted = set(names)
    named = [(n, p) for n, p in model.named_parameters() if n in wanted]
    missing = wanted - {n for n, _ in model.named_parameters()}
    if missing:
        raise UserError(f"plug-in parameters {sorted(missing)[:5]} are not in the model")
    params = [p for _, p in named]
    if hyp.plugin_block_lr < 1:
        gates = [p for n, p in named if n.endswith(".gamma")]
        blocks = [p for n, p in named if not n.endswith(".gamma")]
        rates = ((gates, hyp.plugin_lr), (blocks, hyp.plugin_lr * hyp.plugin_block_lr))
        groups = [dict(params=g, lr=lr) for g, lr in rates if g]
    else:
        groups = [dict(params=params, lr=hyp.plugin_lr)]
    optimizer = torch.optim.AdamW(groups, lr=hyp.plugin_lr, betas=(0.9, 0.999), weight_decay=hyp.plugin_weight_decay)
    for g in optimizer.param_groups:
        g["initial_lr"] = g["lr"]  # what the epoch schedule scales, as LambdaLR keeps it
    n = sum(p.numel() for p in params)
    block = f", blocks at {hyp.plugin_block_lr:g}x" if hyp.plugin_block_lr < 1 else ""
    ramp = ", warmup ramp" if hyp.plugin_warmup > 0 else ""
    LOGGER.info(f"{colorstr('plug-in optimizer:')} AdamW(lr={hyp.plugin_lr}{block}{ramp}, weight_decay="
                f"{hyp.plugin_weight_decay}) for {len(params)} tensors ({n:,} parameters) the weights did not "
                f"cover; the other layers keep the recipe's optimizer")
    return optimizer


def plugin_warmup(optimizer: torch.optim.Optimizer | None, ni: int, nw: int, hyp: Hyp, lf_epoch: float) -> None:
    """With hyp.plugin_warmup, each plug-in group's lr during the `nw` warmup batches: initial_lr * lf_epoch *
    ni / nw, linear from 0 as the recipe's weight groups ramp; after warmup the epoch's lr stays as set."""
    if optimizer is None or hyp.plugin_warmup <= 0 or ni > nw:
        return
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * lf_epoch * min(1.0, ni / max(nw, 1))
