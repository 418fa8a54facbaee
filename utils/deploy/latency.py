"""Inference latency of detection models, measured the same way for every model.

Latency (`measure_latency`): each model is timed on a fixed random batch in eval mode under
`torch.inference_mode()`, after `warmup` untimed calls. All models are timed in the same process and
interleaved round-robin (model A, B, C, then B, C, A, ...), so a slow spell of a shared machine hits every
model alike. The figure is the median over `repeats` timed calls of (call time / batch size), in ms per image;
on CUDA the clock waits for the device (`torch.cuda.synchronize`). Besides PyTorch modules, `models` may hold
runners of other runtimes (utils.deploy.runners: ONNX Runtime, OpenVINO), timed in the same rounds: a runner has
`prepare(x)` (its input, made once before the timed calls), `__call__` and `batch`, the one batch size it was
exported for (it is left out of the others).

Peak training memory of one training step: utils.compare.memory.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from utils.errors import UserError
from utils.torch_utils import time_sync

__all__ = ["LatencyStat", "measure_latency", "prepare_for_timing"]


@dataclass(frozen=True)
class LatencyStat:
    """Median and spread (25th, 75th percentile) of ms per image over the timed calls at one batch size, and the
    fastest call (on a shared machine the least disturbed one)."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    n: int
    min_ms: float = float("nan")


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

