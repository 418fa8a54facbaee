"""Train a YOLOv5 detector, with YOLOv5's recipe, flags and run folders.

Usage:
    python train.py --data coco128.yaml --weights yolov5n.pt --img 640                   # fine-tune
    python train.py --data coco128.yaml --weights '' --cfg yolov5n.yaml                  # from scratch
    python train.py --weights yolov5n.pt --cfg yolov5n_biformer.yaml                     # into a new neck
    python train.py --resume                                                             # latest last.pt
    torchrun --nproc_per_node 2 train.py --device 0,1 --batch-size 64 ...                # DDP

The loop is YOLOv5's: accumulation to a nominal batch of 64, warmup with the bias learning-rate ramp, a
linear or cosine schedule stepped per epoch, EMA of the weights, AMP on CUDA, validation of the EMA each
epoch, best.pt by fitness 0.1 * mAP50 + 0.9 * mAP50-95, early stopping and a final validation of best.pt.
Each epoch reseeds every random stream from (--seed, rank, epoch), so a resumed run repeats what the
uninterrupted run would have done.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.optim import lr_scheduler
from tqdm import tqdm

from models import resolve_weights
from models.yolo import Model
from utils import distributed as ddp
from utils.callbacks import Callbacks
from utils.checkpoint import cast_state, load_checkpoint
from utils.hyp import Hyp, load_hyp
from utils.inference import MAX_IMG_SIZE, apply_options, check_img_size
from utils.log import LOGGER, colorstr, setup_logging
from utils.loss import ComputeLoss
from utils.optim import OPTIMIZERS, EarlyStopping, ModelEMA, linear_lr, one_cycle, smart_optimizer
from utils.plugin_optim import plugin_optimizer, plugin_parameter_names
from utils.paths import ROOT, increment_path
from utils.torch_utils import de_parallel, select_device
from utils.train_utils import Checkpoints, freeze_layers, init_seeds, latest_run, sample_image_indices, seed_epoch
from utils.errors import UserError

__all__ = ["parse_opt", "run", "main", "train"]

NBS = 64  # nominal batch size: gradients accumulate to about this many images per optimizer step
TQDM_BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"


@dataclass
class _Run:
    """What one training run holds between its steps."""

    opt: argparse.Namespace
    hyp: Hyp  # as given (saved in checkpoints)
    device: torch.device
    info: ddp.DistInfo
    save_dir: Path
    data: Any = None  # DataConfig
    model: nn.Module | None = None
    ema: ModelEMA | None = None
    optimizer: torch.optim.Optimizer | None = None
    plugin_names: list[str] | None = None  # parameters the weights did not cover (utils.plugin_optim)
    plugin_optimizer: torch.optim.Optimizer | None = None  # AdamW for those, beside the recipe's optimizer
    scheduler: Any = None
    lf: Any = None
    compute_loss: ComputeLoss | None = None
    train_hyp: Hyp | None = None  # hyp with the gains scaled to the levels, classes and image size
    train_loader: Any = None
    val_loader: Any = None
    dataset: Any = None
    imgsz: int = 640
    gs: int = 32
    nb: int = 0
    start_epoch: int = 0
    best_fitness: float = 0.0
    last_opt_step: int = -1
    amp: bool = False
    scaler: Any = None
    callbacks: Callbacks | None = None  # the user's hooks (utils.callbacks) and the loggers'
    maps: Any = None  # per-class mAP50-95 of the latest validation (--image-weights)
    loggers: Any = None  # utils.loggers.TrainLoggers on the main process


def _hook(r: _Run, name: str, *args, **kwargs) -> None:
    if r.info.main and r.callbacks is not None:
        r.callbacks.run(name, *args, **kwargs)


def train(hyp: Hyp, opt: argparse.Namespace, device: torch.device, callbacks: Callbacks | None = None) -> tuple:
    """Train as `opt` says; returns the final validation's (P, R, mAP50, mAP50-95, box, obj, cls losses).
    `callbacks` (utils.callbacks.Callbacks) are called at YOLOv5's hook points on the main process."""
    r = _Run(opt, hyp, device, ddp.dist_info(), Path(opt.save_dir), callbacks=callbacks or Callbacks())
    main_rank = r.info.main
    _hook(r, "on_pretrain_routine_start")
    w = r.save_dir / "weights"
    if main_rank:
        LOGGER.info(colorstr("hyperparameters: ") + ", ".join(f"{k}={v}" for k, v in hyp.to_dict().items()))
    init_seeds(opt.seed + 1 + r.info.rank, deterministic=True)
    from utils.data_config import load_data_config

    r.data = load_data_config(opt.data, single_cls=opt.single_cls)
    ckpt = _build_model(r)
    if opt.batch_size == -1:  # AutoBatch: sized to the CUDA device's memory
        from utils.autobatch import autobatch

        opt.batch_size = autobatch(r.model, r.imgsz, r.device, amp=r.device.type == "cuda")
    _build_optimizer(r, ckpt)
    _build_data(r)
    ck = None
    if main_rank:  # the run folder is made once the model and the data are known to work
        w.mkdir(parents=True, exist_ok=True)
        _yaml_save(r.save_dir / "hyp.yaml", hyp.to_dict())
        _yaml_save(r.save_dir / "opt.yaml", vars(opt))
        ck = Checkpoints(w, r.save_dir / "results.csv")
        ck.check_writable(3 * sum(p.numel() * p.element_size() for p in r.model.parameters()))
        from utils.loggers import TrainLoggers

        r.loggers = TrainLoggers(r.save_dir, r.callbacks, graph_imgsz=r.imgsz, hyp=hyp.to_dict())
    _finish_model(r, ckpt)
    del ckpt
    if r.loggers is not None:
        r.loggers.set_model(r.model)
    _hook(r, "on_pretrain_routine_end", r.dataset.labels, list(r.data.names))
    return _fit(r, ck)


def _yaml_save(path: Path, d: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in d.items()}, f, sort_keys=False)


def _build_model(r: _Run) -> dict | None:
    """The model: from --cfg, from the checkpoint's YAML, carried over by structure, or restored for --resume."""
    opt, nc = r.opt, r.data.nc
    weights = str(opt.weights or "")
    anchors = round(r.hyp.anchors) if r.hyp.anchors else None
    ckpt = None
    if weights and not weights.endswith(".pt"):
        what = "is not a .pt checkpoint" if Path(weights).exists() else "not found"
        raise UserError(f"--weights {weights!r}: {what}; give a .pt file (e.g. yolov5n.pt) or '' to train "
                         f"from scratch with --cfg")
    if weights.endswith(".pt"):
        path = resolve_weights(weights)
        ckpt = load_checkpoint(path)
        r.model = Model(opt.cfg or ckpt["yaml"], ch=3, nc=nc, anchors=anchors, verbose=r.info.main).to(r.device)
        if opt.resume:
            r.model.load_state_dict(cast_state(ckpt["model"]))
            r.plugin_names = list(ckpt.get("plugin_params") or [])
        else:
            from utils.transfer import transfer_weights

            # anchors come from the checkpoint (autoanchor may have evolved them) unless hyp or --cfg set others
            own = anchors or (opt.cfg and r.model.yaml["anchors"] != ckpt["yaml"].get("anchors"))
            report = transfer_weights(r.model, ckpt, exclude=("anchors",) if own else ())
            LOGGER.info(report.summary(path.name))
            r.plugin_names = plugin_parameter_names(r.model, report.mapping)
    elif opt.cfg:
        r.model = Model(opt.cfg, ch=3, nc=nc, anchors=anchors, verbose=r.info.main).to(r.device)
        r.plugin_names = plugin_parameter_names(r.model, None)
    else:
        raise UserError("nothing to train: give --weights (a .pt file, e.g. yolov5n.pt) or --cfg (e.g. yolov5n.yaml)")
    r.model.names = list(r.data.names)
    r.amp = r.device.type == "cuda"
    _check_freeze(opt.freeze, len(r.model.model))
    freeze_layers(r.model, opt.freeze)
    r.gs = max(int(r.model.stride.max()), 32)
    r.imgsz = check_img_size(opt.imgsz, r.gs, floor=r.gs * 2)
    return ckpt


def _check_freeze(freeze: list[int], n_layers: int) -> None:
    """--freeze N (layers 0..N-1) must leave the Detect head trainable; --freeze i j ... must name layers."""
    if len(freeze) == 1 and not 0 <= freeze[0] < n_layers:
        raise UserError(f"--freeze {freeze[0]}: freezes layers 0..N-1; valid N: 0..{n_layers - 1} (the model has "
                         f"{n_layers} layers and its last, the Detect head, must train)")
    if len(freeze) > 1 and not all(0 <= x < n_layers - 1 for x in freeze):
        raise UserError(f"--freeze {' '.join(map(str, freeze))}: layer indices must be in 0..{n_layers - 2}")


def _check_options(opt: argparse.Namespace) -> None:
    """Options that cannot make a run, found before any work (and before the run folder exists)."""
    for k, lo in (("epochs", 1), ("batch_size", 1), ("workers", 0), ("imgsz", 32)):
        v = getattr(opt, k)
        if k == "batch_size" and v == -1:  # AutoBatch
            continue
        if not isinstance(v, int) or v < lo:
            raise UserError(f"--{k.replace('_', '-')} {v!r}: must be an integer >= {lo}")
    if opt.imgsz > MAX_IMG_SIZE:
        raise UserError(f"--imgsz {opt.imgsz}: at most {MAX_IMG_SIZE} pixels")
    if ddp.dist_info().distributed:
        if opt.batch_size == -1:
            raise UserError("--batch-size -1 (AutoBatch) sizes one device: give a batch size for DDP runs")
        if getattr(opt, "image_weights", False):
            raise UserError("--image-weights is not supported in DDP runs (the processes would draw different "
                            "image sets)")


def _build_optimizer(r: _Run, ckpt: dict | None) -> None:
    opt, hyp = r.opt, r.hyp
    accumulate = max(round(NBS / opt.batch_size), 1)
    weight_decay = hyp.weight_decay * opt.batch_size * accumulate / NBS
    r.plugin_optimizer = plugin_optimizer(r.model, r.plugin_names or [], hyp)
    own = {n for n in r.plugin_names or []} if r.plugin_optimizer else set()
    r.optimizer = smart_optimizer(r.model, opt.optimizer, hyp.lr0, hyp.momentum, weight_decay,
                                  exclude=[p for n, p in r.model.named_parameters() if n in own])
    r.lf = one_cycle(1, hyp.lrf, opt.epochs) if opt.cos_lr else linear_lr(hyp.lrf, opt.epochs)
    r.scheduler = lr_scheduler.LambdaLR(r.optimizer, lr_lambda=r.lf)
    r.scaler = torch.amp.GradScaler("cuda", enabled=r.amp)
    if opt.resume:
        if not ckpt or ckpt.get("optimizer") is None:
            raise UserError(f"{opt.weights}: training is finished (no optimizer state in the checkpoint); "
                             f"nothing to resume. Start a new run: python train.py --weights {opt.weights}")
        r.optimizer.load_state_dict(ckpt["optimizer"])
        if r.plugin_optimizer is not None:
            r.plugin_optimizer.load_state_dict(ckpt["plugin_optimizer"])
        r.best_fitness = float(ckpt.get("best_fitness") or 0.0)
        r.start_epoch = int(ckpt["epoch"]) + 1
        r.last_opt_step = int(ckpt.get("last_opt_step", -1))
        if ckpt.get("scaler") and r.amp:
            r.scaler.load_state_dict(ckpt["scaler"])
        LOGGER.info(f"Resuming training from {opt.weights} from epoch {r.start_epoch} to {opt.epochs} total epochs")


def _build_data(r: _Run) -> None:
    from utils.dataset import create_dataloader

    opt, ws = r.opt, r.info.world_size
    if opt.batch_size % ws:
        raise UserError(f"--batch-size {opt.batch_size} must be a multiple of the {ws} processes of the DDP run")
    if opt.sync_bn and r.info.distributed:
        if r.device.type == "cuda":
            r.model = nn.SyncBatchNorm.convert_sync_batchnorm(r.model).to(r.device)
            LOGGER.info("Using SyncBatchNorm()")
        else:
            LOGGER.warning("WARNING: --sync-bn needs CUDA (SyncBatchNorm has no CPU kernels); ignored")
    elif opt.sync_bn:
        LOGGER.warning("WARNING: --sync-bn applies to DDP runs (torchrun) only; ignored")
    r.train_loader, r.dataset = create_dataloader(
        r.data.train, r.imgsz, opt.batch_size // ws, r.gs, opt.single_cls, hyp=r.hyp, augment=True,
        cache=None if opt.cache == "val" else opt.cache, rect=opt.rect, rank=r.info.local_rank,
        workers=opt.workers, prefix=colorstr("train: "), shuffle=True, seed=opt.seed, nc=r.data.nc)
    r.nb = len(r.train_loader)
    if r.info.main:
        r.val_loader = create_dataloader(
            r.data.val, r.imgsz, opt.batch_size // ws * 2, r.gs, opt.single_cls, hyp=r.hyp,
            cache=None if opt.noval else opt.cache, rect=True, rank=-1, workers=opt.workers * 2, pad=0.5,
            prefix=colorstr("val: "), nc=r.data.nc)[0]


def _finish_model(r: _Run, ckpt: dict | None) -> None:
    """Anchors, label plots, EMA, the loss with YOLOv5's gain scaling, and the DDP wrapper."""
    opt = r.opt
    if r.info.main and not opt.resume:
        if not opt.noautoanchor:
            from utils.autoanchor import check_anchors

            check_anchors(r.dataset, model=r.model, thr=r.hyp.anchor_t, imgsz=r.imgsz)
        r.model.half().float()  # pre-reduce anchor precision, as YOLOv5 does
        if not opt.noplots:
            from utils.train_plots import plot_labels

            from utils.train_plots import plot_labels_correlogram

            plot_labels(r.dataset.labels, r.data.names, r.save_dir)
            plot_labels_correlogram(r.dataset.labels, r.save_dir)
    if r.device.type == "cpu":  # oneDNN convolutions run 20-30% faster on NHWC tensors
        for p in r.model.parameters():
            if p.dim() == 4:  # in place, so the optimizer keeps the same Parameter objects
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    if r.info.main:
        r.ema = ModelEMA(r.model)
        if opt.resume and ckpt.get("ema"):
            r.ema.load(ckpt["ema"], ckpt.get("updates") or 0)
    nl = de_parallel(r.model).model[-1].nl  # detection levels: the gains were tuned for 3
    hyp = replace(r.hyp, box=r.hyp.box * 3 / nl, cls=r.hyp.cls * r.data.nc / 80 * 3 / nl,
                  obj=r.hyp.obj * (r.imgsz / 640) ** 2 * 3 / nl, label_smoothing=opt.label_smoothing)
    r.compute_loss = ComputeLoss(r.model, hyp)
    r.train_hyp = hyp
    if r.info.distributed:
        ids = [r.info.local_rank] if r.device.type == "cuda" else None
        r.model = nn.parallel.DistributedDataParallel(r.model, device_ids=ids, output_device=ids[0] if ids else None)


def _fit(r: _Run, ck: Checkpoints | None) -> tuple:
    opt = r.opt
    nw = max(round(r.hyp.warmup_epochs * r.nb), 100)  # warmup iterations
    r.scheduler.last_epoch = r.start_epoch - 1  # YOLOv5's: after warmup, epoch e runs at lf(e - 1)
    stopper, stop = EarlyStopping(patience=opt.patience), False
    results = (0, 0, 0, 0, 0, 0, 0)
    if ck:
        ck.results.truncate(r.start_epoch)
    LOGGER.info(f"Image sizes {r.imgsz} train, {r.imgsz} val\n"
                f"Using {r.train_loader.num_workers * r.info.world_size} dataloader workers\n"
                f"Logging results to {colorstr('bold', str(r.save_dir))}\n"
                f"Starting training for {opt.epochs} epochs...")
    t0, epoch = time.time(), r.start_epoch
    _hook(r, "on_train_start")
    for epoch in range(r.start_epoch, opt.epochs):
        _hook(r, "on_train_epoch_start", epoch)
        if r.plugin_optimizer is not None:  # the recipe's schedule, without the warmup ramp
            for g in r.plugin_optimizer.param_groups:
                g["lr"] = g["initial_lr"] * r.lf(epoch)
        mloss = _train_epoch(r, epoch, nw)
        lr = [x["lr"] for x in r.optimizer.param_groups]  # for the log
        r.scheduler.step()
        _hook(r, "on_train_epoch_end", epoch=epoch)
        if r.info.main:
            final_epoch = epoch + 1 == opt.epochs or stopper.possible_stop
            if not opt.noval or final_epoch:
                results, r.maps = _validate(r, r.ema.ema, plots=False)
            _log_plugin_share(r, r.ema.ema, n_images=16)
            if r.loggers is not None:
                r.loggers.log_plugins(getattr(opt, "plugin_share", None) or {}, r.ema.ema,
                                      r.plugin_optimizer.param_groups[0]["lr"] if r.plugin_optimizer else None)
            fi = _fitness(results)
            stop = stopper(epoch=epoch, fitness=fi)
            r.best_fitness = max(r.best_fitness, fi)
            if not opt.nosave or final_epoch:
                ck.save(_checkpoint(r, epoch), is_best=r.best_fitness == fi, period=opt.save_period, epoch=epoch)
                _hook(r, "on_model_save", ck.last, epoch, final_epoch, r.best_fitness, fi)
            vals = [float(x) for x in list(mloss) + list(results) + lr]
            ck.results.append(epoch, vals)
            _hook(r, "on_fit_epoch_end", vals, epoch, r.best_fitness, fi)
            stop = stop or r.callbacks.stop_training
        stop = ddp.broadcast_object(stop)
        if stop:
            break
    if r.info.main:
        LOGGER.info(f"\n{epoch - r.start_epoch + 1} epochs completed in {(time.time() - t0) / 3600:.3f} hours.")
        results = _final(r, ck)
        _hook(r, "on_train_end", ck.last, ck.best, epoch, results)
    _hook(r, "teardown")
    return results


def _fitness(results) -> float:
    from utils.metrics import fitness

    return float(fitness(np.array(results, dtype=np.float64).reshape(1, -1))[0])


def _train_epoch(r: _Run, epoch: int, nw: int) -> torch.Tensor:
    opt, model, device = r.opt, r.model, r.device
    model.train()
    seed_epoch(r.train_loader, opt.seed, r.info.rank, epoch)
    if opt.image_weights:  # draw this epoch's images by class weight and (1 - class mAP)^2
        maps = r.maps if r.maps is not None else np.zeros(r.data.nc)
        r.dataset.indices = sample_image_indices(r.dataset.labels, r.data.nc, maps, opt.seed, epoch)
    mloss = torch.zeros(3, device=device)
    LOGGER.info(("\n" + "%11s" * 7) % ("Epoch", "GPU_mem", "box_loss", "obj_loss", "cls_loss", "Instances", "Size"))
    pbar = enumerate(r.train_loader)
    if r.info.main:
        pbar = tqdm(pbar, total=r.nb, bar_format=TQDM_BAR_FORMAT)
    r.optimizer.zero_grad()
    if r.plugin_optimizer is not None:
        r.plugin_optimizer.zero_grad()
    for i, (imgs, targets, paths, _) in pbar:
        ni = i + r.nb * epoch  # integrated batches since the start of training
        _hook(r, "on_train_batch_start")
        imgs = imgs.to(device, non_blocking=True).float() / 255
        if device.type == "cpu":
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        accumulate = _warmup(r, ni, nw, epoch)
        if opt.multi_scale:
            imgs = _rescale(imgs, r.imgsz, r.gs)
        with torch.autocast(device.type, enabled=r.amp):
            pred = model(imgs)
            loss, loss_items = r.compute_loss(pred, targets.to(device))
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch}, batch {i}: box, obj, cls = {loss_items.tolist()}; "
                f"images: {list(paths)}")
        if r.info.distributed:
            loss *= r.info.world_size  # DDP averages gradients over the processes
        r.scaler.scale(loss).backward()
        if ni - r.last_opt_step >= accumulate:
            _optimizer_step(r)
            r.last_opt_step = ni
        if r.info.main:
            mloss = (mloss * i + loss_items) / (i + 1)
            mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
            pbar.set_description(("%11s" * 2 + "%11.4g" * 5) % (
                f"{epoch}/{opt.epochs - 1}", mem, *mloss, targets.shape[0], imgs.shape[-1]))
            if not opt.noplots and ni < 3:
                from utils.plots import plot_images

                plot_images(imgs, targets, paths, r.save_dir / f"train_batch{ni}.jpg", names=r.data.names)
            _hook(r, "on_train_batch_end", model, ni, imgs, targets, paths, [float(x) for x in mloss])
    return mloss


def _warmup(r: _Run, ni: int, nw: int, epoch: int) -> float:
    """Accumulation for batch `ni`; during warmup also ramp lr (bias from warmup_bias_lr, others from 0) and
    momentum (from warmup_momentum) linearly to their scheduled values."""
    if ni > nw:
        return max(round(NBS / r.opt.batch_size), 1)
    xi, hyp = [0, nw], r.hyp
    accumulate = max(1, float(np.interp(ni, xi, [1, NBS / r.opt.batch_size]).round()))
    for j, x in enumerate(r.optimizer.param_groups):  # plain floats: checkpoints hold no NumPy objects
        x["lr"] = float(np.interp(ni, xi, [hyp.warmup_bias_lr if j == 0 else 0.0, x["initial_lr"] * r.lf(epoch)]))
        if "momentum" in x:
            x["momentum"] = float(np.interp(ni, xi, [hyp.warmup_momentum, hyp.momentum]))
    return accumulate


def _rescale(imgs: torch.Tensor, imgsz: int, gs: int) -> torch.Tensor:
    """--multi-scale: a random size in 0.5-1.5 x imgsz, a multiple of the stride, for the whole batch."""
    sz = random.randrange(int(imgsz * 0.5), int(imgsz * 1.5) + gs) // gs * gs
    sf = sz / max(imgs.shape[2:])
    if sf != 1:
        ns = [math.ceil(x * sf / gs) * gs for x in imgs.shape[2:]]
        imgs = nn.functional.interpolate(imgs, size=ns, mode="bilinear", align_corners=False)
    return imgs


def _optimizer_step(r: _Run) -> None:
    optimizers = [r.optimizer] + ([r.plugin_optimizer] if r.plugin_optimizer is not None else [])
    for o in optimizers:
        r.scaler.unscale_(o)
    torch.nn.utils.clip_grad_norm_(r.model.parameters(), max_norm=10.0)
    for o in optimizers:
        r.scaler.step(o)
    r.scaler.update()
    _hook(r, "on_before_zero_grad")
    for o in optimizers:
        o.zero_grad()
    if r.ema:
        r.ema.update(r.model)


def _validate(r: _Run, model: nn.Module, plots: bool, **kw) -> tuple:
    import val as validate

    results, maps, _ = validate.run(
        r.opt.data, batch_size=r.opt.batch_size // r.info.world_size * 2, imgsz=r.imgsz, half=r.amp, model=model,
        single_cls=r.opt.single_cls, dataloader=r.val_loader, save_dir=r.save_dir, plots=plots,
        compute_loss=r.compute_loss, **kw)
    return tuple(float(x) for x in results), maps


def _checkpoint(r: _Run, epoch: int) -> dict:
    """The training state of the end of `epoch`, full precision, so that --resume continues exactly."""
    model = de_parallel(r.model)
    return {
        "model": model.state_dict(), "ema": r.ema.ema.state_dict(), "updates": r.ema.updates,
        "yaml": model.yaml, "names": list(r.data.names), "epoch": epoch, "best_fitness": r.best_fitness,
        "optimizer": r.optimizer.state_dict(), "last_opt_step": r.last_opt_step,
        "plugin_optimizer": r.plugin_optimizer.state_dict() if r.plugin_optimizer is not None else None,
        "plugin_params": list(r.plugin_names or []),
        "scaler": r.scaler.state_dict() if r.amp else None,
        "opt": {k: str(v) if isinstance(v, Path) else v for k, v in vars(r.opt).items()},
        "hyp": r.hyp.to_dict(), "date": datetime.now().isoformat(),
    }


def _final(r: _Run, ck: Checkpoints) -> tuple:
    """Strip the optimizer from last.pt and best.pt, validate best.pt with plots, draw results.png."""
    from models import load_model

    results = None
    for f in (ck.last, ck.best):
        if f.exists():
            ck.strip(f)
            if f is ck.best:
                LOGGER.info(f"\nValidating {f}...")
                model = load_model(f, r.device, fuse=True)
                model = model.half() if r.amp else model
                is_coco = r.data.yaml_file is not None and Path(r.data.yaml_file).name == "coco.yaml"
                results, _ = _validate(r, model, plots=not r.opt.noplots, iou_thres=0.65 if is_coco else 0.60,
                                       verbose=True, save_json=is_coco)
                _log_plugin_share(r, model)
    if not r.opt.noplots:
        from utils.train_plots import plot_results

        plot_results(ck.results.file)
    LOGGER.info(f"Results saved to {colorstr('bold', str(r.save_dir))}")
    return results if results is not None else (0, 0, 0, 0, 0, 0, 0)


def _log_plugin_share(r: _Run, model: nn.Module, n_images: int = 32) -> None:
    """For models with Residual-wrapped plug-ins: how far training has switched them on (utils.plugin_share).
    The figures of the latest call are kept in opt.plugin_share ({layer: share})."""
    from models.common import Residual
    from utils.plugin_share import first_images, plugin_share, share_line

    if r.val_loader is not None and any(isinstance(m, Residual) for m in model.modules()):
        dtype = next(model.parameters()).dtype
        batches = first_images(r.val_loader, n_images, r.device, dtype)
        r.opt.plugin_share = plugin_share(model, batches)
        LOGGER.info(share_line(r.opt.plugin_share, sum(len(b) for b in batches)))


# ---- command line ---------------------------------------------------------------------------------------
def parse_opt(known: bool = False) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a YOLOv5 detector", allow_abbrev=False)
    p.add_argument("--weights", type=str, default="yolov5n.pt", help="initial weights path ('' to start fresh)")
    p.add_argument("--cfg", type=str, default="", help="model.yaml path or name, e.g. yolov5n_biformer.yaml")
    p.add_argument("--data", type=str, default="coco128.yaml", help="dataset.yaml path")
    p.add_argument("--hyp", type=str, default="hyp.scratch-low.yaml", help="hyperparameters path")
    p.add_argument("--epochs", type=int, default=100, help="total training epochs")
    p.add_argument("--batch-size", type=int, default=16, help="total batch size for all GPUs, -1 for autobatch")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train, val image size (pixels)")
    p.add_argument("--rect", action="store_true", help="rectangular training")
    p.add_argument("--image-weights", action="store_true", help="use weighted image selection for training")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume most recent training")
    p.add_argument("--nosave", action="store_true", help="only save final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--cache", type=str, nargs="?", const="ram", help="image --cache ram/disk")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--multi-scale", action="store_true", help="vary img-size +/- 50%%")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=list(OPTIMIZERS), default="SGD", help="optimizer")
    p.add_argument("--sync-bn", action="store_true", help="use SyncBatchNorm, only available in DDP mode")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers (per RANK in DDP mode)")
    p.add_argument("--project", default=str(ROOT / "runs" / "train"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="Label smoothing epsilon")
    p.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=int, default=[0], help="Freeze layers: backbone=10, first3=0 1 2")
    p.add_argument("--save-period", type=int, default=-1, help="Save checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--seed", type=int, default=0, help="Global training seed")
    p.add_argument("--evolve", type=int, nargs="?", const=300, help="evolve hyperparameters for x generations")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help="set by torchrun; do not modify")
    return p.parse_known_args()[0] if known else p.parse_args()


def _check_resume(opt: argparse.Namespace) -> argparse.Namespace:
    """--resume [path]: the options and hyperparameters of the interrupted run, pointed at its last.pt."""
    given = isinstance(opt.resume, (str, Path)) and str(opt.resume) != "True"
    last = Path(opt.resume) if given else latest_run(opt.project)
    if last is None or not last.is_file():
        where = f"at {last}" if given else f"under {opt.project}"
        raise FileNotFoundError(f"--resume: no checkpoint {where}; pass the path of a run's weights/last.pt")
    ckpt = load_checkpoint(last)
    d = ckpt.get("opt")
    opt_yaml = last.parent.parent / "opt.yaml"
    if opt_yaml.is_file():
        with open(opt_yaml, encoding="utf-8") as f:
            d = yaml.safe_load(f)
    if not d or ckpt.get("optimizer") is None:
        raise UserError(f"--resume: {last} is not resumable (no training options or optimizer state; a finished "
                         f"run's checkpoints are stripped). Start a new run: python train.py --weights {last}")
    new = argparse.Namespace(**{**vars(parse_opt(True)), **d})
    new.cfg, new.weights, new.resume = "", str(last), True
    new.hyp = ckpt.get("hyp") or new.hyp
    new.save_dir = str(last.parent.parent)
    return new


def main(opt: argparse.Namespace, callbacks: Callbacks | None = None) -> argparse.Namespace:
    """Run the training `opt` describes; returns the options it ran with, `save_dir` and `results` set.
    `callbacks`: utils.callbacks.Callbacks with the user's hooks."""
    info = ddp.dist_info()
    setup_logging(rank=info.rank)
    if opt.resume and getattr(opt, "evolve", None):
        raise UserError("--evolve cannot be combined with --resume (rerun --evolve with --name expN --exist-ok "
                        "to continue a search)")
    if opt.resume:
        opt = _check_resume(opt)
    _check_options(opt)
    if getattr(opt, "evolve", None):
        return _evolve(opt, info, callbacks)
    if not opt.resume:
        opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
    device = select_device(opt.device)
    if info.distributed:
        device = ddp.init_distributed(info, device)
        opt.save_dir = ddp.broadcast_object(opt.save_dir)  # every rank writes (rank 0) under one folder
    try:
        opt.results = train(load_hyp(opt.hyp), opt, device, callbacks)
    finally:
        ddp.cleanup()
    return opt


def _evolve(opt: argparse.Namespace, info: ddp.DistInfo, callbacks: Callbacks | None) -> argparse.Namespace:
    """--evolve N: N generations of training, each from a mutation of the fittest so far (utils/evolve.py), into
    runs/evolve/expN (evolve.csv, hyp_evolve.yaml, evolve.png). Each generation validates its final epoch only
    and keeps only its final checkpoint. A generation that fails (a non-finite loss) is logged with zero
    metrics and the search goes on. Rerun with --name expN --exist-ok to continue a killed search."""
    from utils import evolve as ev

    if opt.evolve < 1:
        raise UserError(f"--evolve {opt.evolve}: the number of generations must be >= 1")
    if info.distributed:
        raise UserError("--evolve runs in one process: start it with python, not torchrun")
    if Path(opt.project) == ROOT / "runs" / "train":
        opt.project = str(ROOT / "runs" / "evolve")
    opt.noval, opt.nosave = True, True
    opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
    save_dir, device = Path(opt.save_dir), select_device(opt.device)
    save_dir.mkdir(parents=True, exist_ok=True)
    csv, base = save_dir / "evolve.csv", load_hyp(opt.hyp)
    for g in range(len(ev.read_rows(csv)), opt.evolve):
        hyp = ev.mutate(base, ev.read_rows(csv), np.random.default_rng([opt.seed, g]))
        LOGGER.info(f"\n{colorstr('evolve:')} generation {g + 1}/{opt.evolve}: " +
                    ", ".join(f"{k}={v:g}" for k, v in hyp.to_dict().items() if ev.META.get(k, (0,))[0]))
        try:
            results = train(hyp, opt, device, callbacks)
        except FloatingPointError as e:  # one bad mutation does not end the search
            LOGGER.warning(f"WARNING: evolve generation {g + 1} failed ({e}); recorded with zero metrics")
            results = (0.0,) * len(ev.RESULT_KEYS)
        ev.append_row(csv, results, hyp)
        ev.write_best(csv, save_dir / "hyp_evolve.yaml", base)
    ev.plot_evolve(csv)
    rows = ev.read_rows(csv)
    opt.results = tuple(float(x) for x in rows[ev.best_hyp(rows)[0], :len(ev.RESULT_KEYS)])
    LOGGER.info(ev.summary(csv, save_dir))
    return opt


def run(callbacks: Callbacks | None = None, **kwargs) -> argparse.Namespace:
    """`train.run(data='coco128.yaml', imgsz=320, weights='yolov5n.pt')` as the command line would; returns the
    options it ran with, `save_dir` and the final `results` (P, R, mAP50, mAP50-95, box, obj, cls losses).
    `callbacks`: utils.callbacks.Callbacks with hooks to call (see that module for what each receives)."""
    return main(apply_options(parse_opt(True), kwargs, "train.run"), callbacks)


def cli() -> None:
    """The command line: user errors end as one `ERROR: ...` line and exit status 2."""
    from utils.inference import cli_errors

    cli_errors(main)(parse_opt())


if __name__ == "__main__":
    cli()
