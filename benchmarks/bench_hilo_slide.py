"""HiLo and Slide attention against full attention (SDPA) and against their own naive references.

    python benchmarks/bench_hilo_slide.py                        # CPU, P4/P5-like sizes of a 640 image
    python benchmarks/bench_hilo_slide.py --device 0 --repeats 50
    python benchmarks/bench_hilo_slide.py --sizes 1,128,40,40 8,256,40,40 --threads 1

Rows per input size (B, C, H, W): forward ms (eval, no grad), forward+backward ms (gradients of the input and
of the parameters), peak memory of the tensors allocated during one forward+backward (CUDA: the allocator's
peak; CPU: live tensor storages tracked op by op), forward GFLOPs (torch.utils.flop_counter, with the CPU
flash-attention kernel counted like the CUDA ones) and parameters. Times are medians over `--repeats` runs.

The naive references are the ones the tests check the modules against: the HiLo reference computation with an
explicit softmax (square maps that window_size divides only) and Slide attention gathered with F.unfold.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from models.attention import HiLo, SlideAttention  # noqa: E402
from tests.test_hilo import seed_hilo  # noqa: E402
from tests.test_slide import naive_slide  # noqa: E402

DEFAULT_SIZES = ["1,128,40,40", "8,256,40,40", "1,256,20,20", "8,512,20,20"]


class FullAttention(nn.Module):
    """Global multi-head self-attention over all H*W tokens through SDPA; (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(t).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return self.proj(o).transpose(1, 2).reshape(b, c, h, w)


class Reference(nn.Module):
    """A naive reference `fn(module, x)` run with the weights of `module`."""

    def __init__(self, module: nn.Module, fn: Callable):
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.module, x)


def _hilo_reference(m: HiLo, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    out = seed_hilo(m, x.permute(0, 2, 3, 1).reshape(b, h * w, c))
    return out.reshape(b, h, w, c).permute(0, 3, 1, 2)


def candidates(dim: int, h: int, w: int) -> dict[str, nn.Module]:
    hilo, slide = HiLo(dim), SlideAttention(dim)
    rows = {"full attention (SDPA)": FullAttention(dim), "HiLo": hilo}
    if h == w and h % hilo.ws == 0:  # the reference's own assumptions
        rows["HiLo reference (explicit softmax)"] = Reference(hilo, _hilo_reference)
    rows["Slide"] = slide
    rows["Slide fused"] = copy.deepcopy(slide).fuse()
    rows["Slide reference (unfold)"] = Reference(slide, naive_slide)
    return rows


# ---- measurements -----------------------------------------------------------------------------------------
class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the block that are still alive, checked at every op
    (forward and backward). Parameters and inputs made before the block are not counted."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.now -= self.live.pop(key)[1]
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                ref = StorageWeakRef(t.untyped_storage())
                if ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, t.untyped_storage().nbytes())
                    self.now += self.live[ref.cdata][1]
        self.peak = max(self.peak, self.now)
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _fwd_bwd(m: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run():
        m.zero_grad(set_to_none=True)
        xg = x.detach().requires_grad_(True)
        m(xg).sum().backward()

    return run


def _peak_mb(m: nn.Module, x: torch.Tensor) -> float:
    run = _fwd_bwd(m, x)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        base = torch.cuda.memory_allocated(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        run()
        torch.cuda.synchronize(x.device)
        return (torch.cuda.max_memory_allocated(x.device) - base) / 2**20
    with PeakMemory() as pm:
        run()
    return pm.peak / 2**20


def _gflops(m: nn.Module, x: torch.Tensor) -> float:
    def sdpa(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:  # shapes, not tensors
        return sdpa_flop_count(q_shape, k_shape, v_shape)

    cpu_flash = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_flash) as counter:
        m(x)
    return counter.get_total_flops() / 1e9


def measure(name: str, m: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> dict:
    dev = x.device
    m.eval()
    with torch.no_grad():
        fwd = _median_ms(lambda: m(x), dev, repeats, warmup)
    m.train()
    both = _median_ms(_fwd_bwd(m, x), dev, repeats, warmup)
    row = {"module": name, "fwd_ms": fwd, "fwd_bwd_ms": both, "peak_mb": _peak_mb(m, x)}
    m.eval()
    # the unfold reference's products are elementwise, which the counter does not see
    row["gflops"] = None if name.startswith("Slide reference") else _gflops(m, x)
    row["params"] = sum(p.numel() for p in m.parameters())
    return row


# ---- table ------------------------------------------------------------------------------------------------
def print_table(size: tuple[int, ...], rows: list[dict]) -> None:
    full = rows[0]
    print(f"\ninput (B, C, H, W) = {size}")
    print(f"{'module':<36}{'fwd ms':>10}{'fwd+bwd ms':>12}{'peak MB':>10}{'GFLOPs':>9}{'params':>10}{'fwd vs full':>13}")
    for r in rows:
        g = f"{r['gflops']:.3f}" if r["gflops"] is not None else "-"
        print(f"{r['module']:<36}{r['fwd_ms']:>10.2f}{r['fwd_bwd_ms']:>12.2f}{r['peak_mb']:>10.1f}{g:>9}"
              f"{r['params']:>10,}{full['fwd_ms'] / r['fwd_ms']:>12.2f}x")


def parse_size(s: str) -> tuple[int, int, int, int]:
    try:
        b, c, h, w = (int(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {s!r} must be four integers B,C,H,W such as 1,128,40,40") from None
    if c % 8:
        raise argparse.ArgumentTypeError(f"size {s!r}: C={c} must be divisible by the 8 heads")
    return b, c, h, w


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES])
    ap.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    opt = ap.parse_args(argv)
    from utils.torch_utils import select_device

    device = select_device(opt.device)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"median of {opt.repeats} (after {opt.warmup} warm-up)")
    for size in opt.sizes:
        torch.manual_seed(opt.seed)
        x = torch.randn(*size, device=device)
        rows = [measure(name, m.to(device), x, opt.repeats, opt.warmup) for name, m in candidates(*size[1:]).items()]
        print_table(size, rows)


if __name__ == "__main__":
    main()
