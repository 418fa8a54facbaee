"""compare.py's options as one typed object (the command line's flags, or `compare.run(**kwargs)`), their checks,
and the command line that reproduces a job."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from models.config import resolve_config_path
from models.user_modules import import_module_files
from utils.errors import UserError
from utils.paths import ROOT

__all__ = ["DEFAULTS", "CompareOptions", "model_name", "build_parser"]

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
    modules: list[str] | None = None  # the user's Python files that register blocks the configs use
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
        if self.modules:  # imported here, in the driver and in every run's worker (absolute: workers on any node)
            self.modules = [str(f) for f in import_module_files(self.modules)]
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
        parts += ["--modules", *self.modules] if self.modules else []
        flags = ("exist_ok", "visualize_routing", "val_every_epoch", "no_deploy_latency", "augment", "sweep")
        return " ".join(parts + [f"--{k.replace('_', '-')}" for k in flags if getattr(self, k)])


def build_parser() -> argparse.ArgumentParser:
    """compare.py's command line: one flag per CompareOptions field."""
    p = argparse.ArgumentParser(description="Compare attention plug-ins against the YOLOv5 baseline")
    p.add_argument("--cfgs", nargs="+", default=None,
                   help="model configs, baseline first (default: yolov5n.yaml, yolov5n_biformer.yaml and every "
                        "other bundled plug-in config at the scale of --weights)")
    p.add_argument("--weights", type=str, default="yolov5n.pt", help="pretrained weights every model starts from")
    p.add_argument("--data", type=str, default="coco128.yaml", help="dataset.yaml path")
    p.add_argument("--hyp", type=str, default="hyp.scratch-low.yaml", help="hyperparameters path")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="training epochs per run")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="training batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=DEFAULTS["imgsz"],
                   help="train, val and timing image size (pixels)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0, or cpu")
    p.add_argument("--seeds", type=int, default=DEFAULTS["seeds"], help="fine-tuning runs per model (seeds 0..N-1)")
    p.add_argument("--workers", type=int, default=2, help="max dataloader workers")
    p.add_argument("--project", default=CompareOptions.project, help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--val-every-epoch", action="store_true",
                   help="validate after every training epoch (mAP curves in training_curves.png; slower). By "
                        "default each run validates its final weights only")
    p.add_argument("--visualize-routing", action="store_true",
                   help="draw where BiLevelRoutingAttention routes, on bundled photos, for each BRA model")
    p.add_argument("--augment", action="store_true",
                   help="also validate each run with test-time augmentation (val.py --augment): a TTA mAP column")
    p.add_argument("--no-deploy-latency", action="store_true",
                   help="skip the ONNX Runtime and OpenVINO CPU latency columns (each model is exported to ONNX "
                        "and OpenVINO for them, which takes a few seconds a model)")
    p.add_argument("--bootstrap", type=int, default=CompareOptions.bootstrap, metavar="B",
                   help="resamples of the paired bootstrap over validation images and seeds behind the verdict "
                        "(0 to skip; about 10 s per run and 1000 resamples on COCO128)")
    p.add_argument("--sweep", action="store_true",
                   help="where the attention goes: also run each plug-in config with its plug-in alone at P3, P4 "
                        "or P5 and, for BRA, topk 2/8 and n_win 5/8 (variant YAMLs written into the job folder)")
    p.add_argument("--jobs", type=int, default=CompareOptions.jobs, metavar="N",
                   help="runs at a time, each in a process of its own (with --device 0,1,.. one GPU each; on the "
                        "CPU the threads divided between them); same figures as one after another")
    p.add_argument("--retries", type=int, default=CompareOptions.retries,
                   help="with --jobs or --ray: times a run whose process or node died (killed, out of memory) "
                        "starts again")
    p.add_argument("--ray", default=CompareOptions.ray, metavar="ADDRESS",
                   help="run each (config, seed) as a task on a Ray cluster: 'auto' or ADDRESS (host:port of "
                        "`ray start --head`), or 'local' to start a one-machine cluster; the job folder, data and "
                        "weights must be at the same paths on every node")
    p.add_argument("--ray-cpus-per-run", type=int, default=CompareOptions.ray_cpus_per_run,
                   help="CPUs a run asks Ray for (its torch threads)")
    p.add_argument("--ray-gpus-per-run", type=int, default=CompareOptions.ray_gpus_per_run,
                   help="GPUs a run asks Ray for (default -1: 1 where the cluster has GPUs, else 0)")
    p.add_argument("--modules", nargs="+", default=None, metavar="FILE",
                   help="your Python file(s) that register blocks the configs use (models/user_modules.py)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="JOB",
                   help="finish the job in folder JOB (default: the latest under --project) with its own options: "
                        "reuse its finished runs, re-run failed and missing ones, rewrite its report")
    return p
