"""Speed, memory and FLOPs of BiLevelRoutingAttention against a naive BRA and plain full attention.

    python benchmarks/bench_attention.py                        # every shape, CPU, fp32
    python benchmarks/bench_attention.py --quick                # (1,256,40,40) and (8,256,40,40) only
    python benchmarks/bench_attention.py --device cuda --batch 16

Three modules per input shape (N, C, H, W), all with C channels and 8 heads:
  * bra:   models.attention.bra.BiLevelRoutingAttention with the detector's settings (n_win=7, topk=4,
           identity kv, LePE 3x3, qkvo);
  * naive: benchmarks.naive_bra.NaiveBRA, the same maths computed like the original BiFormer code
           (expand + gather of every region per query region, explicit softmax), same weights;
  * full:  a qkv linear, `F.scaled_dot_product_attention` over all H*W tokens, an output linear.

Method. Timings are medians over `--repeats` runs, interleaved (bra, naive, full, bra, ...) after one warm-up
each, so a slow spell of a shared machine hits all three alike; read the ratios first. `fwd` is one forward
under `torch.no_grad()`; `fwd+bwd` is a forward with gradients plus `backward` of the output's sum. Peak memory
is the highest amount of tensor memory alive at once during one fwd+bwd beyond what existed before it
(input, weights): on CUDA `torch.cuda.max_memory_allocated` minus the allocation before the step; on the CPU
the running sum of every allocation and free the PyTorch profiler records (`profile_memory=True`), in order.
GFLOPs are counted by `utils.flops.count_flops` for one forward (a multiply-add is 2 FLOPs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.naive_bra import NaiveBRA  # noqa: E402
from models.attention.bra import BiLevelRoutingAttention  # noqa: E402
from utils.flops import count_flops  # noqa: E402

SHAPES = [(1, 256, 40, 40), (8, 256, 40, 40), (8, 512, 20, 20), (1, 256, 80, 80), (1, 128, 160, 160)]
QUICK_SHAPES = SHAPES[:2]


class FullAttention(nn.Module):
    """Multi-head self-attention over every token of the map: (N, C, H, W) in and out."""

    def __init__(self, dim: int, num_heads: int = 8):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        qkv = self.qkv(x.flatten(2).transpose(1, 2))  # (N, HW, 3C)
        q, k, v = qkv.view(N, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (N, m, HW, C/m) each
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(N, H * W, C)
        return self.proj(out).transpose(1, 2).reshape(N, C, H, W)


def build_modules(dim: int, device, dtype) -> dict[str, nn.Module]:
    bra = BiLevelRoutingAttention(dim, n_win=7, num_heads=8, topk=4)
    naive = NaiveBRA(dim, n_win=7, num_heads=8, topk=4)
    naive.load_state_dict(bra.state_dict())
    mods = {"bra": bra, "naive": naive, "full": FullAttention(dim, 8)}
    return {k: m.to(device=device, dtype=dtype) for k, m in mods.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(m: nn.Module, x: torch.Tensor) -> float:
    _sync(x.device)
    t = time.perf_counter()
    with torch.no_grad():
        m(x)
    _sync(x.device)
    return time.perf_counter() - t


def _train_step(m: nn.Module, x: torch.Tensor) -> None:
    m(x).sum().backward()
    x.grad = None
    for p in m.parameters():
        p.grad = None


def time_train(m: nn.Module, x: torch.Tensor) -> float:
    _sync(x.device)
    t = time.perf_counter()
    _train_step(m, x)
    _sync(x.device)
    return time.perf_counter() - t


def peak_train_bytes(m: nn.Module, x: torch.Tensor) -> int:
    """Most tensor memory alive at once during one fwd+bwd, beyond what was allocated before it."""
    if x.device.type == "cuda":
        _sync(x.device)
        base = torch.cuda.memory_allocated(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        _train_step(m, x)
        _sync(x.device)
        return torch.cuda.max_memory_allocated(x.device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _train_step(m, x)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def bench_shape(shape, device, dtype, repeats: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    mods = build_modules(shape[1], device, dtype)
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    res = {k: {"fwd": [], "train": []} for k in mods}
    for name, m in mods.items():  # warm-up
        time_forward(m, x)
        time_train(m, x)
    for r in range(repeats):
        names = list(mods)[r % len(mods):] + list(mods)[: r % len(mods)]  # rotate the order every repeat
        for name in names:
            res[name]["fwd"].append(time_forward(mods[name], x))
            res[name]["train"].append(time_train(mods[name], x))
    out = {}
    for name, m in mods.items():
        out[name] = {
            "fwd_ms": statistics.median(res[name]["fwd"]) * 1e3,
            "train_ms": statistics.median(res[name]["train"]) * 1e3,
            "peak_mb": peak_train_bytes(m, x) / 2**20,
            "gflops": count_flops(m, x.detach()) / 1e9,
        }
    return out


def format_table(rows: list[tuple[tuple, dict]]) -> str:
    head = (f"| {'shape':<18} | {'module':<6} | {'fwd ms':>8} | {'fwd+bwd ms':>10} | {'peak MB':>8} | "
            f"{'GFLOPs':>7} | {'fwd+bwd / naive':>15} | {'peak / naive':>12} | {'fwd+bwd / full':>14} |")
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for shape, res in rows:
        nv, fu = res["naive"], res["full"]
        for name, r in res.items():
            lines.append(
                f"| {str(shape):<18} | {name:<6} | {r['fwd_ms']:8.1f} | {r['train_ms']:10.1f} | "
                f"{r['peak_mb']:8.1f} | {r['gflops']:7.2f} | {r['train_ms'] / nv['train_ms']:15.2f} | "
                f"{r['peak_mb'] / nv['peak_mb']:12.2f} | {r['train_ms'] / fu['train_ms']:14.2f} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--batch", type=int, default=None, help="use this batch size for every shape")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per module and shape (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--quick", action="store_true", help=f"only {QUICK_SHAPES}")
    return ap.parse_args(argv)


def main(argv=None) -> str:
    opt = parse_args(argv)
    device = torch.device(opt.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {opt.device}: CUDA is not available on this machine; use --device cpu")
    if opt.threads:
        torch.set_num_threads(opt.threads)
    dtype = getattr(torch, opt.dtype)
    shapes = QUICK_SHAPES if opt.quick else SHAPES
    if opt.batch:
        shapes = [(opt.batch, *s[1:]) for s in shapes]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, {opt.dtype}, median of {opt.repeats}")
    rows = []
    for shape in shapes:
        rows.append((shape, bench_shape(shape, device, dtype, opt.repeats)))
        print(f"done {shape}", file=sys.stderr, flush=True)
    table = format_table(rows)
    print(table)
    return table


if __name__ == "__main__":
    main()
