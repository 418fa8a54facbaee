"""Peak training memory of detection models: one training step built as train.py builds it, measured the same
way for every model.

`peak_train_memory` measures `train_step`: the model built from its config with the pieces train.py builds for a
fine-tune from YOLOv5's pretrained weights (the recipe's SGD from `smart_optimizer`, AdamW of its own for the
plug-in layers the weights do not cover, `ModelEMA`, `ComputeLoss` with train.py's gain scaling, AMP on CUDA,
channels_last on the CPU), then one training step on a fixed synthetic batch: forward in train mode, the loss on
a fixed set of synthetic targets, backward, gradient clipping, the optimizer steps and the EMA update.
* CUDA: `torch.cuda.max_memory_allocated` over the step minus what was allocated before the model was built
  (tensors PyTorch allocated; the caching allocator may reserve more).
* CPU: the peak resident set size (VmHWM on Linux) of a fresh Python subprocess that builds the model and
  runs the step. It includes the interpreter and the PyTorch libraries (the same for every model, a few hundred
  MB), so differences between models are what to read; `base_mb` is the peak before the step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from models.config import load_model_config
from models.user_modules import import_module_files
from models.yolo import Model
from utils.hyp import load_hyp
from utils.log import LOGGER
from utils.paths import ROOT
from utils.training.loss import ComputeLoss
from utils.training.optim import ModelEMA
from utils.training.plugin_optim import plugin_parameter_names
from utils.training.setup import build_optimizers, channels_last_weights, loss_hyp, optimizer_step
from utils.transfer import transfer_weights

__all__ = ["MemoryStat", "peak_train_memory", "train_step"]

HYP = "hyp.scratch-low.yaml"  # train.py's (and compare.py's) default hyperparameters, bundled in data/hyps/
BASELINE = "yolov5.yaml"  # the architecture of YOLOv5's pretrained weights (yolov5n.pt ... yolov5x.pt)


@dataclass(frozen=True)
class MemoryStat:
    """Peak memory of one training step in MB (1 MB = 2**20 bytes) and how it was measured."""

    peak_mb: float
    base_mb: float
    method: str  # 'cuda_max_memory_allocated' or 'cpu_peak_rss_subprocess'


def _synthetic_targets(bs: int, nc: int, per_image: int = 4, seed: int = 0) -> torch.Tensor:
    """(bs * per_image, 6) [image, class, cx, cy, w, h] normalised boxes of varied sizes."""
    g = torch.Generator().manual_seed(seed)
    n = bs * per_image
    img = torch.arange(bs).repeat_interleave(per_image).float()
    cls = torch.randint(0, nc, (n,), generator=g).float()
    wh = 0.05 + 0.5 * torch.rand(n, 2, generator=g)
    xy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
    return torch.cat((img[:, None], cls[:, None], xy, wh), 1)


def _pretrained_keys(model: Model) -> dict[str, str]:
    """The keys of `model` that a fine-tune from YOLOv5's pretrained weights at the model's scale (yolov5n.pt for a
    yolov5n_* config) fills: utils.transfer's mapping from a stand-in for that checkpoint, the YOLOv5 baseline
    built at the model's depth and width multiples (the mapping reads only names and shapes). Loads the stand-in's
    tensors into `model` as the fine-tune loads the checkpoint's."""
    d = load_model_config(BASELINE)
    d.pop("scales", None)
    d.pop("scale", None)
    d["depth_multiple"], d["width_multiple"] = model.yaml["depth_multiple"], model.yaml["width_multiple"]
    base = Model(d, verbose=False)
    return transfer_weights(model, {"model": base.state_dict(), "yaml": base.yaml}).mapping


@contextlib.contextmanager
def _quiet():
    """The optimizers' set-up lines stay out of the log of a job that measures memory (they are train.py's)."""
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def train_step(cfg: str, imgsz: int, batch_size: int, nc: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Build `cfg` with train.py's pieces and run one training step on a synthetic batch; returns the loss items
    (box, obj, cls), detached.

    The pieces are utils.training.setup's, as train.py builds them, for a fine-tune from YOLOv5's pretrained weights
    with the bundled hyp.scratch-low.yaml:
    * plug-in parameters: `plugin_parameter_names(model, mapping)` with the mapping utils.transfer gives from the
      pretrained weights (`_pretrained_keys`): every parameter they do not cover, outside the Detect head. For
      the bundled configs these are the parameters of the inserted plug-in layers (Residual wrappers), plus the
      fresh transformer block of C3TR (yolov5*_transformer.yaml). `plugin_optimizer` gives them AdamW.
    * the recipe's optimizer (`build_optimizers`): SGD over the other parameters, weight decay scaled to the
      accumulated batch. The first batch of a run steps the optimizer (the warmup starts at accumulate 1), as
      this step does.
    * `model.half().float()` (train.py's anchor rounding), channels_last weights and images on the CPU,
      `ModelEMA`, and `ComputeLoss` with the gains `loss_hyp` scales.
    * the step: autocast and a GradScaler on CUDA, backward, then `optimizer_step` (unscale, clip at 10, the
      optimizers' steps, zero_grad, the EMA update).
    """
    device = torch.device(device)
    hyp = load_hyp(HYP)
    amp = device.type == "cuda"
    with _quiet():
        anchors = round(hyp.anchors) if hyp.anchors else None
        model = Model(cfg, ch=3, nc=nc, anchors=anchors, verbose=False).to(device)
        names = plugin_parameter_names(model, _pretrained_keys(model))
        optimizer, plugin_opt = build_optimizers(model, names, hyp, "SGD", batch_size)
    optimizers = [optimizer] + ([plugin_opt] if plugin_opt is not None else [])
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    model.half().float()
    if device.type == "cpu":
        channels_last_weights(model)
    ema = ModelEMA(model)
    compute_loss = ComputeLoss(model, loss_hyp(hyp, model, nc, imgsz))

    model.train()
    x = torch.rand(batch_size, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)).to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    targets = _synthetic_targets(batch_size, nc).to(device)
    with torch.autocast(device.type, enabled=amp):
        loss, loss_items = compute_loss(model(x), targets)
    scaler.scale(loss).backward()
    optimizer_step(optimizers, scaler, model, ema)
    return loss_items.detach().cpu()


def _peak_cuda(cfg: str, imgsz: int, batch_size: int, nc: int, device: torch.device) -> MemoryStat:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    train_step(cfg, imgsz, batch_size, nc, device)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    torch.cuda.empty_cache()
    return MemoryStat(peak / 2**20, 0.0, "cuda_max_memory_allocated")


def _peak_cpu_subprocess(cfg: str, imgsz: int, batch_size: int, nc: int, threads: int,
                         modules: list[str] | None) -> MemoryStat:
    cfg = str(Path(cfg).resolve()) if Path(cfg).is_file() else cfg  # the child runs in the project's folder
    spec = json.dumps(dict(cfg=cfg, imgsz=imgsz, batch_size=batch_size, nc=nc, threads=threads,
                           modules=[str(Path(f).resolve()) for f in modules or []]))
    proc = subprocess.run([sys.executable, "-m", "utils.compare.memory", "--train-step", spec], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"training-step memory subprocess for {cfg} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    last = [line for line in proc.stdout.splitlines() if line.startswith("{")][-1]
    d = json.loads(last)
    return MemoryStat(d["peak_mb"], d["base_mb"], "cpu_peak_rss_subprocess")


def peak_train_memory(cfg: str, imgsz: int, batch_size: int, nc: int = 80,
                      device: torch.device | str = "cpu", threads: int = 1,
                      modules: list[str] | None = None) -> MemoryStat:
    """Peak memory of one training step of `cfg` at (batch_size, 3, imgsz, imgsz); see the module docstring.
    `modules`: the user's files that register blocks `cfg` uses (imported in the measuring process too)."""
    device = torch.device(device)
    if device.type == "cuda":
        return _peak_cuda(cfg, imgsz, batch_size, nc, device)
    return _peak_cpu_subprocess(cfg, imgsz, batch_size, nc, threads, modules)


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory map. (`ru_maxrss`
    would not do: exec keeps the high-water mark of the forked parent's map, so a child started by a big
    process would report the parent's size.) Elsewhere `ru_maxrss` (bytes on macOS).
    """
    with contextlib.suppress(OSError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    import resource  # lazy: Unix only, and Linux reads /proc above

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _child(spec: str) -> None:
    """Subprocess side of `peak_train_memory` on the CPU: prints {'peak_mb', 'base_mb'} as JSON. The libraries
    the step uses are loaded (this module's imports) before the baseline reading."""
    d = json.loads(spec)
    torch.set_num_threads(int(d.get("threads", 1)))
    import_module_files(d.get("modules"))
    base = _rss_mb()
    train_step(d["cfg"], int(d["imgsz"]), int(d["batch_size"]), int(d["nc"]))
    print(json.dumps(dict(peak_mb=_rss_mb(), base_mb=base)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="internal: one training step in a fresh process, peak RSS as JSON")
    ap.add_argument("--train-step", required=True, help="JSON: cfg, imgsz, batch_size, nc, threads")
    _child(ap.parse_args().train_step)
