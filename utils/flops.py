"""FLOPs counted by `torch.utils.flop_counter` on a real forward pass at the real input size.

YOLOv5 counts at 32x32 and scales by (640/32)^2, which is right for convolutions and wrong for attention,
whose cost grows faster than H*W. Here the forward pass runs at the size asked for. One multiply-add is two
FLOPs, as in YOLOv5's GFLOPs figures.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from utils.log import LOGGER

__all__ = ["count_flops", "gflops", "uncounted_operators"]


# Formulas on shapes. torch.utils.flop_counter.sdpa_flop itself cannot be reused here: it is registered already
# wrapped to take tensors, and custom_mapping wraps again.
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# torch's counter knows the CUDA kernels of F.scaled_dot_product_attention but not the CPU one, which it would
# count as 0 FLOPs: attention plug-ins would look free on the CPU.
_CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


# Operators whose cost is products and sums over a dimension (matrix products, convolutions, attention kernels,
# transforms, distances, recurrent layers): one of these without a counting rule would count as 0 FLOPs.
# Element-wise operators (activations, additions, softmax) are left out of the count by design, as in YOLOv5.
_HAS_FLOPS = re.compile(r"mm|mv|dot|conv|attention|fft|cdist|linear|lstm|gru|rnn|multi_head|transformer|matmul|einsum")
_WARNED: set[str] = set()


class _Operators(TorchDispatchMode):
    """The operators a forward pass runs (as the FLOP counter sees them: after composite ones are decomposed)."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func._overloadpacket)
        return func(*args, **(kwargs or {}))


def uncounted_operators(seen, registry) -> list[str]:
    """Names of the operators in `seen` that do arithmetic of their own (_HAS_FLOPS) but have no counting rule in
    `registry` (FlopCounterMode.flop_registry): the count leaves their cost out."""
    return sorted({str(op) for op in seen if op not in registry and _HAS_FLOPS.search(str(op).split(".")[-1])})


def _as_hw(imgsz: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    if len(imgsz) == 1:
        return int(imgsz[0]), int(imgsz[0])
    return int(imgsz[0]), int(imgsz[1])


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Total FLOPs of `module(*inputs)` in eval mode without gradients; the module's mode is restored.

    nn.MultiheadAttention and nn.TransformerEncoderLayer run fused "fast path" kernels in eval mode without
    gradients, which the counter has no rule for (a user's attention built on them counted 0 FLOPs): the fast path
    is switched off while counting (torch.backends.mha), so their projections and attention products are counted
    as the matrix products they are; what the module computes is the same.

    An operator that does arithmetic of its own but has no counting rule (a user's custom kernel, a transform)
    would add 0: the count is then too low, and a warning names each such operator once per process."""
    was_training, fast = module.training, torch.backends.mha.get_fastpath_enabled()
    module.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION_FLOPS) as counter, \
                _Operators() as ops:
            module(*inputs)
    finally:
        module.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fast)
    missing = [op for op in uncounted_operators(ops.seen, counter.flop_registry) if op not in _WARNED]
    if missing:
        _WARNED.update(missing)
        LOGGER.warning(f"WARNING: GFLOPs leave out {', '.join(missing)}: torch.utils.flop_counter has no rule for "
                       f"{'this operator' if len(missing) == 1 else 'these operators'}, so "
                       f"{type(module).__name__}'s count is too low by {'its' if len(missing) == 1 else 'their'} cost")
    return int(counter.get_total_flops())


def gflops(model: nn.Module, imgsz: int | tuple[int, int] = 640, ch: int | None = None) -> float:
    """GFLOPs of one image of size `imgsz` (int or (h, w)) through `model`."""
    h, w = _as_hw(imgsz)
    p = next(model.parameters())
    ch = ch or getattr(model, "yaml", {}).get("ch", 3)
    x = torch.zeros(1, ch, h, w, device=p.device, dtype=p.dtype)
    return count_flops(model, x) / 1e9
