"""Everything a training run needs before its first batch, built in one call and returned complete.

    setup, progress = build_setup(opt, hyp, device, info)

`TrainSetup` holds what stays fixed for the run (model, EMA, optimizers, schedule, loaders, loss); `Progress`
the few figures the loop moves on (epoch, best fitness, last optimizer step, class mAPs). On --resume both
are restored from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.optim import lr_scheduler

from models import resolve_weights
from models.yolo import Model
from utils import distributed as ddp
from utils.checkpoint import TrainingState, cast_state, load_checkpoint, training_state
from utils.checks import check_img_size
from utils.data.config import DataConfig, load_data_config
from utils.data.dataset import create_dataloader
from utils.errors import UserError
from utils.hyp import Hyp
from utils.log import LOGGER, colorstr
from utils.torch_utils import de_parallel
from utils.training.autoanchor import check_anchors
from utils.training.autobatch import autobatch
from utils.training.loss import ComputeLoss
from utils.training.optim import NBS, ModelEMA, accumulate_steps, linear_lr, one_cycle, smart_optimizer
from utils.training.options import TrainOptions, check_freeze
from utils.training.plugin_optim import plugin_optimizer, plugin_parameter_names
from utils.transfer import transfer_weights

__all__ = ["TrainSetup", "Progress", "build_setup", "build_optimizers", "loss_hyp", "channels_last_weights",
           "optimizer_step", "freeze_layers"]



@dataclass
class TrainSetup:
    """The fixed parts of one run, complete once build_setup returns."""

    data: DataConfig
    model: nn.Module  # wrapped in DistributedDataParallel in DDP runs
    ema: ModelEMA | None  # on the main process only
    optimizer: torch.optim.Optimizer
    plugin_optimizer: torch.optim.Optimizer | None  # AdamW for the plug-in layers (utils.training.plugin_optim)
    plugin_names: list[str]  # parameters the weights did not cover
    scheduler: lr_scheduler.LambdaLR
    lf: Callable[[float], float]  # the learning-rate factor of an epoch
    scaler: torch.amp.GradScaler
    compute_loss: ComputeLoss
    train_loader: Any
    dataset: Any  # the training LoadImagesAndLabels
    val_loader: Any  # on the main process only
    imgsz: int
    gs: int  # grid size: the largest stride, at least 32
    amp: bool
    batch_size: int  # total over the processes (AutoBatch resolved)

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer] + ([self.plugin_optimizer] if self.plugin_optimizer is not None else [])


@dataclass
class Progress:
    """What the loop moves on from epoch to epoch (and a checkpoint restores)."""

    start_epoch: int = 0
    best_fitness: float = 0.0
    last_opt_step: int = -1
    maps: np.ndarray | None = None  # per-class mAP50-95 of the latest validation (--image-weights)


def build_setup(opt: TrainOptions, hyp: Hyp, device: torch.device, info: ddp.DistInfo) -> tuple[TrainSetup, Progress]:
    """Data, model (from --cfg, a checkpoint's YAML, carried over by structure, or restored for --resume),
    optimizers and schedule, loaders, anchors, EMA, the loss with YOLOv5's gain scaling, and the DDP wrapper."""
    data = load_data_config(opt.data, single_cls=opt.single_cls)
    model, plugin_names, state = _build_model(opt, hyp, data, device, info.main)
    gs = max(int(model.stride.max()), 32)
    imgsz = check_img_size(opt.imgsz, gs, floor=gs * 2)
    amp = device.type == "cuda"
    batch_size = opt.batch_size
    if batch_size == -1:  # AutoBatch: sized to the CUDA device's memory
        batch_size = autobatch(model, imgsz, device, amp=amp)
    optimizer, plugin_opt = build_optimizers(model, plugin_names, hyp, opt.optimizer, batch_size)
    lf = one_cycle(1, hyp.lrf, opt.epochs) if opt.cos_lr else linear_lr(hyp.lrf, opt.epochs)
    scheduler = lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    progress = _restore(opt, state, optimizer, plugin_opt, scaler, amp) if state else Progress()
    train_loader, val_loader, dataset = _build_loaders(opt, hyp, data, imgsz, gs, batch_size, info)
    if info.main and not opt.resume:
        if not opt.noautoanchor:
            check_anchors(dataset, model=model, thr=hyp.anchor_t, imgsz=imgsz)
        model.half().float()  # pre-reduce anchor precision, as YOLOv5 does
    if device.type == "cpu":
        channels_last_weights(model)
    ema = None
    if info.main:
        ema = ModelEMA(model)
        if state and state.ema:
            ema.load(state.ema, state.updates)
    compute_loss = ComputeLoss(model, loss_hyp(hyp, model, data.nc, imgsz, opt.label_smoothing))
    model = _sync_bn(opt, model, device, info)  # after the EMA copy, as YOLOv5 does: the EMA keeps BatchNorm
    if info.distributed:
        ids = [info.local_rank] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)
    setup = TrainSetup(data, model, ema, optimizer, plugin_opt, plugin_names, scheduler, lf, scaler, compute_loss,
                       train_loader, dataset, val_loader, imgsz, gs, amp, batch_size)
    return setup, progress


def build_optimizers(model: nn.Module, plugin_names: list[str], hyp: Hyp, name: str = "SGD",
                     batch_size: int = 16) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """The recipe's optimizer (weight decay scaled to the accumulated batch) and, when hyp.plugin_lr > 0, AdamW
    for the plug-in parameters `plugin_names`, which the recipe's optimizer then leaves out."""
    weight_decay = hyp.weight_decay * batch_size * accumulate_steps(batch_size) / NBS
    plugin_opt = plugin_optimizer(model, plugin_names, hyp)
    own = set(plugin_names) if plugin_opt else set()
    optimizer = smart_optimizer(model, name, hyp.lr0, hyp.momentum, weight_decay,
                                exclude=[p for n, p in model.named_parameters() if n in own])
    return optimizer, plugin_opt


def channels_last_weights(model: nn.Module) -> None:
    """4-D weights in NHWC memory order, in place (the optimizers keep the same Parameter objects): oneDNN
    convolutions on the CPU run 20-30% faster so."""
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)


def optimizer_step(optimizers: list[torch.optim.Optimizer], scaler: torch.amp.GradScaler, model: nn.Module,
                   ema: ModelEMA | None = None, before_zero_grad: Callable[[], None] | None = None,
                   after_step: Callable[[], object] | None = None) -> None:
    """One step of every optimizer on the accumulated gradients: unscale (AMP), clip the gradient norm at 10,
    step, `after_step` (the plug-in share cap), zero the gradients, update the EMA."""
    for o in optimizers:
        scaler.unscale_(o)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
    for o in optimizers:
        scaler.step(o)
    scaler.update()
    if after_step is not None:
        after_step()
    if before_zero_grad is not None:
        before_zero_grad()
    for o in optimizers:
        o.zero_grad()
    if ema is not None:
        ema.update(model)


def loss_hyp(hyp: Hyp, model: nn.Module, nc: int, imgsz: int, label_smoothing: float = 0.0) -> Hyp:
    """The loss gains as YOLOv5 scales them: tuned for 3 detection levels, 80 classes and 640 pixels."""
    nl = de_parallel(model).model[-1].nl
    return replace(hyp, box=hyp.box * 3 / nl, cls=hyp.cls * nc / 80 * 3 / nl,
                   obj=hyp.obj * (imgsz / 640) ** 2 * 3 / nl, label_smoothing=label_smoothing)


def _build_model(opt: TrainOptions, hyp: Hyp, data: DataConfig, device: torch.device,
                 verbose: bool) -> tuple[nn.Module, list[str], TrainingState | None]:
    """(model, plug-in parameter names, the training state to restore for --resume or None)."""
    weights = str(opt.weights or "")
    anchors = round(hyp.anchors) if hyp.anchors else None
    state = None
    if weights and not weights.endswith(".pt"):
        what = "is not a .pt checkpoint" if Path(weights).exists() else "not found"
        raise UserError(f"--weights {weights!r}: {what}; give a .pt file (e.g. yolov5n.pt) or '' to train "
                        f"from scratch with --cfg")
    if weights.endswith(".pt"):
        path = resolve_weights(weights)
        ckpt = load_checkpoint(path)
        model = Model(opt.cfg or ckpt["yaml"], ch=3, nc=data.nc, anchors=anchors, verbose=verbose).to(device)
        if opt.resume:
            state = training_state(ckpt)
            if state is None:
                raise UserError(f"{opt.weights}: training is finished (no optimizer state in the checkpoint); "
                                f"nothing to resume. Start a new run: python train.py --weights {opt.weights}")
            model.load_state_dict(cast_state(state.model))
            plugin_names = state.plugin_params
        else:
            # anchors come from the checkpoint (autoanchor may have evolved them) unless hyp or --cfg set others
            own = anchors or (opt.cfg and model.yaml["anchors"] != ckpt["yaml"].get("anchors"))
            report = transfer_weights(model, ckpt, exclude=("anchors",) if own else ())
            LOGGER.info(report.summary(path.name))
            plugin_names = plugin_parameter_names(model, report.mapping)
    elif opt.cfg:
        model = Model(opt.cfg, ch=3, nc=data.nc, anchors=anchors, verbose=verbose).to(device)
        plugin_names = plugin_parameter_names(model, None)
    else:
        raise UserError("nothing to train: give --weights (a .pt file, e.g. yolov5n.pt) or --cfg (e.g. yolov5n.yaml)")
    model.names = list(data.names)
    check_freeze(opt.freeze, len(model.model))
    freeze_layers(model, opt.freeze)
    return model, plugin_names, state


def _restore(opt: TrainOptions, state: TrainingState, optimizer, plugin_opt, scaler, amp: bool) -> Progress:
    """--resume: the optimizers' and scaler's state and the loop's progress from the checkpoint."""
    optimizer.load_state_dict(state.optimizer)
    if plugin_opt is not None:
        plugin_opt.load_state_dict(state.plugin_optimizer)
    if state.scaler and amp:
        scaler.load_state_dict(state.scaler)
    progress = Progress(start_epoch=state.epoch + 1, best_fitness=state.best_fitness,
                        last_opt_step=state.last_opt_step)
    LOGGER.info(f"Resuming training from {opt.weights} from epoch {progress.start_epoch} to {opt.epochs} total epochs")
    return progress


def _sync_bn(opt: TrainOptions, model: nn.Module, device: torch.device, info: ddp.DistInfo) -> nn.Module:
    """--sync-bn: SyncBatchNorm for DDP runs on CUDA (converted before the DDP wrapper is put on)."""
    if opt.sync_bn and info.distributed:
        if device.type == "cuda":
            LOGGER.info("Using SyncBatchNorm()")
            return nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
        LOGGER.warning("WARNING: --sync-bn needs CUDA (SyncBatchNorm has no CPU kernels); ignored")
    elif opt.sync_bn:
        LOGGER.warning("WARNING: --sync-bn applies to DDP runs (torchrun) only; ignored")
    return model


def _build_loaders(opt: TrainOptions, hyp: Hyp, data: DataConfig, imgsz: int, gs: int, batch_size: int,
                   info: ddp.DistInfo) -> tuple[Any, Any, Any]:
    """(train loader, val loader on the main process or None, the training dataset)."""
    ws = info.world_size
    if batch_size % ws:
        raise UserError(f"--batch-size {batch_size} must be a multiple of the {ws} processes of the DDP run")
    train_loader, dataset = create_dataloader(
        data.train, imgsz, batch_size // ws, gs, opt.single_cls, hyp=hyp, augment=True,
        cache=None if opt.cache == "val" else opt.cache, rect=opt.rect, rank=info.local_rank,
        workers=opt.workers, prefix=colorstr("train: "), shuffle=True, seed=opt.seed, nc=data.nc)
    val_loader = None
    if info.main:
        val_loader = create_dataloader(
            data.val, imgsz, batch_size // ws * 2, gs, opt.single_cls, hyp=hyp,
            cache=None if opt.noval else opt.cache, rect=True, rank=-1, workers=opt.workers * 2, pad=0.5,
            prefix=colorstr("val: "), nc=data.nc)[0]
    return train_loader, val_loader, dataset


def freeze_layers(model: nn.Module, freeze: list[int]) -> list[str]:
    """--freeze: one number N freezes layers 0..N-1, several numbers freeze those layers. Returns the frozen names."""
    prefixes = [f"model.{x}." for x in (freeze if len(freeze) > 1 else range(freeze[0]))]
    frozen = []
    for k, v in model.named_parameters():
        v.requires_grad = True
        if any(x in k for x in prefixes):
            LOGGER.info(f"freezing {k}")
            v.requires_grad = False
            frozen.append(k)
    return frozen
