"""Deployed CPU latency of the plug-in models against the baseline: PyTorch, ONNX Runtime and OpenVINO, interleaved.

    python -m benchmarks.deploy_latency                                   # n, BRA, HiLo, Slide at 320 and 640, 1 thread
    python -m benchmarks.deploy_latency --threads 1 2 --rounds 20
    python -m benchmarks.deploy_latency --variants ort ort-basic ort-extended ort-slim --imgsz 320
    python -m benchmarks.deploy_latency --profile runs/deploy_profile     # + ONNX Runtime's operator profile

For each image size: every config is built (random initialisation, seed 0) with its Residual gates set to
`--gamma` (they start at zero; a zero gate must not let any runtime drop the plug-in), BatchNorm fused, and
exported as export.py does (fp32, batch 1, fixed size, opset 17). Then, for each thread count, every (model,
runtime) pair is timed in one `utils.deploy.latency.measure_latency` call: `--warmup` untimed calls each, then
`--rounds` rounds in which every pair runs once, the order rotated each round; the figures are the median ms
and the fastest call's ms (on a shared machine a call is only ever slowed down). PyTorch runs eager under
`torch.inference_mode()` with `torch.set_num_threads(threads)`; ONNX Runtime and
OpenVINO get `threads` intra-op threads (utils.deploy.runners). GFLOPs: utils.flops (the model summary's count, one
forward at that size, BatchNorm not fused).

Target (the export issue): for BRA and HiLo, the latency overhead over the baseline in ONNX Runtime is at most
1.25x the GFLOPs overhead: (ms_plugin / ms_base - 1) <= 1.25 * (GFLOPs_plugin / GFLOPs_base - 1). The columns
`Δort/ΔGF` give that ratio of overheads (<= 1.25 meets it) from the medians and the fastest calls; the "Target"
table after each block adds the ratio from the profile's kernel sum when --profile is given.

ONNX Runtime variants (`--variants`; the default row `ort` is ORT's own default, graph optimisation 'all'):
ort-basic / ort-extended / ort-disable (other graph optimisation levels) and ort-slim (the graph simplified by
onnxslim, then 'all'). `--profile DIR` then runs every ONNX model `--profile-runs` more times, interleaved, with
ONNX Runtime's profiler (JSON traces in DIR), counts each node at its fastest call (the estimate least disturbed
by other work on the machine) and prints where the kernel time goes: by operator type, in the plug-in layers'
nodes (/model.{i}/...) and in the layout changes ONNX Runtime inserts around them.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from benchmarks.ort_profile import add_kernel_overheads, print_profile, ratio
from utils.errors import UserError

DEFAULT_CFGS = ("yolov5n.yaml", "yolov5n_biformer.yaml", "yolov5n_hilo.yaml", "yolov5n_slide.yaml")
TARGET = 1.25
TARGET_MODELS = ("biformer", "hilo")  # the plug-ins the target is set for (name suffixes)
VARIANTS = ("pytorch", "ort", "openvino", "ort-basic", "ort-extended", "ort-disable", "ort-slim")
DEFAULT_VARIANTS = ("pytorch", "ort", "openvino")
ORT_VARIANT_LEVEL = {"ort": "all", "ort-basic": "basic", "ort-extended": "extended", "ort-disable": "disable",
                     "ort-slim": "all"}


def build_model(cfg: str, gamma: float, seed: int = 0) -> nn.Module:
    """`cfg` randomly initialised (seed), every Residual gate set to `gamma` (checked non-zero), fp32, eval."""
    from models.common import Residual
    from models.yolo import Model

    if gamma == 0:
        raise UserError("--gamma 0 would time plug-ins whose output is multiplied by zero; give a non-zero gate")
    torch.manual_seed(seed)
    model = Model(cfg, verbose=False).eval()
    for m in model.modules():
        if isinstance(m, Residual):
            with torch.no_grad():
                m.gamma.fill_(gamma)
    return model


def plugin_layers(model: nn.Module) -> list[int]:
    """Indices of the model's Residual-wrapped plug-in layers (their ONNX nodes are named /model.{i}/...)."""
    from models.common import Residual

    return [i for i, m in enumerate(model.model) if isinstance(m, Residual)]


def _slim(src: Path) -> Path:
    import onnx
    import onnxslim

    dst = src.with_name(src.stem + "_slim.onnx")
    onnx.save(onnxslim.slim(onnx.load(str(src))), str(dst))
    return dst


def _onnx_nodes(path: Path, layers: list[int]) -> tuple[int, int]:
    """(nodes in the graph, nodes inside the plug-in layers): a plug-in with no node was dropped by the export."""
    import onnx

    g = onnx.load(str(path)).graph
    inside = sum(any(n.name.startswith(f"/model.{i}/") for i in layers) for n in g.node)
    return len(g.node), inside


def export_model(name: str, model: nn.Module, imgsz: int, out_dir: Path, variants: list[str]):
    """(the fused PyTorch model, format -> exported path or the exception its export raised)."""
    from utils.deploy.latency import prepare_for_timing
    from utils.deploy.runners import export_for_deploy

    fused = prepare_for_timing(model)
    fmts = ["onnx"] + (["openvino"] if "openvino" in variants else [])
    files = export_for_deploy(fused, imgsz, out_dir, f"{name}_{imgsz}", fmts) if len(variants) > 1 else {}
    if "ort-slim" in variants and isinstance(files.get("onnx"), Path):
        try:
            files["onnx-slim"] = _slim(files["onnx"])
        except Exception as e:  # noqa: BLE001  (reported in the table)
            files["onnx-slim"] = e
    return fused, files


def open_runners(fused: nn.Module, files: dict, variants: list[str], threads: int):
    """variant -> runner (the fused PyTorch model for 'pytorch'), and variant -> why it has none."""
    from utils.deploy.runners import OpenVINORunner, OrtRunner, short_error

    runners, errors = {}, {}
    for v in variants:
        src = files.get({"pytorch": "", "openvino": "openvino", "ort-slim": "onnx-slim"}.get(v, "onnx"))
        try:
            if isinstance(src, BaseException):
                raise src
            if v == "pytorch":
                runners[v] = fused
            elif v == "openvino":
                runners[v] = OpenVINORunner(src, threads)
            else:
                runners[v] = OrtRunner(src, threads, level=ORT_VARIANT_LEVEL[v])
        except Exception as e:  # noqa: BLE001  (reported in the table)
            errors[v] = short_error(e)
    return runners, errors


@dataclass(frozen=True)
class LatencyOptions:
    """What one benchmark run times; the defaults and help texts are the command line's."""

    cfgs: tuple = DEFAULT_CFGS  # baseline first
    imgsz: tuple = (320, 640)
    threads: tuple = (1,)
    rounds: int = 15
    warmup: int = 3
    variants: tuple = DEFAULT_VARIANTS
    gamma: float = 0.1
    out_dir: str | None = None
    profile: str | None = None
    profile_runs: int = 10
    csv: str | None = None


def run(opt: LatencyOptions = LatencyOptions()) -> list[dict]:
    """Time every (cfg, variant) at each size and thread count; returns the rows (also printed, and written to
    opt.csv when given). The first cfg is the baseline."""
    import tempfile

    from utils.deploy.latency import measure_latency
    from utils.flops import gflops

    cfgs, imgsz, threads, rounds, warmup = opt.cfgs, opt.imgsz, opt.threads, opt.rounds, opt.warmup
    variants = list(dict.fromkeys(opt.variants))
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise UserError(f"--variants {bad}: valid are {', '.join(VARIANTS)}")
    if rounds < 1 or warmup < 0:
        raise UserError(f"--rounds {rounds} must be >= 1 and --warmup {warmup} >= 0")
    bad_sizes = [s for s in imgsz if s < 32 or s % 32]
    if bad_sizes:
        raise UserError(f"--imgsz {bad_sizes}: sizes must be multiples of 32 (the models' largest stride)")
    names = [Path(c).stem for c in cfgs]
    tmp, out_dir = None, opt.out_dir
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="deploy_latency_")
        out_dir = tmp.name
    out_dir = Path(out_dir)
    rows = []
    try:
        for size in imgsz:
            built = {n: build_model(c, opt.gamma) for n, c in zip(names, cfgs)}
            gf = {n: gflops(m, size) for n, m in built.items()}
            layers = {n: plugin_layers(m) for n, m in built.items()}
            exported = {n: export_model(n, m, size, out_dir, variants) for n, m in built.items()}
            files = {n: f for n, (_, f) in exported.items()}
            for n in names:
                onnx_file = files[n].get("onnx")
                if isinstance(onnx_file, Path) and layers[n] and _onnx_nodes(onnx_file, layers[n])[1] == 0:
                    raise RuntimeError(f"{n}: the ONNX graph has no node in plug-in layers {layers[n]}")
            for t in threads:
                torch.set_num_threads(t)
                runners, errors = {}, {}
                for n, (fused, f) in exported.items():
                    r, errors[n] = open_runners(fused, f, variants, t)
                    runners.update({f"{n}@{v}": x for v, x in r.items()})
                lat = measure_latency(runners, size, (1,), warmup=warmup, repeats=rounds)
                for n in names:
                    row = dict(imgsz=size, threads=t, model=n, gflops=round(gf[n], 4))
                    for v in variants:
                        st = lat.get(f"{n}@{v}", {}).get(1)
                        row[f"{v}_ms"] = round(st.median_ms, 3) if st else ""
                        row[f"{v}_min"] = round(st.min_ms, 3) if st else ""
                        row[f"{v}_p25"] = round(st.p25_ms, 3) if st else ""
                        row[f"{v}_p75"] = round(st.p75_ms, 3) if st else ""
                        row[f"{v}_error"] = errors[n].get(v, "")
                    rows.append(row)
                _add_overheads(rows, names[0], variants)
                print_table([r for r in rows if r["imgsz"] == size and r["threads"] == t], variants)
                if opt.profile:
                    prof = print_profile(names, files, layers, t, opt.profile_runs, Path(opt.profile) / f"{size}_t{t}")
                    add_kernel_overheads([r for r in rows if r["imgsz"] == size and r["threads"] == t], prof)
                print_target([r for r in rows if r["imgsz"] == size and r["threads"] == t])
                del runners
    finally:
        if tmp is not None:
            tmp.cleanup()
    if opt.csv:
        Path(opt.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(opt.csv, "w", newline="", encoding="utf-8") as fh:
            fields = list(dict.fromkeys(k for r in rows for k in r))
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    return rows


def _add_overheads(rows: list[dict], base_name: str, variants: list[str]) -> None:
    """Overheads against the baseline at the same size and thread count (from the medians, and from the fastest
    calls: `_min_over`), and each one divided by the GFLOPs overhead (`_over_per_gf`; the target reads 'ort')."""
    for r in rows:
        if "gflops_over" in r:
            continue
        b = next(x for x in rows if x["model"] == base_name and x["imgsz"] == r["imgsz"]
                 and x["threads"] == r["threads"])
        r["gflops_over"] = round(ratio(r["gflops"], b["gflops"]), 4)
        for v in variants:
            for stat, key in (("ms", "over"), ("min", "min_over")):
                ok = r[f"{v}_{stat}"] != "" and b[f"{v}_{stat}"] != ""
                r[f"{v}_{key}"] = round(ratio(r[f"{v}_{stat}"], b[f"{v}_{stat}"]), 4) if ok else ""
                r[f"{v}_{key}_per_gf"] = (round(r[f"{v}_{key}"] / r["gflops_over"], 3)
                                          if ok and r["gflops_over"] > 0 and r["model"] != base_name else "")


def print_table(rows: list[dict], variants: list[str]) -> None:
    """The markdown table of one (size, threads) block: median ms (its overhead) / fastest call (its overhead),
    then each runtime's overhead per GFLOPs overhead from the medians / from the fastest calls."""
    if not rows:
        return
    print(f"\n### {rows[0]['imgsz']}x{rows[0]['imgsz']}, batch 1, fp32, {rows[0]['threads']} thread(s)\n")
    head = ["model", "GFLOPs (Δ)"] + [f"{v} ms median (Δ) / min (Δ)" for v in variants] + [
        f"Δ{v}/ΔGF median / min" for v in variants]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    pct = lambda x: "" if x == "" else f" ({100 * x:+.1f}%)"  # noqa: E731
    for i, r in enumerate(rows):
        cells = [r["model"], f"{r['gflops']:.3f}" + ("" if i == 0 else pct(r["gflops_over"]))]
        for v in variants:
            if r[f"{v}_ms"] == "":
                cells.append(f"n/a ({r[f'{v}_error']})")
            else:
                cells.append(f"{r[f'{v}_ms']:.1f}" + ("" if i == 0 else pct(r[f"{v}_over"])) +
                             f" / {r[f'{v}_min']:.1f}" + ("" if i == 0 else pct(r[f"{v}_min_over"])))
        for v in variants:
            q, qm = r[f"{v}_over_per_gf"], r[f"{v}_min_over_per_gf"]
            target = v == "ort" and r["model"].endswith(TARGET_MODELS)
            mark = lambda x: "" if x == "" or not target else (" ✓" if x <= TARGET else " ✗")  # noqa: E731
            cells.append("-" if q == "" else f"{q:.2f}{mark(q)} / {qm:.2f}{mark(qm)}")
        print("| " + " | ".join(cells) + " |")


def print_target(rows: list[dict]) -> None:
    """The target check for ONNX Runtime: each plug-in's latency overhead / its GFLOPs overhead (<= 1.25 meets
    it), from the median calls, the fastest calls and (with --profile) the kernel sum of the profile."""
    if not rows or rows[0].get("ort_ms", "") == "":
        return
    print(f"\nTarget, ONNX Runtime, {rows[0]['imgsz']}x{rows[0]['imgsz']}: overhead over {rows[0]['model']} / GFLOPs "
          f"overhead <= {TARGET}\n")
    head = ["model", "GFLOPs Δ", "ORT Δ median", "ORT Δ fastest", "ORT Δ kernels (profile)", "ratios", "met"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows[1:]:
        keys = [k for k in ("ort_over", "ort_min_over", "ort_kernels_over") if r.get(k, "") != ""]
        ratios = [r[k] / r["gflops_over"] for k in keys] if r["gflops_over"] > 0 else []
        met = "-" if not ratios else ("yes" if all(q <= TARGET for q in ratios) else
                                      "no" if all(q > TARGET for q in ratios) else "mixed")
        cells = [r["model"], f"{100 * r['gflops_over']:+.1f}%"] + [
            "-" if r.get(k, "") == "" else f"{100 * r[k]:+.1f}%" for k in ("ort_over", "ort_min_over",
                                                                             "ort_kernels_over")]
        cells += [" / ".join(f"{q:.2f}" for q in ratios) or "-", met + ("" if r["model"].endswith(TARGET_MODELS)
                                                                        else " (no target)")]
        print("| " + " | ".join(cells) + " |")


def parse_opt(argv=None) -> LatencyOptions:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--cfgs", nargs="+", default=list(DEFAULT_CFGS), help="configs, baseline first")
    p.add_argument("--imgsz", nargs="+", type=int, default=[320, 640], help="square image sizes")
    p.add_argument("--threads", nargs="+", type=int, default=[1], help="thread counts (every runtime alike)")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (every model and runtime once each)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each before the rounds")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--gamma", type=float, default=0.1, help="every Residual gate's value (non-zero)")
    p.add_argument("--out-dir", default=None, help="keep the exported files here (default: a temp folder)")
    p.add_argument("--profile", default=None, help="write ONNX Runtime profiles here and print their summary")
    p.add_argument("--profile-runs", type=int, default=10, help="profiled calls per model")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV")
    ns = vars(p.parse_args(argv))  # the same names as LatencyOptions' fields
    return LatencyOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()})


def main(argv=None) -> list[dict]:
    from utils.deploy.runners import runtime_versions

    opt = parse_opt(argv)
    v = runtime_versions()
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; torch {torch.__version__}, onnxruntime {v['onnxruntime']}, openvino "
          f"{v['openvino']}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("python -m benchmarks.deploy_latency " + " ".join(sys.argv[1:] if argv is None else argv))
    return run(opt)


if __name__ == "__main__":
    from utils.cli import cli_errors

    cli_errors(main)()  # a bad option: one `ERROR: ...` line, exit status 2
