"""The comparison report: per-model and per-seed CSV files, the table (markdown, also printed) and report.md.

`ModelResult` holds what compare.py measured for one model config; the first model of a list is the baseline
every delta refers to. Charts are drawn by utils.compare.charts.
"""

from __future__ import annotations

import contextlib
import csv
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from utils.compare.results import (ModelResult, SeedResult, baseline, finished, holm_adjust, instability,
                                   model_verdict, paired_delta, share_cell)
from utils.compare.sizes import SIZES
from utils.compare.stats import NOISE_RULE
from utils.compare.sweep import read_sweep
from utils.compare.tables import (control_lines, failed_lines, paired_lines, seed_lines, size_lines, stability_lines,
                                  tta_lines)
from utils.compare.verdict import bootstrap_cols, bootstrap_lines, verdict_lines
from utils.training.run_files import ResultsLog

__all__ = ["ReportMeta", "environment", "results_rows", "seed_rows", "write_csv", "table_lines",
           "write_report", "read_results_csv", "DEPLOY_COLUMNS", "deploy_note_lines"]

# deployed runtime -> (results.csv column stem, table column); the runtimes of utils.deploy.runners.RUNTIMES
DEPLOY_COLUMNS = {"onnxruntime": ("latency_ort_b1", "ms/img ORT b1"), "openvino": ("latency_openvino_b1",
                                                                                   "ms/img OV b1")}


@dataclass
class ReportMeta:
    """How the comparison was run, for the head of the report."""

    command: str
    versions: dict[str, str]
    device: str
    settings: dict[str, object]
    wall_s: float = 0.0
    imgsz: int = 640
    routing_imgsz: int = 640  # network input size of the routing figures
    resumed: str = ""  # with --resume: what this attempt reused and re-ran
    size_counts: dict[str, int] | None = None  # ground-truth objects per COCO size in the val split
    deploy: str = ""  # how the deployed runtimes were run (versions, threads), or why they were not


def environment(device) -> tuple[dict[str, str], str]:
    """(library versions, the device in words) for the head of the report."""
    import torchvision  # lazy: it takes seconds to load, and only its version is read here

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__}
    if device.type == "cuda":
        return versions, f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    # not platform.processor(): on Linux it forks `uname -p`, and a fork once ONNX Runtime's and OpenVINO's thread
    # pools are loaded (by the latency step, before the report) can die with SIGSEGV
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return versions, f"CPU: {cpu}, {torch.get_num_threads()} threads"


def _lat(m: ModelResult, bs: int) -> float:
    return m.latency[bs].median_ms if bs in m.latency else float("nan")


def _deploy_lat(m: ModelResult | None, rt: str) -> float:
    return m.deploy_latency[rt].median_ms if m is not None and rt in m.deploy_latency else float("nan")


def _deploy_runtimes(models: Sequence[ModelResult]) -> list[str]:
    """The deployed runtimes the job measured or tried (none with --no-deploy-latency)."""
    have = {rt for m in models for rt in (*m.deploy_latency, *m.deploy_errors)}
    return [rt for rt in DEPLOY_COLUMNS if rt in have]


def _epoch_s(m: ModelResult) -> float:
    return float(np.mean([s.epoch_s for s in m.seeds])) if m.seeds else float("nan")


def _r(x: float | None, nd: int = 5):
    return "" if x is None else round(x, nd)


def _noise_cols(m: ModelResult, base: ModelResult | None) -> dict:
    row = {}
    for metric in ("map50", "map"):
        s = m.summary(metric)
        row.update({f"{metric}_mean": round(s.mean, 5), f"{metric}_std": round(s.std, 5)})
        if base is None or m is base:  # the baseline is not compared with itself
            delta = 0.0 if m is base else ""
            row.update({f"{metric}_delta": delta, f"{metric}_mark": "", f"{metric}_p": "", f"{metric}_mark_by": "",
                        f"{metric}_p_holm": ""})
            continue
        v = model_verdict(base, m, metric)
        row.update({f"{metric}_delta": round(v.unpaired.delta, 5), f"{metric}_mark": v.mark,
                    f"{metric}_p": _r(v.unpaired.p_value, 4), f"{metric}_mark_by": v.decided_by,
                    f"{metric}_p_holm": _r(v.p_holm, 4)})
    return row


def _paired_cols(m: ModelResult, base: ModelResult | None) -> dict:
    """paired_n and, per metric, the paired mean difference (with CI and p for mAP) against the baseline."""
    compared = base is not None and m is not base
    row = {"paired_n": model_verdict(base, m, "map").paired.n if compared else ""}
    for metric in ("map", "map50"):
        p = model_verdict(base, m, metric).paired if compared else None
        for k in ("delta", "ci_low", "ci_high", "p_value"):
            row[f"paired_{metric}_{k.replace('_value', '')}"] = _r(getattr(p, k)) if p else ""
    for metric in ("ap_all", *(f"ap_{k}" for k in SIZES)):
        row[f"paired_{metric}_delta"] = _r(paired_delta(base, m, metric)) if compared else ""
    return row


def results_rows(models: Sequence[ModelResult]) -> list[dict]:
    """One dict per model (results.csv): figures, deltas against models[0], noise decisions and paired tests.

    A model without a finished run has only its name, config, failure count and errors.
    """
    base = baseline(models)
    holm_adjust(models)
    runtimes = _deploy_runtimes(models)
    rows = []
    for m in models:
        row = dict(model=m.name, cfg=m.cfg, seeds=len(m.seeds), failed=len(m.failures))
        if m.seeds:
            row.update(params=m.params, gflops=round(m.gflops, 4), **_noise_cols(m, base))
            row.update({k: _r(m.mean(k)) for k in ("ap_all", *(f"ap_{s}" for s in SIZES))})
            if any(s.map_tta is not None for s in m.seeds):
                row.update(map50_tta=_r(m.mean("map50_tta")), map_tta=_r(m.mean("map_tta")),
                           paired_map_tta_delta=_r(paired_delta(base, m, "map_tta")) if base and m is not base
                           else "")
            row.update(_paired_cols(m, base))
            for bs in sorted(m.latency):
                row[f"latency_b{bs}_ms"] = round(_lat(m, bs), 3)
            row.update(_deploy_cols(m, base, runtimes))
            row["train_mem_mb"] = round(m.memory.peak_mb, 1) if m.memory else ""
            row["epoch_s"] = round(_epoch_s(m), 3)
            row["plugin_share"] = "" if m.share() is None else round(m.share(), 6)
            row["unstable"] = "; ".join(instability(base, m))
            row.update(bootstrap_cols(m, base))
        row["error"] = "; ".join(f"seed {f.seed}: {f.error}" for f in m.failures)
        rows.append(row)
    return rows


def _deploy_cols(m: ModelResult, base: ModelResult | None, runtimes: Sequence[str]) -> dict:
    """Per deployed runtime: ms per image at batch 1, its relative difference from the baseline's (x / base - 1)
    and, where it has no figure, why; empty cells where there is none."""
    row = {}
    for rt in runtimes:
        stem = DEPLOY_COLUMNS[rt][0]
        v, b = _deploy_lat(m, rt), _deploy_lat(base, rt)
        row[f"{stem}_ms"] = round(v, 3) if np.isfinite(v) else ""
        row[f"{stem}_delta"] = (round(v / b - 1, 4) if base is not None and m is not base and np.isfinite(v)
                                and np.isfinite(b) and b > 0 else "")
        row[f"{stem}_error"] = m.deploy_errors.get(rt, "")
    return row


def _seed_row(m: ModelResult, s: SeedResult) -> dict:
    return dict(model=m.name, seed=s.seed, status="ok", precision=round(s.mp, 5), recall=round(s.mr, 5),
                map50=round(s.map50, 5), map=round(s.map, 5), ap_all=_r(s.ap_all), ap_small=_r(s.ap_small),
                ap_medium=_r(s.ap_medium), ap_large=_r(s.ap_large), map50_tta=_r(s.map50_tta), map_tta=_r(s.map_tta),
                epoch_s=round(s.epoch_s, 3),
                plugin_share="" if s.share is None else round(s.share, 6), run_dir=str(s.run_dir), error="",
                train_log=str(s.run_dir / "train.log"), host=s.host or "", device=s.device or "",
                threads="" if s.threads is None else s.threads, attempts=s.attempts)


def seed_rows(models: Sequence[ModelResult]) -> list[dict]:
    """One dict per (model, seed) run (results_seeds.csv), seed order; a failed run has status 'failed' and its
    error instead of figures."""
    rows = []
    for m in models:
        runs = [(s.seed, _seed_row(m, s)) for s in m.seeds]
        runs += [(f.seed, dict(model=m.name, seed=f.seed, status="failed", run_dir=str(f.log.parent),
                               error=f.error, train_log=str(f.log))) for f in m.failures]
        rows += [r for _, r in sorted(runs, key=lambda x: x[0])]
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))  # union of keys in first-seen order
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def read_results_csv(path: str | Path) -> dict[str, np.ndarray]:
    """A YOLOv5 results.csv (space-padded header) as column name -> float array."""
    return ResultsLog(path).read()


def _pct(x: float, b: float) -> str:
    return f"{100 * (x - b) / b:+.0f}%" if b and np.isfinite(x) and np.isfinite(b) else ""


def _metric_cell(m: ModelResult, base: ModelResult | None, metric: str) -> str:
    s = m.summary(metric)
    cell = f"{s.mean:.3f} ± {s.std:.3f}" if s.n > 1 else f"{s.mean:.3f}"
    if base is None or m is base:
        return cell
    v = model_verdict(base, m, metric)
    return f"{cell} ({v.unpaired.delta:+.3f} {v.mark})"


def _row_cells(m: ModelResult, base: ModelResult | None, batch_sizes: Sequence[int],
               runtimes: Sequence[str] = ()) -> list[str]:
    first = base is None or m is base  # no bracketed delta
    name = m.name + (f" ({len(m.failures)} of {len(m.failures) + len(m.seeds)} runs failed)" if m.failures else "")
    cells = [name, f"{m.params / 1e6:.3f}" + ("" if first else f" ({_pct(m.params, base.params)})"),
             f"{m.gflops:.2f}" + ("" if first else f" ({_pct(m.gflops, base.gflops)})"),
             _metric_cell(m, base, "map50"), _metric_cell(m, base, "map")]
    for bs in batch_sizes:
        v = _lat(m, bs)
        cells.append(f"{v:.1f}" + ("" if first else f" ({_pct(v, _lat(base, bs))})"))
    for rt in runtimes:
        v = _deploy_lat(m, rt)
        delta = "" if first else _pct(v, _deploy_lat(base, rt))
        cells.append("n/a" if not np.isfinite(v) else f"{v:.1f}" + (f" ({delta})" if delta else ""))
    mem = m.memory.peak_mb if m.memory else float("nan")
    bmem = base.memory.peak_mb if base is not None and base.memory else 0.0
    cells.append(f"{mem:.0f}" + ("" if first else f" ({mem - bmem:+.0f})"))
    e = _epoch_s(m)
    cells.append(f"{e:.1f}" + ("" if first else f" ({_pct(e, _epoch_s(base))})"))
    cells.append(share_cell(m.share()))
    return cells


def deploy_note_lines(models: Sequence[ModelResult], deploy: str = "") -> list[str]:
    """Under the table: how the ORT / OV columns were measured, and why a cell says n/a."""
    runtimes = _deploy_runtimes(models)
    lines = [f"Deployed latency: {deploy}"] if deploy else []
    why = [f"{m.name} {DEPLOY_COLUMNS[rt][1].split()[1]}: {' '.join(m.deploy_errors[rt].split())}"
           for m in finished(models) for rt in runtimes if rt in m.deploy_errors]
    if why:
        lines += [""] + ["n/a in the deployed-latency columns:"] + [f"- {w}" for w in why]
    return lines + [""] if lines else []


def table_lines(models: Sequence[ModelResult], imgsz: int) -> list[str]:
    """The comparison table as markdown lines (also printed at the end of a run); a model without a finished
    run gets a row that says so and no figures."""
    base, done = baseline(models), finished(models)
    holm_adjust(models)
    batch_sizes = sorted({bs for m in models for bs in m.latency})
    runtimes = _deploy_runtimes(models)
    mem_kind = "CUDA" if any(m.memory and m.memory.method.startswith("cuda") for m in done) else "RSS"
    head = ["model", "params (M)", f"GFLOPs@{imgsz}", "mAP50", "mAP50-95",
            *[f"ms/img b{bs}" for bs in batch_sizes], *[DEPLOY_COLUMNS[rt][1] for rt in runtimes],
            f"train mem MB ({mem_kind})", "s/epoch", "plug-in share"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for m in models:
        cells = (_row_cells(m, base, batch_sizes, runtimes) if m.seeds else
                 [m.name, f"all {len(m.failures)} runs failed (see Failed runs)"] + ["-"] * (len(head) - 2))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


_HOW_TO_READ = """\
- The first row is the baseline; every other cell shows its value and, in brackets, the difference from the
  baseline (relative for size and speed, absolute for mAP and memory).
- **mAP50 / mAP50-95**: mean ± sample std over the finished seeds, each seed's `best.pt` validated by val.py on
  the val split; the bracketed delta is the difference of the means. {noise} The section "Paired against the
  baseline" gives both tests for every model.
- **GFLOPs** are counted by running the model once at {imgsz}x{imgsz} (torch.utils.flop_counter, attention
  matmuls included), not extrapolated from a small input; parameters and GFLOPs are those of the model summary
  (BatchNorm not fused).
- **ms/img bN**: median inference time per image at batch N (fused BatchNorm, eval mode, {precision}), all models
  timed in one process, interleaved round-robin after a warm-up; bracketed figures are relative to the baseline.
- **ms/img ORT b1 / OV b1** (when measured): the same weights exported as `export.py` writes them (fp32, fixed
  {imgsz}x{imgsz}, batch 1, ONNX opset 17) and run on the CPU by ONNX Runtime and by OpenVINO, timed in the same
  rounds as the PyTorch batch-1 figures: what each plug-in costs where the model is deployed. `n/a`: the runtime
  is missing or the export failed (the reason is under the table).
- **train mem**: {memory}
- **s/epoch**: wall time of the training epochs (each includes its validation pass) divided by their number,
  averaged over seeds; the models train one after another in this process, so they share the machine alike.
- **plug-in share**: how much the attention plug-ins add to the features they sit on, rms(gamma * block(x)) /
  rms(x) for `x + gamma * block(x)`, averaged over the model's plug-in layers and seeds, measured with each
  seed's `best.pt` on the first 32 validation images (`models/attention/share.py`). gamma starts at zero, so a
  share near 0% means fine-tuning has not yet switched the plug-ins on: the model still predicts what the
  baseline predicts, and its mAP difference says nothing about the attention. `-`: no Residual-wrapped plug-in.
- Tiny data and few epochs make mAP noisy: read a `*` on a small data set as a hint, and confirm on your data
  with more seeds and epochs (see the command above).
"""

_MEMORY = {
    "cuda_max_memory_allocated": "peak CUDA memory allocated by one training step as train.py runs it (forward, "
                                 "loss, backward, SGD step with AdamW for the plug-in layers, EMA) at the training "
                                 "batch size (`torch.cuda.max_memory_allocated`).",
    "cpu_peak_rss_subprocess": "peak resident memory of a fresh Python process that builds the model and runs one "
                               "training step as train.py runs it (forward, loss, backward, SGD step with AdamW for "
                               "the plug-in layers, EMA) at the training batch size (VmHWM on Linux); it includes "
                               "the interpreter and PyTorch (the same for every model), so read the differences.",
}


def _head(models: Sequence[ModelResult], meta: ReportMeta) -> list[str]:
    settings = ", ".join(f"{k}={v}" for k, v in meta.settings.items())
    versions = ", ".join(f"{k} {v}" for k, v in meta.versions.items())
    lines = [f"# Attention plug-ins against {models[0].name}", "", "```bash", meta.command, "```", "",
             f"- Settings: {settings}", f"- Versions: {versions}", f"- Device: {meta.device}",
             f"- Wall time of the whole job: {meta.wall_s / 60:.1f} min"]
    if meta.resumed:
        lines.append(f"- Resumed: {meta.resumed}")
    if baseline(models) is None:
        lines.append(f"- The baseline {models[0].name} has no finished run: the figures have no deltas.")
    return lines + [""]


def sweep_lines(models: Sequence[ModelResult], save_dir: Path) -> list[str]:
    """With --sweep: one table per plug-in config, its variants grouped by what varied (utils.compare.sweep)."""
    variants = [v for v in read_sweep(save_dir) if v.varied]
    if not variants:
        return []
    by_name, base = {m.name: m for m in models}, baseline(models)
    lines = ["## Where the attention goes (--sweep)", "",
             "Each plug-in config beside its variants: the plug-in alone at P3, P4 or P5 of the neck (before the C3 "
             "that feeds Detect there) and, for BRA, topk and n_win one at a time at the published placement. "
             "mAP50-95 with its difference from the baseline (as in the table above); the YAML of every variant is "
             "in `sweep/`.", ""]
    for cfg in dict.fromkeys(v.base for v in variants):
        lines += [f"**{cfg}**", "", "| variant | varied | value | params (M) | GFLOPs | mAP50-95 | plug-in share |",
                  "|---|---|---|---|---|---|---|"]
        for v in sorted((v for v in variants if v.base == cfg), key=lambda v: (v.varied != "placement", v.varied)):
            m = by_name.get(v.name)
            if m is None or not m.seeds:
                lines.append(f"| {v.name} | {v.varied} | {v.value} | - | - | no finished run | - |")
                continue
            lines.append(f"| {v.name} | {v.varied} | {v.value} | {m.params / 1e6:.3f} | {m.gflops:.2f} | "
                         f"{_metric_cell(m, base, 'map')} | {share_cell(m.share())} |")
        lines.append("")
    return lines


def write_report(models: Sequence[ModelResult], meta: ReportMeta, save_dir: Path, charts: Sequence[Path] = (),
                 routing: Sequence[Path] = ()) -> Path:
    """Write report.md into `save_dir`; returns its path."""
    holm_adjust(models)
    save_dir = Path(save_dir)
    timed = [m.memory.method for m in models if m.memory]
    method = timed[0] if timed else "cpu_peak_rss_subprocess"
    lines = [*_head(models, meta), *verdict_lines(models), "## Results", "", *table_lines(models, meta.imgsz), "",
             *stability_lines(models), *deploy_note_lines(models, meta.deploy), *failed_lines(models, save_dir),
             "## How to read it", "",
             _HOW_TO_READ.format(noise=NOISE_RULE, imgsz=meta.imgsz, memory=_MEMORY.get(method, method),
                                 precision="FP16" if meta.settings.get("half") else "FP32"),
             *paired_lines(models), *bootstrap_lines(models), *control_lines(models),
             *size_lines(models, meta.size_counts), *tta_lines(models), *sweep_lines(models, save_dir),
             "## Charts", ""]
    lines += [f"![{p.stem}]({p.name})" for p in charts] + [""]
    heat = [p for p in routing if Path(p).name == "heatmaps.png"]
    routing = [p for p in routing if p not in heat]
    if heat:
        lines += ["## Where the models look", "",
                  "Grad-CAM (utils/heatmaps.py, through the `grad-cam` package) on the three maps the Detect head "
                  "reads (P3-P5, the maps the plug-ins feed), for each photo's top-scoring class: red is where "
                  "that score's gradient weights the activations most. A column per model (seed 0's best.pt), the "
                  f"photos letterboxed to {meta.routing_imgsz}; `detect.py --heatmap gradcam` (or `eigencam`) draws "
                  "the same for any image.", "", f"![heatmaps]({heat[0].name})", ""]
    if routing:
        lines += ["## Routing of Bi-Level Routing Attention", "",
                  "Each panel: the regions of one BRA layer on the photo (grid), a query region outlined in yellow, "
                  "and the top-k regions it routes to shaded red, more opaque for a larger routing weight. Queries "
                  "are the centres of the most confident detections (green boxes, confidence >= 0.05) or the photo "
                  "centre; the "
                  f"photo is letterboxed to {meta.routing_imgsz} as detect.py does. Regions that lie wholly in the "
                  "letterbox padding are not on the photo; the panel header says when a query routes to them.", ""]
        lines += [f"![{p.stem}]({p.relative_to(save_dir).as_posix()})" for p in routing] + [""]
    lines += ["## Every run", "", *seed_lines(models), "",
              "Files: `results.csv` (one row per model), `results_seeds.csv` (one row per run, with its status and "
              "error), each run's folder holds its training output (`results.csv`, `weights/best.pt`), "
              "`train.log`, `val/` (with the detections, `val/labels/`) and `result.json` (its figures, which "
              "`--resume` reuses).", ""]
    path = save_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
