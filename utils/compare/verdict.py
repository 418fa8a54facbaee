"""The report's verdict: the paired bootstrap of every model against the baseline (utils.compare.bootstrap), its
table, one sentence per model at the top of report.md, and the columns results.csv gets from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from utils.compare.bootstrap import METRICS, BootstrapDiff, Resamples, holm, paired_bootstrap, seeds_needed
from utils.compare.results import ModelResult, baseline, finished, instability
from utils.compare.size_stats import SIZE_METRICS, SizeStats
from utils.compare.sizes import SizeGT, detections_from_txt
from utils.deploy.runners import RUNTIMES
from utils.validation.image_stats import IMAGE_STATS, load_image_stats

__all__ = ["bootstrap_all", "verdict_sentence", "verdict_lines", "bootstrap_lines", "bootstrap_cols", "ALPHA_HOLM"]

ALPHA_HOLM = 0.05
_LABEL = {"map": "mAP50-95", "map50": "mAP50", "map_tta": "mAP50-95 (TTA)", "map50_tta": "mAP50 (TTA)",
          "ap_small": "AP small", "ap_medium": "AP medium", "ap_large": "AP large"}
_RT_NAME = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def _runs(m: ModelResult, folder: str = "val") -> dict:
    """seed -> ((model, seed, folder), ImageStats) of the model's finished runs that kept the matches of their
    validation in run_dir/`folder` (val, or val_tta with --augment)."""
    out = {}
    for s in m.seeds:
        f = Path(s.run_dir) / folder / IMAGE_STATS
        if f.is_file():
            out[s.seed] = ((m.name, s.seed, folder), load_image_stats(f))
    return out


def _size_runs(m: ModelResult, size_gt: SizeGT | None) -> dict:
    """seed -> ((model, seed, 'size'), SizeStats) of the model's finished runs whose validation wrote its
    detections (run_dir/val/labels, as compare's validation does); {} without ground truth by size."""
    out = {}
    if size_gt is None:
        return out
    for s in m.seeds:
        labels = Path(s.run_dir) / "val" / "labels"
        if labels.is_dir():
            out[s.seed] = ((m.name, s.seed, "size"), SizeStats.from_coco(size_gt, detections_from_txt(labels, size_gt)))
    return out


def bootstrap_all(models: Sequence[ModelResult], resamples: int, seed: int = 0, size_gt: SizeGT | None = None) -> None:
    """Set each finished model's `bootstrap` against the baseline, with Holm's adjustment over the models; nothing
    when `resamples` < 1 or the baseline kept no matches. With the split's ground truth by size (`size_gt`) the
    same resamples also give AP small, medium and large (COCOeval's, from each run's val/labels)."""
    base = baseline(models)
    others = [m for m in finished(models) if m is not base]
    if base is None or resamples < 1 or not others:
        return
    base_runs = _runs(base)
    if not base_runs:
        return
    res = Resamples(next(iter(base_runs.values()))[1].files, resamples, seed)
    base_tta, base_size = _runs(base, "val_tta"), _size_runs(base, size_gt)
    for m in others:
        m.bootstrap = paired_bootstrap(base_runs, _runs(m), res)
        if base_tta:  # --augment: the same resamples, the TTA validations' matches
            tta = paired_bootstrap(base_tta, _runs(m, "val_tta"), res)
            m.bootstrap.update({f"{k}_tta": replace(d, metric=f"{k}_tta") for k, d in tta.items()})
        if base_size:
            m.bootstrap.update(paired_bootstrap(base_size, _size_runs(m, size_gt), res, SIZE_METRICS))
    for metric in [*METRICS, *(f"{k}_tta" for k in METRICS), *SIZE_METRICS]:
        adjusted = holm([m.bootstrap[metric].p_value if metric in m.bootstrap else None for m in others])
        for m, p in zip(others, adjusted):
            if metric in m.bootstrap:
                m.bootstrap[metric].p_holm = p


def _pct(x: float | None, b: float | None) -> str | None:
    if x is None or b is None or not b or not np.isfinite(x) or not np.isfinite(b):
        return None
    return f"{100 * (x / b - 1):+.0f}%"


def _costs(m: ModelResult, base: ModelResult) -> str:
    pairs = [("GFLOPs", m.gflops, base.gflops), ("parameters", m.params, base.params)]
    pairs += [(f"{_RT_NAME.get(rt, rt)} latency", m.deploy_latency[rt].median_ms, base.deploy_latency[rt].median_ms)
              for rt in RUNTIMES if rt in m.deploy_latency and rt in base.deploy_latency]
    if 1 in m.latency and 1 in base.latency:
        pairs.append(("PyTorch latency", m.latency[1].median_ms, base.latency[1].median_ms))
    if m.memory and base.memory:
        pairs.append(("training memory", m.memory.peak_mb, base.memory.peak_mb))
    return ", ".join(f"{d} {label}" for label, x, b in pairs if (d := _pct(x, b)) is not None)


def _p(d: BootstrapDiff) -> float:
    """The p the verdict decides on: Holm-adjusted where it was set."""
    return d.p_holm if d.p_holm is not None else d.p_value


def _direction(d: BootstrapDiff) -> str:
    return "better" if d.delta > 0 else "worse"


def _told(d: BootstrapDiff) -> str:
    p = _p(d)
    if p >= ALPHA_HOLM:
        return f"not told apart from the baseline (p {p:.2g}, Holm-adjusted)"
    return f"{_direction(d)} than the baseline (p {p:.2g}, Holm-adjusted)"


def verdict_sentence(m: ModelResult, base: ModelResult) -> str:
    """One sentence: the mAP50-95 difference with its bootstrap interval, told apart or not, what this job could
    not have seen, and what the model costs."""
    d = m.bootstrap.get("map")
    if d is None:
        return f"{m.name}: no bootstrap (no run kept its validation's matches, or no seed shared with the baseline)."
    s = (f"{m.name}: mAP50-95 {d.delta:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}], {_told(d)}; this job could not see "
         f"differences under {d.mde:.3f} ({d.n_seeds} seed{'s' * (d.n_seeds != 1)}, {d.n_images} images)")
    t = m.bootstrap.get("map_tta")
    if t is not None:
        s += f"; with test-time augmentation {t.delta:+.3f} [{t.lo:+.3f}, {t.hi:+.3f}], {_told(t)}"
    s += _size_clause(m)
    costs = _costs(m, base)
    if costs:
        s += f"; costs {costs}"
    if instability(base, m):
        s += "; unstable (see below the results table)"
    return s + "."


def _size_clause(m: ModelResult) -> str:
    """'; by object size (COCO AP) small +0.010 [-0.020, +0.030], ...; none told apart' (or the sizes that are)."""
    sizes = [(k.removeprefix("ap_"), m.bootstrap[k]) for k in SIZE_METRICS if k in m.bootstrap]
    if not sizes:
        return ""
    parts = ", ".join(f"{name} {d.delta:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]" for name, d in sizes)
    apart = [f"{name} {_direction(d)}" for name, d in sizes if _p(d) < ALPHA_HOLM]
    return f"; by object size (COCO AP) {parts}; {'told apart: ' + ', '.join(apart) if apart else 'none told apart'}"


def verdict_lines(models: Sequence[ModelResult]) -> list[str]:
    """The report's first section: one verdict sentence per model against the baseline."""
    base = baseline(models)
    others = [m for m in finished(models) if m is not base]
    if base is None or not others or not any(m.bootstrap for m in others):
        return []
    return ["## Verdict", "", *[f"- {verdict_sentence(m, base)}" for m in others], "",
            "Differences are mAP50-95 minus the baseline's, mean over paired seeds; the interval is the paired "
            "bootstrap's 95% over seeds and validation images; \"could not see differences under\" is the "
            "difference a two-sided 5% test would find 80% of the time with this job's seeds and images "
            "(see \"Bootstrap over validation images\"). By object size: COCO's AP50-95 of small, medium and large "
            "objects (pycocotools' matching), its difference bootstrapped on the same resamples; \"told apart\" "
            "names the sizes whose Holm-adjusted p is under 0.05.", ""]


def _seeds_cell(d: BootstrapDiff, effect: float) -> str:
    n = seeds_needed(d, effect)
    return "more images needed" if n is None else str(n)


def bootstrap_lines(models: Sequence[ModelResult]) -> list[str]:
    """The bootstrap table: per model and metric, the difference, its interval, p raw and Holm-adjusted, the
    minimum detectable effect and the seeds needed for +0.005 and +0.01."""
    base = baseline(models)
    rows = [(m, d) for m in finished(models) if m is not base for d in m.bootstrap.values()]
    if base is None or not rows:
        return []
    d0 = rows[0][1]
    lines = ["## Bootstrap over validation images", "",
             f"{d0.resamples} resamples of the {d0.n_images} validation images (with replacement, seeded), the same "
             "for every model and seed, so a model and the baseline are always scored on the same draw; with >= 2 "
             "paired seeds each resample also draws the seeds, so the interval carries the seed noise and the "
             "validation set's own. Each run's final validation kept its per-image matches (`val/image_stats.npz`, "
             "`val.py --save-stats`) and mAP is recomputed from them. p: two-sided, from the bootstrap "
             "distribution; Holm: adjusted over the models compared with the baseline (the verdict uses it). "
             "Detectable: the difference a 5% test finds with 80% power, 2.80 x the bootstrap's standard error. "
             "Seeds for +0.005 / +0.01: the seeds that would bring the detectable difference down to it with these "
             "images (\"more images needed\" when the images' own noise is larger).", "",
             "| model | metric | seeds | Δ | 95% interval | p | p (Holm) | detectable | seeds for +0.005 | "
             "seeds for +0.01 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m, d in rows:
        holm_p = "-" if d.p_holm is None else f"{d.p_holm:.3g}"
        lines.append(f"| {m.name} | {_LABEL[d.metric]} | {d.n_seeds} | {d.delta:+.4f} | [{d.lo:+.4f}, {d.hi:+.4f}] "
                     f"| {d.p_value:.3g} | {holm_p} | {d.mde:.4f} | {_seeds_cell(d, 0.005)} | "
                     f"{_seeds_cell(d, 0.01)} |")
    return lines + [""]


def bootstrap_cols(m: ModelResult, base: ModelResult | None) -> dict:
    """results.csv columns: boot_<metric>_{delta, lo, hi, p, p_holm, mde} and the verdict sentence."""
    row = {}
    for metric in [*METRICS, *(k for k in m.bootstrap if k.endswith("_tta")), *SIZE_METRICS]:
        d = m.bootstrap.get(metric)
        for k in ("delta", "lo", "hi", "p_value", "p_holm", "mde"):
            v = getattr(d, k) if d is not None else None
            row[f"boot_{metric}_{k.replace('_value', '')}"] = "" if v is None else round(float(v), 6)
    row["verdict"] = verdict_sentence(m, base) if base is not None and m is not base else ""
    return row
