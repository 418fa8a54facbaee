"""Inference latency and peak training memory of detection models, measured the same way for every model.

Latency (`measure_latency`): each model is timed on a fixed random batch in eval mode under
`torch.inference_mode()`, after `warmup` untimed calls. All models are timed in the same process and
interleaved round-robin (model A, B, C, then B, C, A, ...), so a slow spell of a shared machine hits every
model alike. The figure is the median over `repeats` timed calls of (call time / batch size), in ms per image;
on CUDA the clock waits for the device (`torch.cuda.synchronize`). Besides PyTorch modules, `models` may hold
runners of other runtimes (utils.deploy: ONNX Runtime, OpenVINO), timed in the same rounds: a runner has
`prepare(x)` (its input, made once before the timed calls), `__call__` and `batch`, the one batch size it was
exported for (it is left out of the others).

Peak training memory (`peak_train_memory`) of one training step: forward in train mode, YOLOv5's loss on a
fixed set of synthetic targets, backward, an SGD step with momentum (YOLOv5's optimizer), plus an EMA copy
of the weights as train.py keeps one.
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
import subprocess
import sys
from copy import deepcopy
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from utils.paths import ROOT
from utils.torch_utils import time_sync
from utils.errors import UserError

__all__ = ["LatencyStat", "MemoryStat", "measure_latency", "prepare_for_timing", "peak_train_memory",
           "train_step"]


@dataclass(frozen=True)
class LatencyStat:
    """Median and spread (25th, 75th percentile) of ms per image over the timed calls at one batch size, and the
    fastest call (on a shared machine the least disturbed one)."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    n: int
    min_ms: float = float("nan")


@dataclass(frozen=True)
class MemoryStat:
    """Peak memory of one training step in MB (1 MB = 2**20 bytes) and how it was measured."""

    peak_mb: float
    base_mb: float
    method: str  # 'cuda_max_memory_allocated' or 'cpu_peak_rss_subprocess'


def prepare_for_timing(model: nn.Module, device: torch.device | str = "cpu", half: bool = False,
                       fuse: bool = True) -> nn.Module:
    """A copy of `model` as inference runs it: BatchNorm fused (as val.py and detect.py fuse), eval, on device."""
    m = deepcopy(model).float().eval()
    if fuse and hasattr(m, "fuse"):
        m = m.fuse()
    m = m.to(device)
    return m.half() if half else m


def _repeat_count(repeats: int | Mapping[int, int], bs: int) -> int:
    n = repeats.get(bs, 5) if isinstance(repeats, Mapping) else repeats
    if n < 1:
        raise UserError(f"repeats must be >= 1 for batch size {bs}, got {n}")
    return int(n)


def _input_for(model, x: torch.Tensor):
    """x as `model` takes it: on a module's device and dtype, or what a runner's `prepare` makes of it."""
    if isinstance(model, nn.Module):
        p = next(model.parameters(), None)
        return x if p is None else x.to(p.device, p.dtype)
    if not (hasattr(model, "prepare") and callable(model)):
        raise UserError(f"measure_latency: {type(model).__name__} is neither a torch module nor a runner with "
                        "prepare() and __call__")
    return model.prepare(x)


def measure_latency(models: Mapping[str, object], imgsz: int = 640, batch_sizes: Sequence[int] = (1, 32),
                    warmup: int = 2, repeats: int | Mapping[int, int] = 10, seed: int = 0,
                    progress=None) -> dict[str, dict[int, LatencyStat]]:
    """ms per image at each batch size for every model, timed interleaved round-robin (see module docstring).

    Args:
        models: name -> model ready for inference (see `prepare_for_timing`), or a runner of another runtime
            (see the module docstring); each gets the same random batch on its own device and dtype.
        repeats: timed calls per model and batch size, or a dict batch size -> calls.
        progress: optional callable(str) told before each batch size starts.
    Returns:
        name -> batch size -> LatencyStat (a runner only at its own batch size).
    """
    if not models:
        raise UserError("measure_latency: no models given")
    g = torch.Generator().manual_seed(seed)
    out: dict[str, dict[int, LatencyStat]] = {n: {} for n in models}
    for bs in batch_sizes:
        names = [n for n in models if getattr(models[n], "batch", None) in (None, bs) or
                 isinstance(models[n], nn.Module)]
        if not names:
            continue
        if progress:
            progress(f"latency b{bs}")
        x = torch.rand(bs, 3, imgsz, imgsz, generator=g)
        inputs = {n: _input_for(models[n], x) for n in names}
        times: dict[str, list[float]] = {n: [] for n in names}
        with torch.inference_mode():
            for _ in range(warmup):
                for n in names:
                    models[n](inputs[n])
            for r in range(_repeat_count(repeats, bs)):
                for k in range(len(names)):
                    n = names[(r + k) % len(names)]  # rotate the order each round
                    t0 = time_sync()
                    models[n](inputs[n])
                    times[n].append((time_sync() - t0) * 1000 / bs)
        for n in names:
            q25, q50, q75 = np.percentile(times[n], [25, 50, 75])
            out[n][bs] = LatencyStat(float(q50), float(q25), float(q75), len(times[n]), float(min(times[n])))
    return out


def _synthetic_targets(bs: int, nc: int, per_image: int = 4, seed: int = 0) -> torch.Tensor:
    """(bs * per_image, 6) [image, class, cx, cy, w, h] normalised boxes of varied sizes."""
    g = torch.Generator().manual_seed(seed)
    n = bs * per_image
    img = torch.arange(bs).repeat_interleave(per_image).float()
    cls = torch.randint(0, nc, (n,), generator=g).float()
    wh = 0.05 + 0.5 * torch.rand(n, 2, generator=g)
    xy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
    return torch.cat((img[:, None], cls[:, None], xy, wh), 1)


def train_step(cfg: str, imgsz: int, batch_size: int, nc: int, device: torch.device | str = "cpu") -> nn.Module:
    """Build `cfg` and run one training step on a synthetic batch (see module docstring); returns the model."""
    from models.yolo import Model
    from utils.hyp import Hyp
    from utils.loss import ComputeLoss

    device = torch.device(device)
    model = Model(cfg, nc=nc, verbose=False).to(device).train()
    ema = deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    hyp = Hyp()
    hyp.cls *= nc / 80  # YOLOv5 scales the class gain by classes (and box/obj by levels, 3 here)
    loss_fn = ComputeLoss(model, hyp)
    x = torch.rand(batch_size, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)).to(device)
    targets = _synthetic_targets(batch_size, nc).to(device)
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        loss, _ = loss_fn(model(x), targets)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(0.9).add_(m.detach(), alpha=0.1)
    return model


def _peak_cuda(cfg: str, imgsz: int, batch_size: int, nc: int, device: torch.device) -> MemoryStat:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model = train_step(cfg, imgsz, batch_size, nc, device)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del model
    torch.cuda.empty_cache()
    return MemoryStat(peak / 2**20, 0.0, "cuda_max_memory_allocated")


def _peak_cpu_subprocess(cfg: str, imgsz: int, batch_size: int, nc: int, threads: int) -> MemoryStat:
    spec = json.dumps(dict(cfg=cfg, imgsz=imgsz, batch_size=batch_size, nc=nc, threads=threads))
    proc = subprocess.run([sys.executable, "-m", "utils.latency", "--train-step", spec], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"training-step memory subprocess for {cfg} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    last = [line for line in proc.stdout.splitlines() if line.startswith("{")][-1]
    d = json.loads(last)
    return MemoryStat(d["peak_mb"], d["base_mb"], "cpu_peak_rss_subprocess")


def peak_train_memory(cfg: str, imgsz: int, batch_size: int, nc: int = 80,
                      device: torch.device | str = "cpu", threads: int = 1) -> MemoryStat:
    """Peak memory of one training step of `cfg` at (batch_size, 3, imgsz, imgsz); see the module docstring."""
    device = torch.device(device)
    if device.type == "cuda":
        return _peak_cuda(cfg, imgsz, batch_size, nc, device)
    return _peak_cpu_subprocess(cfg, imgsz, batch_size, nc, threads)


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory map. (`ru_maxrss`
    would not do: exec keeps the high-water mark of the forked parent's map, so a child started by a big
    process would report the parent's size.) Elsewhere `ru_maxrss` (bytes on macOS).
    """
    import resource

    with contextlib.suppress(OSError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _child(spec: str) -> None:
    """Subprocess side of `peak_train_memory` on the CPU: prints {'peak_mb', 'base_mb'} as JSON."""
    d = json.loads(spec)
    torch.set_num_threads(int(d.get("threads", 1)))
    import models.yolo  # noqa: F401  (libraries loaded before the baseline reading)
    import utils.loss  # noqa: F401

    base = _rss_mb()
    train_step(d["cfg"], int(d["imgsz"]), int(d["batch_size"]), int(d["nc"]))
    print(json.dumps(dict(peak_mb=_rss_mb(), base_mb=base)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="internal: one training step in a fresh process, peak RSS as JSON")
    ap.add_argument("--train-step", required=True, help="JSON: cfg, imgsz, batch_size, nc, threads")
    _child(ap.parse_args().train_step)
