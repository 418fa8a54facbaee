"""The records of a comparison: one run (SeedResult, or FailedRun when it raised), one model over its seeds
(ModelResult), and the verdicts of a model against the baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.compare.memory import MemoryStat
from utils.compare.stats import Summary, Verdict, paired_diff, summarize, verdict
from utils.deploy.latency import LatencyStat

__all__ = ["SeedResult", "FailedRun", "ModelResult", "finished", "baseline", "model_verdict", "paired_delta",
           "share_cell"]


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
    """Paired and unpaired tests of m's `metric` against the baseline's (utils.compare.stats.verdict)."""
    return verdict(base.by_seed(metric), m.by_seed(metric))


def paired_delta(base: ModelResult, m: ModelResult, metric: str) -> float | None:
    """Mean of m's per-seed difference from the baseline over the seeds where both have `metric`."""
    return paired_diff(base.by_seed(metric), m.by_seed(metric)).delta


def share_cell(share: float | None) -> str:
    """A plug-in share as the tables print it: 4.3%, or - for a model without plug-ins."""
    return "-" if share is None else f"{100 * share:.2g}%"
