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
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

import val as validate
from models import load_model
from models.attention.share import loader_share
from utils import distributed as ddp
from utils.checkpoint import strip_optimizer, training_checkpoint
from utils.cli import apply_options, cli_errors
from utils.data.augment import multi_scale
from utils.errors import UserError
from utils.hyp import Hyp, load_hyp
from utils.log import LOGGER, colorstr, setup_logging
from utils.metrics import fitness
from utils.paths import ROOT, increment_path
from utils.plots import plot_images
from utils.torch_utils import de_parallel, select_device
from utils.training import evolve as ev
from utils.training.callbacks import Callbacks
from utils.training.image_weights import sample_image_indices
from utils.training.loggers import TrainLoggers, wanted_loggers
from utils.training.optim import OPTIMIZERS, EarlyStopping, divergence, warmup
from utils.training.plugin_optim import plugin_warmup
from utils.training.options import TrainOptions, resume_options
from utils.training.plots import plot_results
from utils.training.run_files import Checkpoints
from utils.training.run_folder import open_run_folder
from utils.training.seeds import init_seeds, seed_epoch
from utils.training.share_cap import ShareCap
from utils.training.setup import Progress, TrainSetup, build_setup, optimizer_step

__all__ = ["parse_opt", "run", "main", "train", "TrainResult"]

TQDM_BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
NO_RESULTS = (0.0,) * 7


@dataclass
class TrainResult:
    """What a training run (or an --evolve search) gives back."""

    save_dir: Path  # the run folder: weights/, results.csv, plots
    results: tuple  # the final validation: (P, R, mAP50, mAP50-95, box, obj, cls losses); zeros without one
    opt: TrainOptions  # the options it ran with (AutoBatch resolved, save_dir set)
    epoch_seconds: list[float] = field(default_factory=list)  # wall time of each epoch the loop ran, validation
    # and checkpoint saving included (a resumed run: the epochs after the resume)
    plugin_share: dict[str, float] = field(default_factory=dict)  # {layer: share} of best.pt (models.attention.share)

    @property
    def best(self) -> Path:
        return self.save_dir / "weights" / "best.pt"

    @property
    def last(self) -> Path:
        return self.save_dir / "weights" / "last.pt"


@dataclass
class _Loop:
    """One run's fixed context; only `progress` changes from epoch to epoch."""

    opt: TrainOptions
    hyp: Hyp  # as given (saved in checkpoints)
    device: torch.device
    info: ddp.DistInfo
    save_dir: Path
    setup: TrainSetup
    progress: Progress
    callbacks: Callbacks  # the user's hooks (utils.training.callbacks) and the loggers'
    ck: Checkpoints | None  # the run's files, on the main process
    loggers: TrainLoggers | None  # on the main process

    def hook(self, name: str, *args, **kwargs) -> None:
        if self.info.main:
            self.callbacks.run(name, *args, **kwargs)


def train(hyp: Hyp, opt: TrainOptions, device: torch.device, callbacks: Callbacks | None = None) -> TrainResult:
    """Train as `opt` says (opt.save_dir set). `callbacks` (utils.training.callbacks.Callbacks) are called at YOLOv5's
    hook points on the main process."""
    info, callbacks, save_dir = ddp.dist_info(), callbacks or Callbacks(), Path(opt.save_dir)
    if info.main:
        callbacks.run("on_pretrain_routine_start")
        LOGGER.info(colorstr("hyperparameters: ") + ", ".join(f"{k}={v}" for k, v in hyp.to_dict().items()))
    init_seeds(opt.seed + 1 + info.rank, deterministic=True)
    setup, progress = build_setup(opt, hyp, device, info)
    opt = opt.with_(batch_size=setup.batch_size)
    ck = loggers = None
    if info.main:  # the run folder is made once the model and the data are known to work
        ck, loggers = open_run_folder(opt, hyp, setup, save_dir, callbacks)
    r = _Loop(opt, hyp, device, info, save_dir, setup, progress, callbacks, ck, loggers)
    r.hook("on_pretrain_routine_end", setup.dataset.labels, list(setup.data.names))
    results, seconds, shares = _fit(r)
    return TrainResult(save_dir, results, opt, seconds, shares)


def _fit(r: _Loop) -> tuple[tuple, list[float], dict[str, float]]:
    """The epochs; returns (final results, seconds per epoch, plug-in shares of best.pt)."""
    opt, s, p = r.opt, r.setup, r.progress
    nw = max(round(r.hyp.warmup_epochs * len(s.train_loader)), 100)  # warmup iterations
    s.scheduler.last_epoch = p.start_epoch - 1  # YOLOv5's: after warmup, epoch e runs at lf(e - 1)
    stopper, stop = EarlyStopping(patience=opt.patience), False
    results, seconds, shares = NO_RESULTS, [], {}
    cap = ShareCap(de_parallel(s.model), r.hyp.plugin_share_max)
    if r.ck:
        r.ck.results.truncate(p.start_epoch)
    LOGGER.info(f"Image sizes {s.imgsz} train, {s.imgsz} val\n"
                f"Using {s.train_loader.num_workers * r.info.world_size} dataloader workers\n"
                f"Logging results to {colorstr('bold', str(r.save_dir))}\n"
                f"Starting training for {opt.epochs} epochs...")
    t0, epoch = time.time(), p.start_epoch
    r.hook("on_train_start")
    for epoch in range(p.start_epoch, opt.epochs):
        t_epoch = time.perf_counter()
        r.hook("on_train_epoch_start", epoch)
        if s.plugin_optimizer is not None:  # the recipe's schedule (its warmup ramp with hyp.plugin_warmup)
            for g in s.plugin_optimizer.param_groups:
                g["lr"] = g["initial_lr"] * s.lf(epoch)
        mloss = _train_epoch(r, epoch, nw, cap)
        lr = [x["lr"] for x in s.optimizer.param_groups]  # for the log
        s.scheduler.step()
        r.hook("on_train_epoch_end", epoch=epoch)
        diverged = None
        if r.info.main:
            final_epoch = epoch + 1 == opt.epochs or stopper.possible_stop
            if not opt.noval or final_epoch:
                results, p.maps = _validate(r, s.ema.ema, plots=False)
            diverged = divergence({"EMA": s.ema.ema, "trained": de_parallel(s.model)}, epoch, results, r.hyp.lr0)
        if r.info.main and diverged is None:
            shares = loader_share(s.ema.ema, s.val_loader, r.device, n_images=16)
            r.loggers.log_plugins(shares, s.ema.ema, s.plugin_optimizer.param_groups[0]["lr"]
                                  if s.plugin_optimizer else None, epoch, capped=_cap_line(cap))
            fi = _fitness(results)
            stop = stopper(epoch=epoch, fitness=fi)
            p.best_fitness = max(p.best_fitness, fi)
            if not opt.nosave or final_epoch:
                r.ck.save(_checkpoint(r, epoch), is_best=p.best_fitness == fi, period=opt.save_period, epoch=epoch)
                r.hook("on_model_save", r.ck.last, epoch, final_epoch, p.best_fitness, fi)
            vals = [float(x) for x in list(mloss) + list(results) + lr]
            r.ck.results.append(epoch, vals)
            r.hook("on_fit_epoch_end", vals, epoch, p.best_fitness, fi)
            stop = stop or r.callbacks.stop_training
        seconds.append(time.perf_counter() - t_epoch)
        stop, diverged = ddp.broadcast_object((stop, diverged))  # every rank stops, or raises, together
        if diverged:
            raise FloatingPointError(diverged)
        if stop:
            break
    if r.info.main:
        LOGGER.info(f"\n{epoch - p.start_epoch + 1} epochs completed in {(time.time() - t0) / 3600:.3f} hours.")
        results, shares = _final(r)
        r.hook("on_train_end", r.ck.last, r.ck.best, epoch, results)
    cap.remove()
    r.hook("teardown")
    return results, seconds, shares


def _cap_line(cap: ShareCap) -> dict[str, float]:
    """Log which plug-in layers the share cap held back this epoch; {layer: fraction of the epoch's steps}."""
    capped = cap.summary()
    held = {n: f for n, f in capped.items() if f > 0}
    if held:
        LOGGER.info(f"Plug-in share held at plugin_share_max {cap.cap:g} (hyp) in "
                    + ", ".join(f"{n} {100 * f:.0f}%" for n, f in held.items()) + " of this epoch's steps")
    return capped


def _fitness(results) -> float:
    return float(fitness(np.array(results, dtype=np.float64).reshape(1, -1))[0])


def _train_epoch(r: _Loop, epoch: int, nw: int, cap: ShareCap) -> torch.Tensor:
    opt, s, device = r.opt, r.setup, r.device
    s.model.train()
    seed_epoch(s.train_loader, opt.seed, r.info.rank, epoch)
    if opt.image_weights:  # draw this epoch's images by class weight and (1 - class mAP)^2
        maps = r.progress.maps if r.progress.maps is not None else np.zeros(s.data.nc)
        s.dataset.indices = sample_image_indices(s.dataset.labels, s.data.nc, maps, opt.seed, epoch)
    mloss, nb = torch.zeros(3, device=device), len(s.train_loader)
    LOGGER.info(("\n" + "%11s" * 7) % ("Epoch", "GPU_mem", "box_loss", "obj_loss", "cls_loss", "Instances", "Size"))
    pbar = enumerate(s.train_loader)
    if r.info.main:
        pbar = tqdm(pbar, total=nb, bar_format=TQDM_BAR_FORMAT)
    for o in s.optimizers:
        o.zero_grad()
    for i, (imgs, targets, paths, _) in pbar:
        ni = i + nb * epoch  # integrated batches since the start of training
        r.hook("on_train_batch_start")
        imgs = imgs.to(device, non_blocking=True).float() / 255
        if device.type == "cpu":
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        accumulate = warmup(s.optimizer, ni, nw, r.opt.batch_size, r.hyp, s.lf(epoch))
        plugin_warmup(s.plugin_optimizer, ni, nw, r.hyp, s.lf(epoch))
        if opt.multi_scale:
            imgs = multi_scale(imgs, s.imgsz, s.gs)
        with torch.autocast(device.type, enabled=s.amp):
            pred = s.model(imgs)
            loss, loss_items = s.compute_loss(pred, targets.to(device))
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch}, batch {i}: box, obj, cls = {loss_items.tolist()}; "
                f"images: {list(paths)}")
        if r.info.distributed:
            loss *= r.info.world_size  # DDP averages gradients over the processes
        s.scaler.scale(loss).backward()
        if ni - r.progress.last_opt_step >= accumulate:
            optimizer_step(s.optimizers, s.scaler, s.model, s.ema, lambda: r.hook("on_before_zero_grad"), cap.step)
            r.progress.last_opt_step = ni
        if r.info.main:
            mloss = (mloss * i + loss_items) / (i + 1)
            mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
            pbar.set_description(("%11s" * 2 + "%11.4g" * 5) % (
                f"{epoch}/{opt.epochs - 1}", mem, *mloss, targets.shape[0], imgs.shape[-1]))
            if not opt.noplots and ni < 3:
                plot_images(imgs, targets, paths, r.save_dir / f"train_batch{ni}.jpg", names=s.data.names)
            r.hook("on_train_batch_end", s.model, ni, imgs, targets, paths, [float(x) for x in mloss])
    return mloss


def _validate(r: _Loop, model: nn.Module, plots: bool, **kw) -> tuple:
    results, maps, _ = validate.run(
        r.opt.data, batch_size=r.opt.batch_size // r.info.world_size * 2, imgsz=r.setup.imgsz, half=r.setup.amp,
        model=model, single_cls=r.opt.single_cls, dataloader=r.setup.val_loader, save_dir=r.save_dir, plots=plots,
        compute_loss=r.setup.compute_loss, **kw)
    return tuple(float(x) for x in results), maps


def _checkpoint(r: _Loop, epoch: int) -> dict:
    s = r.setup
    return training_checkpoint(
        de_parallel(s.model), s.ema, s.data.names, epoch, r.progress.best_fitness, s.optimizer,
        r.progress.last_opt_step, s.plugin_optimizer, s.plugin_names, s.scaler if s.amp else None,
        r.opt.to_dict(), r.hyp.to_dict())


def _final(r: _Loop) -> tuple[tuple, dict[str, float]]:
    """Strip the optimizer from last.pt and best.pt, validate best.pt with plots, draw results.png."""
    results, shares = NO_RESULTS, {}
    for f in (r.ck.last, r.ck.best):
        if f.exists():
            strip_optimizer(f)
            if f is r.ck.best:
                LOGGER.info(f"\nValidating {f}...")
                model = load_model(f, r.device, fuse=True)
                model = model.half() if r.setup.amp else model
                yaml_file = r.setup.data.yaml_file
                is_coco = yaml_file is not None and Path(yaml_file).name == "coco.yaml"
                results, _ = _validate(r, model, plots=not r.opt.noplots, iou_thres=0.65 if is_coco else 0.60,
                                       verbose=True, save_json=is_coco)
                shares = loader_share(model, r.setup.val_loader, r.device)
    if not r.opt.noplots:
        plot_results(r.ck.results.file)
    LOGGER.info(f"Results saved to {colorstr('bold', str(r.save_dir))}")
    return results, shares


# ---- command line ---------------------------------------------------------------------------------------
def parse_opt(known: bool = False, args: list[str] | None = None) -> argparse.Namespace:
    """The command line's options; `args` None reads sys.argv (scripts only), [] gives the defaults."""
    p = argparse.ArgumentParser(description="Train a YOLOv5 detector")
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
    p.add_argument("--modules", nargs="+", metavar="FILE", help="your Python file(s) registering blocks the model uses")
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
    return p.parse_known_args(args)[0] if known else p.parse_args(args)


def main(opt: argparse.Namespace, callbacks: Callbacks | None = None) -> TrainResult:
    """Run the training (or --evolve search) `opt` describes. `callbacks`: utils.training.callbacks.Callbacks with the
    user's hooks."""
    info = ddp.dist_info()
    setup_logging(rank=info.rank)
    if opt.resume and getattr(opt, "evolve", None):
        raise UserError("--evolve cannot be combined with --resume (rerun --evolve with --name expN --exist-ok "
                        "to continue a search)")
    if opt.resume:
        opt = resume_options(opt, parse_opt(args=[]))  # the run's own options over the defaults
    opts = TrainOptions.from_namespace(opt)
    opts.check(distributed=info.distributed)
    wanted_loggers()  # a bad YOLO_LOGGERS fails now, not after the data set is read
    if opts.evolve:
        return _evolve(opts, info, callbacks)
    claimed = None
    if not opts.resume and info.rank in (-1, 0):  # rank 0 claims the folder; the others get it broadcast below
        claimed = increment_path(Path(opts.project) / opts.name, exist_ok=opts.exist_ok)
        opts = opts.with_(save_dir=str(claimed))
    try:
        device = select_device(opts.device)
        if info.distributed:
            device = ddp.init_distributed(info, device)
            opts = opts.with_(save_dir=ddp.broadcast_object(opts.save_dir))  # every rank writes under one folder
        return train(load_hyp(opts.hyp), opts, device, callbacks)
    except BaseException:
        _drop_if_empty(claimed)  # a run that failed before writing anything leaves no folder behind
        raise
    finally:
        ddp.cleanup()


def _drop_if_empty(folder: Path | None) -> None:
    if folder is not None:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds on an empty folder


def _evolve(opt: TrainOptions, info: ddp.DistInfo, callbacks: Callbacks | None) -> TrainResult:
    """--evolve N (utils/training/evolve.py): into runs/evolve/expN; the result's `results` are the fittest
    generation's."""
    if info.distributed:
        raise UserError("--evolve runs in one process: start it with python, not torchrun")
    project = str(ROOT / "runs" / "evolve") if Path(opt.project) == ROOT / "runs" / "train" else opt.project
    save_dir = increment_path(Path(project) / opt.name, exist_ok=opt.exist_ok)
    opt = opt.with_(project=project, noval=True, nosave=True, save_dir=str(save_dir))
    device, seconds = select_device(opt.device), []

    def one_generation(hyp: Hyp) -> tuple:
        gen = train(hyp, opt, device, callbacks)
        seconds.extend(gen.epoch_seconds)
        return gen.results

    best = ev.search(one_generation, load_hyp(opt.hyp), opt.evolve, save_dir, opt.seed)
    return TrainResult(save_dir, best, opt, seconds)


def run(callbacks: Callbacks | None = None, **kwargs) -> TrainResult:
    """`train.run(data='coco128.yaml', imgsz=320, weights='yolov5n.pt')` as the command line would; returns a
    TrainResult (run folder, final results (P, R, mAP50, mAP50-95, box, obj, cls losses), the options it ran
    with, seconds per epoch, plug-in shares). `callbacks`: utils.training.callbacks.Callbacks with hooks to call (see
    that module for what each receives)."""
    return main(apply_options(parse_opt(args=[]), kwargs, "train.run"), callbacks)  # never the caller's sys.argv


def cli() -> None:
    """The command line: user errors end as one `ERROR: ...` line and exit status 2; a diverged training (a
    non-finite loss, weights or validation losses) as one `ERROR: ...` line and exit status 1."""
    try:
        cli_errors(main)(parse_opt())
    except FloatingPointError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
