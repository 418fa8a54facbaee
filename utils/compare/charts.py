"""Charts of the comparison report (PNG). matplotlib is imported inside the functions, each figure on its own
Agg canvas, so importing this module changes no backend and costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from utils.compare.report import read_results_csv
from utils.compare.results import SHARE_LIMIT, ModelResult, baseline, epoch_peak_shares, finished
from utils.compare.sizes import SIZES
from utils.plots import new_figure, save_figure

__all__ = ["plot_map_vs_gflops", "plot_latency", "plot_class_ap_diff", "plot_training_curves", "plot_size_ap",
           "plot_plugin_share", "plot_all", "mean_curves", "CURVE_COLUMNS"]

# (results.csv column, panel title); train losses solid, the matching val losses dashed on the same panel
CURVE_COLUMNS = (("metrics/mAP_0.5:0.95", "mAP50-95"), ("metrics/mAP_0.5", "mAP50"),
                 ("train/box_loss", "box loss"), ("train/obj_loss", "obj loss"), ("train/cls_loss", "cls loss"))


def _color(i: int):
    from matplotlib import colormaps  # lazy: importing this module loads no matplotlib

    return colormaps["tab10"](i % 10)


def plot_map_vs_gflops(models: Sequence[ModelResult], path: Path, imgsz: int) -> Path:
    """mAP50-95 (mean, error bar = seed std) against GFLOPs, one point per model."""
    fig = new_figure((6.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for i, m in enumerate(models):
        s = m.summary("map")
        ax.errorbar(m.gflops, s.mean, yerr=s.std, fmt="o", capsize=4, color=_color(i), label=m.name)
        ax.annotate(m.name, (m.gflops, s.mean), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.margins(x=0.2, y=0.15)  # room for the labels
    ax.set(xlabel=f"GFLOPs at {imgsz}x{imgsz}", ylabel="mAP50-95", title="Accuracy against compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=150)


def plot_latency(models: Sequence[ModelResult], path: Path) -> Path:
    """Grouped bars: median ms per image at each timed batch size, error bars from the 25th to 75th percentile."""
    sizes = sorted({bs for m in models for bs in m.latency})
    fig = new_figure((max(6.0, 1.6 * len(models) + 2), 4.5))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(sizes), 1)
    x = np.arange(len(models))
    for j, bs in enumerate(sizes):
        med = np.array([m.latency[bs].median_ms if bs in m.latency else np.nan for m in models])
        lo = np.array([m.latency[bs].p25_ms if bs in m.latency else np.nan for m in models])
        hi = np.array([m.latency[bs].p75_ms if bs in m.latency else np.nan for m in models])
        yerr = [np.clip(med - lo, 0, None), np.clip(hi - med, 0, None)]
        bars = ax.bar(x + (j - (len(sizes) - 1) / 2) * width, med, width, yerr=yerr, capsize=3,
                      label=f"batch {bs}", color=_color(j))
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [m.name for m in models], rotation=15, fontsize=8)
    ax.margins(y=0.12)
    ax.set(ylabel="ms per image (median)", title="Inference latency")
    ax.legend()
    return save_figure(fig, path, dpi=150)


def plot_class_ap_diff(models: Sequence[ModelResult], path: Path, names: Sequence[str],
                       classes: Sequence[int]) -> Path:
    """Per-class mAP50-95 minus the baseline's (seed means), one panel per non-baseline model, classes present."""
    base, others = models[0], list(models[1:])
    classes = sorted(int(c) for c in classes)
    fig = new_figure((max(8.0, 0.18 * len(classes) + 2), 2.6 * max(len(others), 1) + 0.6))
    b = base.class_ap()
    for k, m in enumerate(others or [base]):
        ax = fig.add_subplot(max(len(others), 1), 1, k + 1)
        d = m.class_ap()[classes] - b[classes]
        ax.bar(np.arange(len(classes)), d, color=np.where(d >= 0, "tab:green", "tab:red"))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(classes)), [names[c] if c < len(names) else str(c) for c in classes],
                      rotation=90, fontsize=6)
        ax.set(ylabel="Δ AP50-95", xlim=(-0.6, len(classes) - 0.4),
               title=f"{m.name} − {base.name} per class (mean {d.mean():+.3f} over {len(classes)} classes)")
    return save_figure(fig, path, dpi=150)


def mean_curves(m: ModelResult) -> dict[str, np.ndarray]:
    """Column -> (n_seeds, n_epochs) from each seed's results.csv, epochs cut to the shortest run."""
    runs = [read_results_csv(s.run_dir / "results.csv") for s in m.seeds if (s.run_dir / "results.csv").is_file()]
    runs = [r for r in runs if r]
    if not runs:
        return {}
    n = min(len(next(iter(r.values()))) for r in runs)
    keys = set.intersection(*(set(r) for r in runs))
    curves = {k: np.stack([r[k][:n] for r in runs]).astype(float) for k in keys}
    for k, y in curves.items():  # epochs that were not validated (train.py --noval) hold zeros: not points
        if k.startswith(("metrics/", "val/")):
            y[:, (y == 0).all(0)] = np.nan
    return curves


def plot_training_curves(models: Sequence[ModelResult], path: Path) -> Path:
    """mAP and losses per epoch of every model on one figure: seed mean (line) and min-max band."""
    from matplotlib.ticker import MaxNLocator  # lazy: importing this module loads no matplotlib

    fig = new_figure((14, 7.5))
    axes = [fig.add_subplot(2, 3, i + 1) for i in range(len(CURVE_COLUMNS))]
    for i, m in enumerate(models):
        curves = mean_curves(m)
        for ax, (col, title) in zip(axes, CURVE_COLUMNS):
            for key, style, suffix in ((col, "-", ""), (col.replace("train/", "val/"), "--", " (val)")):
                if key not in curves or (suffix and key == col):
                    continue
                y = curves[key]
                x = np.arange(1, y.shape[1] + 1)
                ax.plot(x, y.mean(0), style, marker="o" if np.isnan(y).any() else ".", color=_color(i),
                        label=m.name + suffix)
                if y.shape[0] > 1:
                    ax.fill_between(x, y.min(0), y.max(0), color=_color(i), alpha=0.15)
            ax.set(title=title, xlabel="epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    legend_ax = fig.add_subplot(2, 3, 6)
    legend_ax.axis("off")
    legend_ax.legend(handles, labels, loc="center", title="line: seed mean, band: min-max\nlosses: solid train, "
                                                           "dashed val")
    return save_figure(fig, path, dpi=150)


def plot_size_ap(models: Sequence[ModelResult], path: Path) -> Path:
    """Grouped bars: COCO AP50-95 of small, medium and large objects (seed mean, error bar = seed std), one bar
    per model with the baseline first; a size without ground truth is marked n/a."""
    fig = new_figure((max(6.5, 1.2 * len(models) + 4), 4.5))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(SIZES))
    for i, m in enumerate(models):
        vals = [list(m.by_seed(f"ap_{k}").values()) for k in SIZES]
        mean = np.array([np.mean(v) if v else np.nan for v in vals])
        std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals])
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, mean, width, yerr=std, capsize=3, color=_color(i),
                      label=m.name)
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.3f}" for v in mean], fontsize=7)
    for j, k in enumerate(SIZES):
        if all(not m.by_seed(f"ap_{k}") for m in models):
            ax.text(j, 0.04, "n/a\n(no objects)", ha="center", va="bottom", fontsize=8,
                    transform=ax.get_xaxis_transform())  # x in data, y in axes fraction
    ax.set_xticks(x, [f"{k}\n{r}" for k, r in zip(SIZES, ("area <= 32²", "32² - 96²", "> 96²"))])
    ax.set_ylim(bottom=0)
    ax.margins(y=0.15)
    ax.set(ylabel="AP50-95 (COCO)", title="AP by object size (box area in original pixels)")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=150)


def plot_plugin_share(models: Sequence[ModelResult], path: Path) -> Path | None:
    """The largest layer share per epoch of every plug-in model (seed mean, min-max band over seeds), log scale,
    with the 100% line above which the report calls a model unstable; None when no run recorded shares."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    curves = {}
    for m in models:
        runs = [c for c in (epoch_peak_shares(s.run_dir) for s in m.seeds) if c]
        if runs:
            n = min(len(c) for c in runs)
            curves[m.name] = 100 * np.array([c[:n] for c in runs], dtype=float)
    if not curves:
        return None
    fig = new_figure((7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, y) in enumerate(curves.items()):
        x = np.arange(1, y.shape[1] + 1)
        ax.plot(x, y.mean(0), ".-", color=_color(i + 1), label=name)
        if y.shape[0] > 1:
            ax.fill_between(x, y.min(0), y.max(0), color=_color(i + 1), alpha=0.15)
    ax.axhline(100 * SHARE_LIMIT, color="red", ls="--", lw=1, label="100%: unstable above")
    top = max(float(np.nanmax(y)) for y in curves.values())
    ax.set_yscale("log")
    ax.set_ylim(max(min(float(np.nanmin(np.where(y > 0, y, np.nan))) for y in curves.values()) / 2, 1e-3),
                max(2 * top, 200))
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title="Plug-in share per epoch (largest layer; line: seed mean, band: min-max)", xlabel="epoch",
           ylabel="rms(gamma * block(x)) / rms(x)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=150)


def plot_all(models: Sequence[ModelResult], save_dir: Path, names: Sequence[str], classes: Sequence[int],
             imgsz: int) -> list[Path]:
    """Every chart of the report for the models with a finished run; returns the PNG paths."""
    save_dir, done, base = Path(save_dir), finished(models), baseline(models)
    if not done:
        return []
    charts = [plot_map_vs_gflops(done, save_dir / "map_vs_gflops.png", imgsz)]
    if any(m.latency for m in done):
        charts.append(plot_latency(done, save_dir / "latency.png"))
    if base is not None:
        charts.append(plot_class_ap_diff(done, save_dir / "class_ap_diff.png", names, classes))
    charts.append(plot_training_curves(done, save_dir / "training_curves.png"))
    if any(s.ap_all is not None for m in done for s in m.seeds):
        charts.append(plot_size_ap(done, save_dir / "size_ap.png"))
    share = plot_plugin_share(done, save_dir / "plugin_share.png")
    return charts + ([share] if share else [])
