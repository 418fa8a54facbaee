"""The comparison report: per-model and per-seed CSV files, the table (markdown, also printed) and report.md.

`ModelResult` holds what compare.py measured for one model config; the first model of a list is the baseline
every delta refers to. Charts are drawn by utils.compare_charts.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.compare_stats import NOISE_RULE, NoiseCheck, Summary, noise_check, summarize
from utils.latency import LatencyStat, MemoryStat

__all__ = ["SeedResult", "ModelResult", "ReportMeta", "results_rows", "seed_rows", "write_csv", "table_lines",
           "write_report", "read_results_csv"]


@dataclass
class SeedResult:
    """One fine-tuning run: validation of its best.pt, its time per epoch and its folder."""

    seed: int
    mp: float
    mr: float
    map50: float
    map: float
    maps: list[float]  # mAP50-95 per class (nc,), as val.run returns it
    epoch_s: float  # seconds per training epoch
    run_dir: Path
    share: float | None = None  # mean plug-in share of best.pt (utils.plugin_share); None without plug-ins


@dataclass
class ModelResult:
    """Everything measured for one model config."""

    name: str  # e.g. yolov5n_biformer
    cfg: str
    params: int
    gflops: float
    seeds: list[SeedResult] = field(default_factory=list)
    latency: dict[int, LatencyStat] = field(default_factory=dict)  # batch size -> ms per image
    memory: MemoryStat | None = None

    def summary(self, metric: str) -> Summary:
        return summarize([getattr(s, metric) for s in self.seeds])

    def values(self, metric: str) -> list[float]:
        return [float(getattr(s, metric)) for s in self.seeds]

    def share(self) -> float | None:
        """Mean plug-in share over seeds; None for a model without Residual-wrapped plug-ins."""
        v = [s.share for s in self.seeds if s.share is not None]
        return float(np.mean(v)) if v else None

    def class_ap(self) -> np.ndarray:
        """Per-class mAP50-95 averaged over seeds, (nc,)."""
        return np.mean([np.asarray(s.maps, dtype=float) for s in self.seeds], axis=0)


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


def _lat(m: ModelResult, bs: int) -> float:
    return m.latency[bs].median_ms if bs in m.latency else float("nan")


def _epoch_s(m: ModelResult) -> float:
    return float(np.mean([s.epoch_s for s in m.seeds])) if m.seeds else float("nan")


def results_rows(models: Sequence[ModelResult]) -> list[dict]:
    """One dict per model (results.csv): figures, deltas against models[0] and the noise decisions."""
    base = models[0]
    rows = []
    for m in models:
        row = dict(model=m.name, cfg=m.cfg, seeds=len(m.seeds), params=m.params, gflops=round(m.gflops, 4))
        for metric in ("map50", "map"):
            s = m.summary(metric)
            row.update({f"{metric}_mean": round(s.mean, 5), f"{metric}_std": round(s.std, 5)})
            if m is base:  # the baseline is not compared with itself
                row.update({f"{metric}_delta": 0.0, f"{metric}_mark": "", f"{metric}_p": ""})
                continue
            chk = noise_check(base.values(metric), m.values(metric))
            row.update({f"{metric}_delta": round(chk.delta, 5), f"{metric}_mark": chk.mark,
                        f"{metric}_p": "" if chk.p_value is None else round(chk.p_value, 4)})
        for bs in sorted(m.latency):
            row[f"latency_b{bs}_ms"] = round(_lat(m, bs), 3)
        row["train_mem_mb"] = round(m.memory.peak_mb, 1) if m.memory else ""
        row["epoch_s"] = round(_epoch_s(m), 3)
        row["plugin_share"] = "" if m.share() is None else round(m.share(), 6)
        rows.append(row)
    return rows


def seed_rows(models: Sequence[ModelResult]) -> list[dict]:
    """One dict per (model, seed) run (results_seeds.csv)."""
    return [dict(model=m.name, seed=s.seed, precision=round(s.mp, 5), recall=round(s.mr, 5),
                 map50=round(s.map50, 5), map=round(s.map, 5), epoch_s=round(s.epoch_s, 3),
                 plugin_share="" if s.share is None else round(s.share, 6), run_dir=str(s.run_dir))
            for m in models for s in m.seeds]


def write_csv(rows: list[dict], path: Path) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))  # union of keys in first-seen order
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def read_results_csv(path: str | Path) -> dict[str, np.ndarray]:
    """A YOLOv5 results.csv (space-padded header) as column name -> float array."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r]
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    cols = {}
    for j, name in enumerate(header):
        if name:
            cols[name] = np.array([float(r[j]) if j < len(r) and r[j] else np.nan for r in body])
    return cols


def _pct(x: float, b: float) -> str:
    return f"{100 * (x - b) / b:+.0f}%" if b and np.isfinite(x) and np.isfinite(b) else ""


def _metric_cell(m: ModelResult, base: ModelResult, metric: str) -> str:
    s = m.summary(metric)
    cell = f"{s.mean:.3f} ± {s.std:.3f}" if s.n > 1 else f"{s.mean:.3f}"
    if m is base:
        return cell
    chk: NoiseCheck = noise_check(base.values(metric), m.values(metric))
    return f"{cell} ({chk.delta:+.3f} {chk.mark})"


def _row_cells(m: ModelResult, base: ModelResult, batch_sizes: Sequence[int]) -> list[str]:
    first = m is base
    cells = [m.name, f"{m.params / 1e6:.3f}" + ("" if first else f" ({_pct(m.params, base.params)})"),
             f"{m.gflops:.2f}" + ("" if first else f" ({_pct(m.gflops, base.gflops)})"),
             _metric_cell(m, base, "map50"), _metric_cell(m, base, "map")]
    for bs in batch_sizes:
        v = _lat(m, bs)
        cells.append(f"{v:.1f}" + ("" if first else f" ({_pct(v, _lat(base, bs))})"))
    mem, bmem = (m.memory.peak_mb if m.memory else float("nan")), (base.memory.peak_mb if base.memory else 0.0)
    cells.append(f"{mem:.0f}" + ("" if first else f" ({mem - bmem:+.0f})"))
    e, be = _epoch_s(m), _epoch_s(base)
    cells.append(f"{e:.1f}" + ("" if first else f" ({_pct(e, be)})"))
    cells.append(_share_cell(m.share()))
    return cells


def _share_cell(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.2g}%"


def table_lines(models: Sequence[ModelResult], imgsz: int) -> list[str]:
    """The comparison table as markdown lines (also printed at the end of a run)."""
    base = models[0]
    batch_sizes = sorted({bs for m in models for bs in m.latency})
    mem_kind = "CUDA" if base.memory and base.memory.method.startswith("cuda") else "RSS"
    head = ["model", "params (M)", f"GFLOPs@{imgsz}", "mAP50", "mAP50-95",
            *[f"ms/img b{bs}" for bs in batch_sizes], f"train mem MB ({mem_kind})", "s/epoch", "plug-in share"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for m in models:
        lines.append("| " + " | ".join(_row_cells(m, base, batch_sizes)) + " |")
    return lines


def _seed_table(models: Sequence[ModelResult]) -> list[str]:
    lines = ["| model | seed | P | R | mAP50 | mAP50-95 | s/epoch | plug-in share | run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        for s in m.seeds:
            lines.append(f"| {m.name} | {s.seed} | {s.mp:.3f} | {s.mr:.3f} | {s.map50:.3f} | {s.map:.3f} "
                         f"| {s.epoch_s:.1f} | {_share_cell(s.share)} | {s.run_dir.name} |")
    return lines


_HOW_TO_READ = """\
- The first row is the baseline; every other cell shows its value and, in brackets, the difference from the
  baseline (relative for size and speed, absolute for mAP and memory).
- **mAP50 / mAP50-95**: mean ± sample std over the seeds, each seed's `best.pt` validated by val.py on the val
  split. {noise}
- **GFLOPs** are counted by running the model once at {imgsz}x{imgsz} (torch.utils.flop_counter, attention
  matmuls included), not extrapolated from a small input; parameters and GFLOPs are those of the model summary
  (BatchNorm not fused).
- **ms/img bN**: median inference time per image at batch N (fused BatchNorm, eval mode, {precision}), all models
  timed in one process, interleaved round-robin after a warm-up; bracketed figures are relative to the baseline.
- **train mem**: {memory}
- **s/epoch**: wall time of the training epochs (each includes its validation pass) divided by their number,
  averaged over seeds; the models train one after another in this process, so they share the machine alike.
- **plug-in share**: how much the attention plug-ins add to the features they sit on, rms(gamma * block(x)) /
  rms(x) for `x + gamma * block(x)`, averaged over the model's plug-in layers and seeds, measured with each
  seed's `best.pt` on the first 32 validation images (`utils/plugin_share.py`). gamma starts at zero, so a
  share near 0% means fine-tuning has not yet switched the plug-ins on: the model still predicts what the
  baseline predicts, and its mAP difference says nothing about the attention. `-`: no Residual-wrapped plug-in.
- Tiny data and few epochs make mAP noisy: read a `*` on a small data set as a hint, and confirm on your data
  with more seeds and epochs (see the command above).
"""

_MEMORY = {
    "cuda_max_memory_allocated": "peak CUDA memory allocated by one training step (forward, loss, backward, SGD "
                                 "step, EMA) at the training batch size (`torch.cuda.max_memory_allocated`).",
    "cpu_peak_rss_subprocess": "peak resident memory of a fresh Python process that builds the model and runs one "
                               "training step (forward, loss, backward, SGD step, EMA) at the training batch size "
                               "(VmHWM on Linux); it includes the interpreter and PyTorch (the same for every model), "
                               "so read the differences.",
}


def write_report(models: Sequence[ModelResult], meta: ReportMeta, save_dir: Path, charts: Sequence[Path] = (),
                 routing: Sequence[Path] = ()) -> Path:
    """Write report.md into `save_dir`; returns its path."""
    save_dir = Path(save_dir)
    method = models[0].memory.method if models[0].memory else "cpu_peak_rss_subprocess"
    settings = ", ".join(f"{k}={v}" for k, v in meta.settings.items())
    versions = ", ".join(f"{k} {v}" for k, v in meta.versions.items())
    lines = [f"# Attention plug-ins against {models[0].name}", "",
             "```bash", meta.command, "```", "",
             f"- Settings: {settings}", f"- Versions: {versions}", f"- Device: {meta.device}",
             f"- Wall time of the whole job: {meta.wall_s / 60:.1f} min", "", "## Results", "",
             *table_lines(models, meta.imgsz), "", "## How to read it", "",
             _HOW_TO_READ.format(noise=NOISE_RULE, imgsz=meta.imgsz, memory=_MEMORY.get(method, method),
                                 precision="FP16" if meta.settings.get("half") else "FP32"),
             "## Charts", ""]
    lines += [f"![{p.stem}]({p.name})" for p in charts] + [""]
    if routing:
        lines += ["## Routing of Bi-Level Routing Attention", "",
                  "Each panel: the regions of one BRA layer on the photo (grid), a query region outlined in yellow, "
                  "and the top-k regions it routes to shaded red, more opaque for a larger routing weight. Queries "
                  "are the centres of the most confident detections (green boxes, confidence >= 0.05) or the photo "
                  "centre; the "
                  f"photo is letterboxed to {meta.routing_imgsz} as detect.py does. Regions that lie wholly in the "
                  "letterbox padding are not on the photo; the panel header says when a query routes to them.", ""]
        lines += [f"![{p.stem}]({p.relative_to(save_dir).as_posix()})" for p in routing] + [""]
    lines += ["## Every run", "", *_seed_table(models), "",
              "Files: `results.csv` (one row per model), `results_seeds.csv` (one row per run), each run's folder "
              "holds its training output (`results.csv`, `weights/best.pt`), `train.log` and `val/`.", ""]
    path = save_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
