"""--batch-size -1: the largest batch that fills about `fraction` of the CUDA device's memory (YOLOv5's AutoBatch).

Peak memory of a forward and backward pass is measured at batch sizes 1, 2, 4, 8 and 16, a line is fitted to
(batch size, memory) and solved for the target; sizes that ran out of memory bound the answer. On the CPU (or
MPS) there is no device memory to fill: the default batch size is used, with a message saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from utils.log import LOGGER, colorstr

__all__ = ["DEFAULT_BATCH", "autobatch", "fit_batch_size"]

DEFAULT_BATCH = 16
PREFIX = colorstr("AutoBatch: ")


def fit_batch_size(sizes: Sequence[int], mem_gb: Sequence[float | None], free_gb: float, reserved_gb: float,
                   total_gb: float, fraction: float = 0.6) -> int:
    """The batch size whose predicted memory is `fraction` of the device, from measurements `mem_gb` at `sizes`
    (None where the size failed). The answer stays below the first failed size and is at least 1."""
    ok = [(b, m) for b, m in zip(sizes, mem_gb) if m is not None]
    if len(ok) < 2:
        return DEFAULT_BATCH if not ok else ok[0][0]
    slope, intercept = np.polyfit([b for b, _ in ok], [m for _, m in ok], deg=1)
    if slope <= 0:
        return DEFAULT_BATCH
    b = int((free_gb * fraction + reserved_gb - intercept) / slope + 1e-6)  # memory the batch may take
    if any(m is None for m in mem_gb):  # a size ran out of memory: stay at the largest that did not
        b = min(b, max(s for s, _ in ok))
    return max(b, 1)


def _profile(step: Callable[[int], None], sizes: Sequence[int], device: torch.device) -> list[float | None]:
    out: list[float | None] = []
    for b in sizes:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            step(b)
            out.append(torch.cuda.max_memory_allocated(device) / 2**30)
        except torch.cuda.OutOfMemoryError:
            out.append(None)
            break
    torch.cuda.empty_cache()
    return out


def autobatch(model: nn.Module, imgsz: int, device: torch.device, amp: bool = True, fraction: float = 0.6) -> int:
    """The training batch size for `model` at `imgsz` on `device`; DEFAULT_BATCH off CUDA."""
    if device.type != "cuda":
        LOGGER.info(f"{PREFIX}--batch-size -1 sizes the batch to CUDA memory; on {device.type} there is none to "
                    f"measure: using the default --batch-size {DEFAULT_BATCH}")
        return DEFAULT_BATCH
    sizes = [1, 2, 4, 8, 16]

    def step(b: int) -> None:
        x = torch.rand(b, 3, imgsz, imgsz, device=device)
        with torch.autocast("cuda", enabled=amp):
            y = model(x)
            loss = sum(t.float().mean() for t in (y if isinstance(y, (list, tuple)) else [y]))
        loss.backward()
        model.zero_grad(set_to_none=True)

    was = model.training
    model.train()
    try:
        mem = _profile(step, sizes, device)
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)
    free, total = (x / 2**30 for x in torch.cuda.mem_get_info(device))
    reserved = torch.cuda.memory_reserved(device) / 2**30
    b = fit_batch_size(sizes, mem, free, reserved, total, fraction)
    LOGGER.info(f"{PREFIX}memory {', '.join(f'b{s} {m:.2f}G' if m else f'b{s} OOM' for s, m in zip(sizes, mem))}; "
                f"{total:.1f}G total, {free:.1f}G free: using --batch-size {b} (about {fraction:.0%} of the device)")
    return b
