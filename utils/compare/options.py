"""compare.py's options as one typed object (the command line's flags, or `compare.run(**kwargs)`), their checks,
and the command line that reproduces a job."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from models.config import resolve_config_path
from utils.errors import UserError
from utils.paths import ROOT

__all__ = ["DEFAULTS", "CompareOptions", "model_name"]

# Defaults chosen so that the whole job on the bundled COCO128 ends within 20 minutes on a 2-core CPU with one
# thread: 6 configs (the baseline, three plug-ins, two controls) x 2 seeds x 3 epochs took about 1.8 min a run at
# 320 (a 25-minute job), so the size is 256 (compute x 0.64). Paired statistics need >= 2 seeds; the plug-ins
# need the 3 epochs to switch on (benchmarks/README.md, "Plug-ins that learn").
DEFAULTS = dict(imgsz=256, epochs=3, batch_size=16, seeds=2)


def model_name(cfg: str) -> str:
    """A model's name in the report: its config's stem."""
    return Path(str(cfg)).stem


@dataclass
class CompareOptions:
    """The options of one comparison job; the help texts are compare.py's command line. Not frozen: --resume
    replaces them with the job's own (utils.compare.runs.take_job_options)."""

    cfgs: list[str] | None = None  # baseline first; None: compare.default_cfgs(weights)
    weights: str = "yolov5n.pt"
    data: Any = "coco128.yaml"
    hyp: Any = "hyp.scratch-low.yaml"
    epochs: int = DEFAULTS["epochs"]
    batch_size: int = DEFAULTS["batch_size"]
    imgsz: int = DEFAULTS["imgsz"]
    device: str = ""
    seeds: int = DEFAULTS["seeds"]
    workers: int = 2
    project: str = str(ROOT / "runs" / "compare")
    name: str = "exp"
    exist_ok: bool = False
    val_every_epoch: bool = False
    visualize_routing: bool = False
    augment: bool = False  # also validate with test-time augmentation
    no_deploy_latency: bool = False
    bootstrap: int = 1000  # resamples of the paired bootstrap over validation images and seeds (0: none)
    jobs: int = 1  # runs at a time, each in a process of its own (utils.compare.parallel)
    retries: int = 1  # with jobs > 1 or ray: restarts of a run whose worker process or node died
    sweep: bool = False  # also each plug-in config's placement (and BRA topk / n_win) variants
    ray: str = ""  # '' (no Ray), 'local', 'auto' or a cluster's ADDRESS (utils.compare.cluster)
    ray_cpus_per_run: int = 1
    ray_gpus_per_run: int = -1  # -1: 1 where the cluster has GPUs, else 0
    resume: Any = False  # False, True (the latest job under project) or a job folder

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace | CompareOptions) -> CompareOptions:
        """From parsed options (or a copy of options); a name that is not an option raises a TypeError."""
        d = dict(vars(ns))
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"compare: unknown option(s) {unknown}; options: {sorted(f.name for f in fields(cls))}")
        return cls(**d)

    def check(self) -> None:
        """A user error naming the option for configs that do not resolve or repeat, and counts below 1."""
        if not self.cfgs:
            raise UserError("--cfgs: give at least one model config; the first is the baseline")
        for cfg in self.cfgs:
            resolve_config_path(cfg)  # FileNotFoundError naming the bad config and the known ones
        names = [model_name(c) for c in self.cfgs]
        if len(set(names)) != len(names):
            raise UserError(f"--cfgs lists a model twice: {self.cfgs}")
        for k in ("epochs", "seeds", "batch_size", "imgsz"):
            if getattr(self, k) < 1:
                raise UserError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(self, k)}")
        if self.jobs < 1:
            raise UserError(f"--jobs must be >= 1 (runs at a time), got {self.jobs}")
        if self.retries < 0:
            raise UserError(f"--retries must be >= 0, got {self.retries}")
        if self.ray and self.jobs > 1:
            raise UserError(f"--jobs {self.jobs} and --ray {self.ray}: choose one (Ray places the runs itself)")
        if self.ray_cpus_per_run < 1 or self.ray_gpus_per_run < -1:
            raise UserError(f"--ray-cpus-per-run must be >= 1 and --ray-gpus-per-run >= 0 (or -1: 1 where the "
                            f"cluster has GPUs), got {self.ray_cpus_per_run} and {self.ray_gpus_per_run}")
        if self.bootstrap < 0:
            raise UserError(f"--bootstrap must be >= 0 (0 skips it), got {self.bootstrap}")

    def command(self) -> str:
        """The `python compare.py ...` line that runs this job again."""
        parts = ["python compare.py", "--cfgs", *self.cfgs]
        for k in ("weights", "data", "hyp", "epochs", "imgsz", "batch_size", "seeds", "device", "workers", "project",
                  "name", "bootstrap", "jobs", "retries", "ray", "ray_cpus_per_run", "ray_gpus_per_run"):
            v = getattr(self, k)
            optional = ("jobs", "retries", "ray_cpus_per_run", "ray_gpus_per_run")
            if v not in ("", None) and not (k in optional and v == getattr(CompareOptions, k)):
                parts += [f"--{k.replace('_', '-')}", str(v)]
        flags = ("exist_ok", "visualize_routing", "val_every_epoch", "no_deploy_latency", "augment", "sweep")
        return " ".join(parts + [f"--{k.replace('_', '-')}" for k in flags if getattr(self, k)])
