"""The records of a comparison: one run (SeedResult, or FailedRun when it raised), one model over its seeds
(ModelResult), and the verdicts of a model against the baseline."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from models.attention.share import SHARE_CSV, read_epoch_shares
from utils.compare.bootstrap import holm
from utils.compare.memory import MemoryStat
from utils.compare.stats import Summary, Verdict, paired_diff, summarize, verdict
from utils.deploy.latency import LatencyStat

__all__ = ["SeedResult", "FailedRun", "ModelResult", "finished", "baseline", "model_verdict", "paired_delta",
           "share_cell", "holm_adjust", "MARKED", "epoch_peak_shares", "instability", "SHARE_LIMIT", "SPREAD_LIMIT",
           "UNSTABLE"]

# A model is called unstable beside its verdict when a layer's share passed SHARE_LIMIT in some epoch (the
# attention then outweighs the features it sits on), or, with >= 3 seeds on each side, when its seed spread of
# mAP50-95 is over SPREAD_LIMIT times the baseline's (benchmarks/README.md, "Plug-ins that learn")
SHARE_LIMIT = 1.0
SPREAD_LIMIT = 2.0
UNSTABLE = "unstable: the comparison measures the training as much as the attention"


@dataclass
class SeedResult:
    """One finished fine-tuning run: validation of its best.pt, its time per epoch and its folder."""

    seed: int
    mp: float
    mr: float
    map50: float
    map: float
    maps: list[float]  # mAP50-95 per class (nc,), as val.run returns it
    epoch_s: float  # seconds per training epoch
    run_dir: Path
    share: float | None = None  # mean plug-in share of best.pt (models.attention.share); None without plug-ins
    ap_all: float | None = None  # COCOeval AP50-95 over all sizes (utils.compare.sizes); None: not scored
    ap_small: float | None = None  # COCO AP_small; None also where the split has no small object (COCO's -1)
    ap_medium: float | None = None
    ap_large: float | None = None
    map50_tta: float | None = None  # with compare.py --augment: val.py --augment's mAP50 and mAP50-95
    map_tta: float | None = None
    host: str | None = None  # where the run trained: the machine's name, its device, its torch threads
    device: str | None = None
    threads: int | None = None
    attempts: int = 1  # 2 and more: its worker process died before and the run started again (--retries)


@dataclass
class FailedRun:
    """A (model, seed) run that raised in training or validation: what it raised and where its log is."""

    seed: int
    error_type: str  # e.g. 'FloatingPointError'
    message: str
    log: Path  # the run's train.log, which ends with the traceback

    @property
    def error(self) -> str:
        return f"{self.error_type}: {self.message}" if self.message else self.error_type


@dataclass
class ModelResult:
    """Everything measured for one model config; params and gflops are None when no run finished."""

    name: str  # e.g. yolov5n_biformer
    cfg: str
    params: int | None
    gflops: float | None
    seeds: list[SeedResult] = field(default_factory=list)  # the finished runs
    latency: dict[int, LatencyStat] = field(default_factory=dict)  # batch size -> ms per image
    memory: MemoryStat | None = None
    # deployed CPU runtimes at batch 1 (utils.deploy.runners.RUNTIMES): runtime -> ms per image, or runtime -> why none
    deploy_latency: dict[str, LatencyStat] = field(default_factory=dict)
    deploy_errors: dict[str, str] = field(default_factory=dict)
    failures: list[FailedRun] = field(default_factory=list)
    # against the baseline: metric -> utils.compare.bootstrap.BootstrapDiff (paired bootstrap over images and seeds)
    bootstrap: dict = field(default_factory=dict)
    holm_p: dict[str, float] = field(default_factory=dict)  # metric -> Holm-adjusted p of its mark (holm_adjust)

    def summary(self, metric: str) -> Summary:
        return summarize([getattr(s, metric) for s in self.seeds])

    def values(self, metric: str) -> list[float]:
        return [float(getattr(s, metric)) for s in self.seeds]

    def by_seed(self, metric: str) -> dict[int, float]:
        """seed -> metric of each finished run that has it (size APs can be None)."""
        return {s.seed: float(getattr(s, metric)) for s in self.seeds if getattr(s, metric) is not None}

    def mean(self, metric: str) -> float | None:
        """Mean over the finished runs that have the metric; None when none has it."""
        v = list(self.by_seed(metric).values())
        return float(np.mean(v)) if v else None

    def share(self) -> float | None:
        """Mean plug-in share over seeds; None for a model without Residual-wrapped plug-ins."""
        v = [s.share for s in self.seeds if s.share is not None]
        return float(np.mean(v)) if v else None

    def class_ap(self) -> np.ndarray:
        """Per-class mAP50-95 averaged over seeds, (nc,)."""
        return np.mean([np.asarray(s.maps, dtype=float) for s in self.seeds], axis=0)


def finished(models: Sequence[ModelResult]) -> list[ModelResult]:
    """The models with at least one finished run (the others have no figures)."""
    return [m for m in models if m.seeds]


def baseline(models: Sequence[ModelResult]) -> ModelResult | None:
    """models[0] when it has a finished run; None otherwise (then no delta can be given)."""
    return models[0] if models and models[0].seeds else None


def model_verdict(base: ModelResult, m: ModelResult, metric: str) -> Verdict:
    """Paired and unpaired tests of m's `metric` against the baseline's (utils.compare.stats.verdict), with the
    Holm-adjusted p of holm_adjust where it was set."""
    v = verdict(base.by_seed(metric), m.by_seed(metric))
    return replace(v, p_holm=m.holm_p.get(metric)) if metric in m.holm_p else v


MARKED = ("map50", "map")  # the metrics whose marks are Holm-adjusted over the models


def holm_adjust(models: Sequence[ModelResult]) -> None:
    """Holm's adjustment of the deciding tests' p-values over the finished models against the baseline, per
    metric in MARKED, into each model's `holm_p` (a model whose test has no p keeps its mark as it is)."""
    base = baseline(models)
    others = [m for m in finished(models) if m is not base]
    if base is None:
        return
    for metric in MARKED:
        ps = [verdict(base.by_seed(metric), m.by_seed(metric)).p_value for m in others]
        for m, p in zip(others, holm(ps)):
            if p is None:
                m.holm_p.pop(metric, None)
            else:
                m.holm_p[metric] = p


def paired_delta(base: ModelResult, m: ModelResult, metric: str) -> float | None:
    """Mean of m's per-seed difference from the baseline over the seeds where both have `metric`."""
    return paired_diff(base.by_seed(metric), m.by_seed(metric)).delta


def share_cell(share: float | None) -> str:
    """A plug-in share as the tables print it: 4.3%, or - for a model without plug-ins."""
    return "-" if share is None else f"{100 * share:.2g}%"


def epoch_peak_shares(run_dir: Path) -> list[float]:
    """The largest layer share of each epoch a run recorded (its plugin_share.csv); [] when none."""
    peaks: dict[int, float] = {}
    for epoch, _, share, _ in read_epoch_shares(Path(run_dir) / SHARE_CSV):
        peaks[epoch] = max(peaks.get(epoch, 0.0), share)
    return [peaks[e] for e in sorted(peaks)]


def instability(base: ModelResult | None, m: ModelResult) -> list[str]:
    """Why `m` is unstable ([] when it is not): a layer share above SHARE_LIMIT in some epoch of some seed (the
    final best.pt's share where a run recorded none), or, with >= 3 seeds for both, a seed spread of mAP50-95 over
    SPREAD_LIMIT times the baseline's."""
    reasons = []
    peaks = []
    for s in m.seeds:
        curve = epoch_peak_shares(s.run_dir)
        peak = max(curve) if curve else s.share
        if peak is not None and peak > SHARE_LIMIT:
            peaks.append(f"seed {s.seed} {100 * peak:.0f}%")
    if peaks:
        reasons.append(f"plug-in share above {100 * SHARE_LIMIT:.0f}% ({', '.join(peaks)})")
    if base is not None and base is not m and len(m.seeds) >= 3 and len(base.seeds) >= 3:
        sm, sb = float(np.std([s.map for s in m.seeds], ddof=1)), float(np.std([s.map for s in base.seeds], ddof=1))
        if sm > SPREAD_LIMIT * sb and sm > 0:
            ratio = f"{sm / sb:.1f}x the baseline's {sb:.3f}" if sb > 0 else "against the baseline's 0"
            reasons.append(f"seed spread (std) of mAP50-95 {sm:.3f}, {ratio}")
    return reasons

