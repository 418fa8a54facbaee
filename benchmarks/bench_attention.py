"""Speed, memory and FLOPs of the attention plug-ins against their naive references and plain full attention.

    python -m benchmarks.bench_attention                          # every shape and module, CPU, fp32
    python -m benchmarks.bench_attention --quick --threads 1      # (1,256,40,40) and (8,256,40,40) only
    python -m benchmarks.bench_attention --modules bra bra-naive full
    python -m benchmarks.bench_attention --device cuda --batch 16

Modules per input shape (N, C, H, W), 8 heads each; a naive reference carries its fast module's weights (the same
numbers: tests/test_bra.py, tests/test_hilo.py and tests/test_slide.py check each fast module against it):
  * bra:         models.attention.bra.BiLevelRoutingAttention with the detector's settings (n_win=7, topk=4,
                 identity kv, 3x3 LePE, qkvo); bra-naive: models.attention.reference.bra (expand + gather,
                 explicit softmax);
  * hilo:        models.attention.hilo.HiLo (window 2, alpha 0.5); hilo-naive: models.attention.reference.hilo (explicit
                 softmax over every query-key pair, as the LITv2 code);
  * slide:       models.attention.slide.SlideAttention (3x3); slide-fused: the same after `fuse()`;
                 slide-naive: models.attention.reference.slide (neighbourhoods copied out with F.unfold; the learnable
                 path, zero in a fresh module, skipped);
  * full:        a qkv linear, `F.scaled_dot_product_attention` over all H*W tokens, an output linear.

Method. Timings are medians over `--repeats` runs, interleaved (order rotated every repeat) after one warm-up
each, so a slow spell of a shared machine hits all modules alike; read the ratios first. A module whose warm-up
forward+backward takes longer than `--max-step-s` is not repeated: its warm-up times are reported, marked `†`.
`fwd` is one forward under `torch.no_grad()`; `fwd+bwd` a forward with gradients plus `backward` of the output's
sum. Peak memory is the most tensor memory alive at once during one fwd+bwd beyond what existed before it (input,
weights): on CUDA `torch.cuda.max_memory_allocated` minus the allocation before the step; on the CPU the running
sum of every allocation and free the PyTorch profiler records (`profile_memory=True`), in order. GFLOPs are
counted by `utils.flops.count_flops` for one forward (a multiply-add is 2 FLOPs); the counter does not see
elementwise products, so Slide's two contractions (4 * N * C * k*k * H*W FLOPs) are added by formula (`*`).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent

from models.attention.bra import BiLevelRoutingAttention  # noqa: E402
from models.attention.hilo import HiLo  # noqa: E402
from models.attention.reference.bra import NaiveBRA  # noqa: E402
from models.attention.reference.hilo import NaiveHiLo  # noqa: E402
from models.attention.reference.slide import NaiveSlide  # noqa: E402
from models.attention.slide import SlideAttention  # noqa: E402
from utils.flops import count_flops  # noqa: E402

SHAPES = [(1, 256, 40, 40), (8, 256, 40, 40), (8, 512, 20, 20), (1, 256, 80, 80), (1, 128, 160, 160)]
QUICK_SHAPES = SHAPES[:2]
MODULES = ("bra", "bra-naive", "hilo", "hilo-naive", "slide", "slide-fused", "slide-naive", "full")
NAIVE_OF = {"bra": "bra-naive", "hilo": "hilo-naive", "slide": "slide-naive", "slide-fused": "slide-naive"}
SLIDE_ROWS = ("slide", "slide-fused", "slide-naive")


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


def _with_weights(naive: nn.Module, fast: nn.Module) -> nn.Module:
    naive.load_state_dict(fast.state_dict())
    return naive


def build_modules(names: list[str], dim: int, device, dtype) -> dict[str, nn.Module]:
    """The modules named, in MODULES order, on `device` in `dtype`; naive references share the fast weights."""
    torch.manual_seed(0)
    bra = BiLevelRoutingAttention(dim, n_win=7, num_heads=8, topk=4)
    hilo, slide = HiLo(dim, num_heads=8), SlideAttention(dim, num_heads=8)
    makers = {
        "bra": lambda: bra,
        "bra-naive": lambda: _with_weights(NaiveBRA(dim, n_win=7, num_heads=8, topk=4), bra),
        "hilo": lambda: hilo,
        "hilo-naive": lambda: _with_weights(NaiveHiLo(dim, num_heads=8), hilo),
        "slide": lambda: slide,
        "slide-fused": lambda: copy.deepcopy(slide).fuse(),
        "slide-naive": lambda: _with_weights(NaiveSlide(dim, num_heads=8, skip_zero_deform=True), slide),
        "full": lambda: FullAttention(dim, 8),
    }
    return {n: makers[n]().to(device=device, dtype=dtype) for n in MODULES if n in names}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(m: nn.Module, x: torch.Tensor) -> None:
    m(x).sum().backward()
    x.grad = None
    for p in m.parameters():
        p.grad = None


def timed(step, m: nn.Module, x: torch.Tensor) -> float:
    """Seconds of one `step(m, x)`, device work included."""
    _sync(x.device)
    t = time.perf_counter()
    step(m, x)
    _sync(x.device)
    return time.perf_counter() - t


def _forward(m: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        m(x)


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


def forward_flops(name: str, m: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward; Slide's elementwise contractions (unseen by the counter) added by formula."""
    flops = count_flops(m, x)
    if name in SLIDE_ROWS:  # q*k summed over head_dim, weights*v summed over k*k: 2 FLOPs per product each
        n, _, h, w = x.shape
        flops += 4 * n * m.attn_dim * m.k * m.k * h * w
    return flops


def bench_shape(shape, mods: dict[str, nn.Module], repeats: int, max_step_s: float) -> dict[str, dict]:
    p = next(next(iter(mods.values())).parameters())
    torch.manual_seed(0)
    x = torch.randn(shape, device=p.device, dtype=p.dtype, requires_grad=True)
    fwd = {n: [timed(_forward, m, x)] for n, m in mods.items()}  # warm-up
    train = {n: [timed(_train_step, m, x)] for n, m in mods.items()}
    slow = {n for n in mods if train[n][0] > max_step_s}
    fast = [n for n in mods if n not in slow]
    for n in fast:
        fwd[n], train[n] = [], []
    for r in range(repeats if fast else 0):
        for n in fast[r % len(fast):] + fast[: r % len(fast)]:  # rotate the order every repeat
            fwd[n].append(timed(_forward, mods[n], x))
            train[n].append(timed(_train_step, mods[n], x))
    return {n: {"fwd_ms": statistics.median(fwd[n]) * 1e3, "train_ms": statistics.median(train[n]) * 1e3,
                "peak_mb": peak_train_bytes(m, x) / 2**20, "gflops": forward_flops(n, m, x.detach()) / 1e9,
                "once": n in slow} for n, m in mods.items()}


def _ratio(res: dict, row: str, other: str | None, key: str) -> str:
    if other is None or other == row or other not in res:
        return "-"
    return f"{res[row][key] / res[other][key]:.2f}"


COLUMNS = [("shape", 18), ("module", 11), ("fwd ms", 9), ("fwd+bwd ms", 10), ("peak MB", 8), ("GFLOPs", 7),
           ("fwd /naive", 10), ("f+b /naive", 10), ("peak /naive", 11), ("fwd /full", 9), ("f+b /full", 9),
           ("peak /full", 10)]


def format_table(rows: list[tuple[tuple, dict]]) -> str:
    head = "| " + " | ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(COLUMNS)) + " |"
    lines = [head, "|" + "|".join("-" * (w + 2) for _, w in COLUMNS) + "|"]
    for shape, res in rows:
        for name, r in res.items():
            mark = "†" if r["once"] else ""
            naive = NAIVE_OF.get(name)
            cells = [str(shape), name, f"{r['fwd_ms']:.1f}{mark}", f"{r['train_ms']:.1f}{mark}",
                     f"{r['peak_mb']:.1f}", f"{r['gflops']:.2f}" + ("*" if name in SLIDE_ROWS else ""),
                     *(_ratio(res, name, naive, k) for k in ("fwd_ms", "train_ms", "peak_mb")),
                     *(_ratio(res, name, "full", k) for k in ("fwd_ms", "train_ms", "peak_mb"))]
            lines.append("| " + " | ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}"
                                           for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS))) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--batch", type=int, default=None, help="use this batch size for every shape")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per module and shape (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--quick", action="store_true", help=f"only {QUICK_SHAPES}")
    ap.add_argument("--modules", nargs="+", default=list(MODULES), metavar="NAME",
                    help=f"a subset of {', '.join(MODULES)} (default: all)")
    ap.add_argument("--max-step-s", type=float, default=30.0,
                    help="a module whose warm-up fwd+bwd takes longer is timed once, not repeated")
    opt = ap.parse_args(argv)
    bad = [m for m in opt.modules if m not in MODULES]
    if bad:
        ap.error(f"--modules {' '.join(bad)}: unknown; valid names are {', '.join(MODULES)}")
    return opt


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


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
    print(f"torch {torch.__version__}, {name}, {opt.dtype}, median of {opt.repeats}, "
          f"{datetime.datetime.now():%Y-%m-%d %H:%M}, load average {_load()}")
    rows = []
    for shape in shapes:
        mods = build_modules(opt.modules, shape[1], device, dtype)
        rows.append((shape, bench_shape(shape, mods, opt.repeats, opt.max_step_s)))
        print(f"done {shape}, load average {_load()}", file=sys.stderr, flush=True)
    table = format_table(rows)
    print(table)
    print(f"finished {datetime.datetime.now():%Y-%m-%d %H:%M}, load average {_load()}")
    return table


if __name__ == "__main__":
    main()
