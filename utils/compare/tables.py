"""The report's sections after the main table: paired tests against the baseline, AP by object size, failed
runs and every run. Each function returns markdown lines; utils.compare.report puts them together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from utils.compare.results import (SHARE_LIMIT, SPREAD_LIMIT, UNSTABLE, ModelResult, SeedResult, baseline, finished,
                                   holm_adjust, instability, model_verdict, paired_delta, share_cell)
from utils.compare.sizes import SIZES
from utils.compare.stats import NoiseCheck, PairedDiff, paired_diff

__all__ = ["paired_lines", "control_lines", "size_lines", "failed_lines", "seed_lines", "na", "CONTROL_SUFFIXES",
           "deploy_line"]

# models whose name ends so are controls: capacity without attention (ConvControl), YOLOv5's own attention (C3TR)
CONTROL_SUFFIXES = ("_control", "_transformer")

_METRICS = (("map", "mAP50-95"), ("map50", "mAP50"))
_UNPAIRED_TEST = {"welch": "Welch", "z-known-std": "z, one seed", "exact": "no spread", "unknown": "one seed each"}
_NO_PAIRED_P = {"exact": "- (no spread)", "single": "- (1 pair)", "none": "- (no pair)"}


def na(x: float | None, fmt: str = ".3f") -> str:
    """A figure, or 'n/a' where there is none (COCO's -1 for a size without objects)."""
    return "n/a" if x is None else format(x, fmt)


def _paired_cells(p: PairedDiff) -> list[str]:
    if p.delta is None:
        return ["0", "-", "- (no pair)"]
    ci = f" [{p.ci_low:+.3f}, {p.ci_high:+.3f}]" if p.ci_low is not None else ""
    pval = f"{p.p_value:.3g}" if p.p_value is not None else _NO_PAIRED_P[p.method]
    return [str(p.n), f"{p.delta:+.3f}{ci}", pval]


def _unpaired_cells(u: NoiseCheck) -> list[str]:
    pval = f"{u.p_value:.3g}" if u.p_value is not None else "-"
    return [f"{u.delta:+.3f}", f"{pval} ({_UNPAIRED_TEST.get(u.method, u.method)})"]


def _decided_sentence(models: Sequence[ModelResult], base: ModelResult) -> str:
    by = {m.name: model_verdict(base, m, "map").decided_by for m in finished(models) if m is not base}
    paired = [k for k, v in by.items() if v == "paired"]
    unpaired = [k for k, v in by.items() if v == "unpaired"]
    if not unpaired:
        return "Every mark in the Results table was decided by the paired t-test (>= 2 seeds finished for both " \
               "the model and the baseline)."
    if not paired:
        return "Every mark in the Results table was decided by the unpaired rule: no model has >= 2 seeds " \
               "finished for both it and the baseline."
    return (f"Marks decided by the paired t-test: {', '.join(paired)}; by the unpaired rule (fewer than 2 seeds "
            f"finished for both the model and the baseline): {', '.join(unpaired)}.")


def paired_lines(models: Sequence[ModelResult]) -> list[str]:
    """Per plug-in model and metric: the paired difference (95% CI, paired t-test) beside the unpaired one."""
    base = baseline(models)
    others = [m for m in finished(models) if m is not base]
    if base is None or not others:
        return []
    holm_adjust(models)
    lines = ["## Paired against the baseline", "",
             "Seed k of every model starts from the same weights for every layer it shares with the baseline and "
             "sees the same batches and augmentations, so the per-seed difference cancels much of the seed noise. "
             "Paired: mean of the per-seed differences over the seeds both finished, its 95% confidence interval "
             "(t distribution, n - 1 dof) and the paired t-test's p (`scipy.stats.ttest_rel`). Unpaired: "
             "difference of the means over all finished seeds and its test (Welch's t-test with >= 2 seeds a "
             "side). " + _decided_sentence(models, base), "",
             "| model | metric | paired seeds | paired Δ (95% CI) | paired p | unpaired Δ | unpaired p (test) "
             "| mark | decided by |", "|---|---|---|---|---|---|---|---|---|"]
    for m in others:
        for metric, label in _METRICS:
            v = model_verdict(base, m, metric)
            cells = [m.name, label, *_paired_cells(v.paired), *_unpaired_cells(v.unpaired), v.mark,
                     "paired t-test" if v.decided_by == "paired" else "unpaired rule"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def stability_lines(models: Sequence[ModelResult]) -> list[str]:
    """Under the results table, one line per model whose verdict the training may have decided: a plug-in share
    above 100% in some epoch, or (>= 3 seeds a side) a seed spread over twice the baseline's."""
    base = baseline(models)
    flagged = [(m, instability(base, m)) for m in finished(models) if m is not base]
    lines = [f"- **{m.name}: {UNSTABLE}**: {'; '.join(r)}." for m, r in flagged if r]
    if not lines:
        return []
    return lines + ["", f"A share above {100 * SHARE_LIMIT:.0f}% means the plug-in's output outweighs the features "
                        f"it sits on; a seed spread over {SPREAD_LIMIT:g}x the baseline's means the seeds disagree "
                        "more than the baseline's do. Either way the difference from the baseline may come from how "
                        "the plug-in was trained (optimizer, learning rate, schedule) rather than from the attention; "
                        "the share per epoch is in plugin_share.png.", ""]


def _against(p: PairedDiff) -> str:
    """Plain words for a paired mAP50-95 difference of a plug-in model minus a control."""
    if p.delta is None or p.p_value is None and p.method != "exact":
        return "cannot tell (fewer than 2 paired seeds)"
    if p.within_noise:
        return "cannot tell apart (paired p >= 0.05)"
    return "beats it" if p.delta > 0 else "loses to it"


def control_lines(models: Sequence[ModelResult]) -> list[str]:
    """Per plug-in model: paired mAP50-95 difference against each control (same seeds), and the verdict."""
    done = finished(models)
    base = baseline(models)
    controls = [m for m in done if m.name.endswith(CONTROL_SUFFIXES)]
    plugins = [m for m in done if m is not base and m not in controls]
    if not controls or not plugins:
        return []
    lines = ["## Against the controls", "",
             "Does the attention beat what the same places would gain from capacity alone (`*_control`: the same "
             "Residual wrapper holding a plain convolutional block with about BRA's parameters) and from YOLOv5's "
             "own attention (`*_transformer`: C3TR at the end of the backbone)? mAP50-95 of the plug-in model "
             "minus the control's, paired by seed, with the 95% interval and the paired t-test.", "",
             "| model | control | paired seeds | paired Δ mAP50-95 (95% CI) | paired p | verdict |",
             "|---|---|---|---|---|---|"]
    for m in plugins:
        for c in controls:
            p = paired_diff(c.by_seed("map"), m.by_seed("map"))
            lines.append("| " + " | ".join([m.name, c.name, *_paired_cells(p), _against(p)]) + " |")
    return lines + [""]


def _size_cell(m: ModelResult, base: ModelResult | None, metric: str) -> str:
    vals = list(m.by_seed(metric).values())
    if not vals:
        return "n/a"
    cell = na(sum(vals) / len(vals))
    if base is not None and m is not base:
        d = paired_delta(base, m, metric)
        cell += "" if d is None else f" ({d:+.3f})"
    return cell


def size_lines(models: Sequence[ModelResult], counts: dict[str, int] | None) -> list[str]:
    """COCO AP by object size per model (seed mean, paired delta against the baseline in brackets)."""
    done = finished(models)
    if not any(s.ap_all is not None for m in done for s in m.seeds):
        return []
    base = baseline(models)
    held = "" if counts is None else ("The val split holds " + ", ".join(f"{counts[k]} {k}" for k in SIZES) +
                                      " objects. ")
    lines = ["## AP by object size", "",
             "COCO AP50-95 (pycocotools COCOeval, at most 100 detections per image) of each run's validation "
             "detections, by the area of the ground-truth box in the original image's pixels: small <= 32², "
             f"medium 32²-96², large > 96². {held}Mean over the seeds; in brackets the paired difference from "
             "the baseline (seeds both finished). `n/a`: the split has no object of that size (COCO's -1). "
             "'all' is COCOeval's AP over every size; pycocotools matches and interpolates differently from "
             "val.py, so it can differ from the mAP50-95 above.", "",
             "| model | AP all | AP small | AP medium | AP large |", "|---|---|---|---|---|"]
    for m in done:
        cells = [_size_cell(m, base, k) for k in ("ap_all", *(f"ap_{s}" for s in SIZES))]
        lines.append(f"| {m.name} | " + " | ".join(cells) + " |")
    return lines + [""]


def tta_lines(models: Sequence[ModelResult]) -> list[str]:
    """compare.py --augment: each model's mAP50-95 with YOLOv5's test-time augmentation beside its plain one."""
    done = [m for m in finished(models) if any(s.map_tta is not None for s in m.seeds)]
    if not done:
        return []
    base = baseline(models)
    lines = ["## Test-time augmentation", "",
             "val.py --augment on each run's best.pt (scales 1, 0.83, 0.67 with a left-right flip, merged before "
             "NMS), mean over seeds. 'TTA gain': the mean per-seed difference TTA minus plain; 'vs baseline': the "
             "paired difference of the TTA mAP50-95 from the baseline's.", "",
             "| model | mAP50-95 | mAP50-95 TTA | TTA gain | vs baseline (TTA) |", "|---|---|---|---|---|"]
    for m in done:
        gains = [s.map_tta - s.map for s in m.seeds if s.map_tta is not None]
        vs = paired_delta(base, m, "map_tta") if base is not None and m is not base else None
        lines.append(f"| {m.name} | {m.mean('map'):.3f} | {m.mean('map_tta'):.3f} | {np.mean(gains):+.3f} | "
                     f"{'-' if vs is None else f'{vs:+.3f}'} |")
    return lines + [""]


def _md(text: str, limit: int = 300) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failed_lines(models: Sequence[ModelResult], save_dir: Path) -> list[str]:
    """The runs that raised, with their errors and logs, and how to finish the job."""
    failed = [(m, f) for m in models for f in m.failures]
    if not failed:
        return []
    total = sum(len(m.seeds) + len(m.failures) for m in models)
    lines = ["## Failed runs", "",
             f"{len(failed)} of {total} runs failed; every figure above comes from the runs that finished, and a "
             "model without a finished run has none. Each log ends with the traceback. `python compare.py "
             f"--resume {save_dir}` reuses every finished run, re-runs these and rewrites this report.", "",
             "| model | seed | error | log |", "|---|---|---|---|"]
    for m, f in failed:
        log = f.log.relative_to(save_dir) if f.log.is_relative_to(save_dir) else f.log
        lines.append(f"| {m.name} | {f.seed} | {_md(f.error)} | {log.as_posix()} |")
    return lines + [""]


def _seed_cells(s: SeedResult) -> str:
    sizes = " / ".join(na(getattr(s, f"ap_{k}")) for k in SIZES)
    return (f"{s.mp:.3f} | {s.mr:.3f} | {s.map50:.3f} | {s.map:.3f} | {sizes} | {s.epoch_s:.1f} "
            f"| {share_cell(s.share)} | {s.run_dir.name}")


def seed_lines(models: Sequence[ModelResult]) -> list[str]:
    """One row per (model, seed) run, failed runs included."""
    lines = ["| model | seed | P | R | mAP50 | mAP50-95 | AP S / M / L | s/epoch | plug-in share | run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        runs = [(s.seed, _seed_cells(s)) for s in m.seeds]
        runs += [(f.seed, f"failed: {_md(f.error_type)} | - | - | - | - | - | - | {f.log.parent.name}")
                 for f in m.failures]
        lines += [f"| {m.name} | {k} | {cells} |" for k, cells in sorted(runs, key=lambda x: x[0])]
    return lines


def deploy_line(opt, versions: dict, device) -> str:
    """How the ORT / OV columns were measured (the runtimes' versions go into `versions` too)."""
    if opt.no_deploy_latency:
        return "not measured (--no-deploy-latency)."
    from utils.deploy.runners import runtime_versions

    rv = runtime_versions(load=False)  # the metadata: the runtimes stay out of this process
    versions.update(rv)
    where = (" PyTorch ran on the GPU, these on the CPU: compare each with the baseline in its own column."
             if device.type == "cuda" else "")
    return (f"onnxruntime {rv['onnxruntime']} (CPUExecutionProvider, graph optimisation 'all') and openvino "
            f"{rv['openvino']} (CPU, LATENCY hint, one stream), {torch.get_num_threads()} intra-op thread(s) each "
            f"as PyTorch; every model exported as export.py writes it (fp32, fixed {opt.imgsz}x{opt.imgsz}, batch "
            f"1, ONNX opset 17; OpenVINO converted from that ONNX file) into a temporary folder; median of "
            f"{50 if device.type == 'cuda' else 10} calls timed in the same rotating rounds as the PyTorch batch-1 "
            f"figures.{where}")
