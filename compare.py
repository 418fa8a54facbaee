"""Compare attention plug-ins against the YOLOv5 baseline: fine-tune each from the same weights over several
seeds, validate, count, time, and write a report.

Usage:
    python compare.py                                              # every bundled config on COCO128
    python compare.py --cfgs yolov5n.yaml yolov5n_biformer.yaml --seeds 3 --epochs 10
    python compare.py --data my.yaml --imgsz 640 --device 0 --visualize-routing
    python compare.py --resume runs/compare/exp3                   # finish an interrupted or partly failed job

Writes runs/compare/exp{N}/: opt.yaml (the job's options), report.md, results.csv (one row per model: figures,
deltas, paired tests against the baseline, AP by object size), results_seeds.csv (one row per run, with its
status and error), map_vs_gflops.png, latency.png, class_ap_diff.png, training_curves.png, size_ap.png,
plugin_share.png (with plug-in models),
routing/ (with --visualize-routing), and one folder per run (<model>_seed<k>/) with train.py's output,
train.log, val/ and result.json.

Latency: every model's best.pt (seed 0) is timed in PyTorch at batch 1 and 32 and, unless --no-deploy-latency,
exported as export.py does (fp32, fixed --imgsz, batch 1) and timed at batch 1 in ONNX Runtime and OpenVINO on
the CPU, in the same interleaved rounds as the PyTorch batch-1 figures (report columns `ms/img ORT b1`,
`ms/img OV b1`). A runtime that is missing or an export that fails leaves `n/a` and its reason; the job goes on.

The verdict: each run's final validation keeps its per-image matches (val/image_stats.npz) and every model is
compared with the baseline by a paired bootstrap over the validation images and the seeds (--bootstrap B
resamples, Holm-adjusted over the models; utils/compare/bootstrap.py); report.md opens with one sentence per model
(difference with its 95% interval, told apart or not, the smallest difference the job could see, the same for
AP small/medium/large on the same resamples, its costs).

A run that raises (a non-finite loss, out of memory, any error in its training or validation) is logged and
recorded with its error; the job goes on and reports what finished, and `python compare.py` then exits with 1.
`--resume JOB` reads JOB/opt.yaml, reuses every run with a result.json, runs the failed and missing ones again
and rewrites the report in JOB; it takes no other option.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import train
import val
from models.config import CLASSIC_CONFIGS, list_configs, scale_of, scaled_name
from utils.cli import apply_options, cli_errors
from utils.compare import memory
from utils.compare.charts import plot_all
from utils.compare.measure import model_figures, share, share_batches, size
from utils.compare.options import DEFAULTS, CompareOptions, build_parser, model_name
from utils.compare.cluster import run_on_ray
from utils.compare.parallel import plan_slots, run_side_by_side, where_this_runs, worker_parser, write_failure
from utils.compare.report import ReportMeta, environment, results_rows, seed_rows, table_lines, write_csv, write_report
from utils.compare.results import FailedRun, ModelResult, SeedResult, finished
from utils.compare.runs import (RunRecord, failed_run, failure_summary, fresh_run_dir, load_result, output_to,
                                resume_job_dir, run_name, save_options, save_result, take_job_options)
from utils.compare.sizes import build_size_gt, run_size_ap, size_counts
from utils.compare.sweep import sweep_variants
from utils.compare.tables import deploy_line
from utils.compare.verdict import bootstrap_all
from utils.data.config import DataConfig, load_data_config
from utils.data.labels import classes_present
from utils.deploy.timing import time_checkpoints_in_child
from utils.log import LOGGER, setup_logging
from utils.paths import increment_path
from utils.torch_utils import select_device

__all__ = ["CompareOptions", "DEFAULTS", "parse_opt", "run", "main", "cli", "default_cfgs"]


@dataclass
class _Job:
    """One comparison under way: its options, folder, data set, device, AP-by-size ground truth, progress bar."""

    opt: CompareOptions
    save_dir: Path
    data: DataConfig
    device: torch.device
    size_gt: object
    bar: object = None


def default_cfgs(weights: str = "yolov5n.pt") -> list[str]:
    """yolov5{s}.yaml, yolov5{s}_biformer.yaml, then every other config in configs/ but the classic comparators
    (CLASSIC_CONFIGS: SE, ECA, CBAM, CoordAtt), at the weights' scale s."""
    s = scale_of(weights) or "n"
    names = [p.name for p in list_configs() if p.stem.startswith("yolov5") and p.name not in CLASSIC_CONFIGS]
    first = [x for x in ("yolov5.yaml", "yolov5_biformer.yaml") if x in names]
    return [scaled_name(x, s) for x in first + sorted(set(names) - set(first))]


def _train_one(opt: CompareOptions, cfg: str, seed: int, run_dir: Path) -> float:
    """Fine-tune `cfg` from opt.weights with `seed` into run_dir; seconds per epoch."""
    with output_to(run_dir / "train.log"):
        result = train.run(weights=opt.weights, cfg=cfg, data=opt.data, hyp=opt.hyp, epochs=opt.epochs,
                           batch_size=opt.batch_size, imgsz=opt.imgsz, device=opt.device, workers=opt.workers,
                           project=str(run_dir.parent), name=run_dir.name, exist_ok=True, seed=seed, noplots=True,
                           noval=not opt.val_every_epoch)
    if not (run_dir / "weights" / "best.pt").is_file():
        raise RuntimeError(f"training {cfg} (seed {seed}) wrote no {run_dir / 'weights' / 'best.pt'}")
    return sum(result.epoch_seconds) / len(result.epoch_seconds)


def _validate(opt: CompareOptions, run_dir: Path):
    """val.run on the run's best.pt, as `python val.py --save-txt --save-conf --save-stats` would: ((P, R, mAP50,
    mAP50-95, ...), maps, times); the detections land in run_dir/val/labels for the AP by size, the per-image
    matches in run_dir/val/image_stats.npz for the bootstrap."""
    with output_to(run_dir / "train.log"):
        return val.run(data=opt.data, weights=str(run_dir / "weights" / "best.pt"), batch_size=opt.batch_size * 2,
                       imgsz=opt.imgsz, device=opt.device, workers=opt.workers, project=str(run_dir), name="val",
                       exist_ok=True, plots=False, save_txt=True, save_conf=True, save_stats=True)


def _validate_tta(opt: CompareOptions, run_dir: Path) -> dict[str, float]:
    """--augment: val.py --augment's mAP50 and mAP50-95 of the run's best.pt (YOLOv5's test-time augmentation)."""
    with output_to(run_dir / "train.log"):
        (_, _, map50, map_, *_), _, _ = val.run(
            data=opt.data, weights=str(run_dir / "weights" / "best.pt"), batch_size=opt.batch_size * 2,
            imgsz=opt.imgsz, device=opt.device, workers=opt.workers, project=str(run_dir), name="val_tta",
            exist_ok=True, plots=False, augment=True, save_stats=True)
    return {"map50_tta": float(map50), "map_tta": float(map_)}


def _timing(opt: CompareOptions, models, device, bar, nc: int) -> None:
    """Latency (interleaved, one process) and peak training memory of every model, into `models`."""
    # memory first: each measurement forks a process
    for m in models:
        bar.set_description(f"memory {m.name}")
        # looked up through the module at call time: tests replace memory.peak_train_memory
        m.memory = memory.peak_train_memory(m.cfg, opt.imgsz, opt.batch_size, nc, device,
                                            torch.get_num_threads(), opt.modules)
        bar.update(1)
    _latency(opt, models, device, bar)
    bar.update(1)


def _latency(opt: CompareOptions, models, device, bar) -> None:
    """PyTorch latency at batch 1 and 32 of every model's best.pt (seed 0) into `m.latency`; unless
    --no-deploy-latency, also the ONNX Runtime and OpenVINO CPU latency at batch 1 (`m.deploy_latency`, or the
    reason in `m.deploy_errors`), timed in the same rotating rounds as the PyTorch batch-1 figures
    (utils.deploy.timing). With the deployed runtimes the step runs in a fresh interpreter, so they never load
    into this process (a process holding them crashed when its later DataLoader workers exited); its figures equal
    the in-process ones within noise (benchmarks/README.md, "Deployed latency in a process of its own")."""
    bar.set_description("timing latency b1/b32")
    weights = {m.name: str(m.seeds[0].run_dir / "weights" / "best.pt") for m in models}
    t = time_checkpoints_in_child(weights, opt.imgsz, str(device), not opt.no_deploy_latency, torch.get_num_threads())
    for m in models:
        m.latency = t.latency[m.name]
        m.deploy_latency = t.deploy_latency[m.name]
        m.deploy_errors = t.deploy_errors[m.name]


def _finish_run(job: _Job, cfg: str, seed: int, run_dir: Path, batches: list, where: dict | None = None) -> RunRecord:
    """Train, validate and measure one run, then write its result.json; returns its RunRecord. `where`: the host,
    device, threads and attempts to record (default: this process's)."""
    opt, bar = job.opt, job.bar
    bar.set_description(f"train {run_dir.name}")
    epoch_s = _train_one(opt, cfg, seed, run_dir)
    bar.update(1)
    bar.set_description(f"val {run_dir.name}")
    (mp, mr, map50, map_, *_), maps, _ = _validate(opt, run_dir)
    sizes = run_size_ap(run_dir / "val", job.size_gt)
    tta = _validate_tta(opt, run_dir) if opt.augment else {}
    bar.update(1)
    size_fields = {f"ap_{k}": getattr(sizes, k) for k in ("all", "small", "medium", "large")} if sizes else {}
    size_fields.update(tta)
    res = SeedResult(seed, float(mp), float(mr), float(map50), float(map_), [float(x) for x in maps],
                     float(epoch_s), run_dir, share(run_dir, batches), **size_fields,
                     **(where or where_this_runs(job.device, torch.get_num_threads())))
    rec = RunRecord(model_name(cfg), cfg, *size(run_dir / "weights" / "best.pt", opt.imgsz), res)
    save_result(rec)
    return rec


def _attempt(job: _Job, cfg: str, seed: int, run_dir: Path, batches: list):
    """One run from an empty folder: its RunRecord, or a FailedRun when it raised an Exception (KeyboardInterrupt
    and SystemExit go through)."""
    done = job.bar.n
    try:
        return _finish_run(job, cfg, seed, fresh_run_dir(run_dir), batches)
    except Exception as e:  # noqa: BLE001  (recorded with its type, message and traceback; the job goes on)
        fail = failed_run(e, seed, run_dir / "train.log")
    job.bar.update(done + 2 - job.bar.n)
    LOGGER.error(f"{run_dir.name} failed: {fail.error[:300]} (traceback in {fail.log}); going on")
    _free_memory()
    return fail


def _free_memory() -> None:
    """Release what a failed run held (model, optimizer, batches; on CUDA the cached blocks too)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_done(job: _Job, records: dict):
    """What the driver does as a run of --jobs or --ray ends: keep its record, count it, log a failure."""

    def done(cfg, seed, rec):
        records[cfg, seed] = rec
        job.bar.update(2)
        if isinstance(rec, FailedRun):
            LOGGER.error(f"{rec.log.parent.name} failed: {rec.error[:300]} (log in {rec.log}); going on")

    return done


def _fine_tune_all(job: _Job) -> tuple[list, int]:
    """Train and validate every (model, seed), or with --resume reuse it; (ModelResults, runs reused).

    Runs go seed by seed through all models (A0 B0 C0 A1 B1 C1 ...), so a slow spell of a shared machine
    spreads over the models instead of landing on one of them; with --jobs N they start in that order, N at a time,
    each in a process of its own (utils.compare.parallel).
    """
    opt = job.opt
    order = [(cfg, seed) for seed in range(opt.seeds) for cfg in opt.cfgs]
    records, todo = {}, []
    for cfg, seed in order:
        rec = load_result(job.save_dir / run_name(model_name(cfg), seed), model_name(cfg), seed) if opt.resume else None
        if rec is None:
            todo.append((cfg, seed))
        else:
            records[cfg, seed] = rec
            job.bar.update(2)
    reused = len(records)
    if opt.ray and todo:
        weights = [Path(opt.weights)] if Path(opt.weights).is_file() else []
        paths = [p for p in [job.data.yaml_file, *job.data.train, *job.data.val, *weights] if p is not None]
        run_on_ray(job.save_dir, todo, opt.ray, opt.ray_cpus_per_run, opt.ray_gpus_per_run, opt.retries, paths,
                   _run_done(job, records))
    elif opt.jobs > 1 and todo:
        slots = plan_slots(opt.device, opt.jobs, torch.get_num_threads())
        LOGGER.info(f"{len(todo)} runs, {opt.jobs} at a time, each in a process of its own: "
                    + ", ".join(f"device {s.device or 'default'} with {s.threads} thread(s)" for s in slots))
        run_side_by_side(job.save_dir, todo, slots, opt.retries, _run_done(job, records))
    else:
        batches = share_batches(opt.imgsz, job.data.val)
        for cfg, seed in todo:
            records[cfg, seed] = _attempt(job, cfg, seed, job.save_dir / run_name(model_name(cfg), seed), batches)
    models = {cfg: ModelResult(model_name(cfg), cfg, None, None) for cfg in opt.cfgs}
    for cfg, seed in order:
        rec, m = records[cfg, seed], models[cfg]
        if isinstance(rec, FailedRun):
            m.failures.append(rec)
            continue
        if m.params is None:
            m.params, m.gflops = rec.params, rec.gflops
        m.seeds.append(rec.result)
    return list(models.values()), reused


def _report(job: _Job, models, routing: list[Path], wall_s: float, resumed: str) -> Path:
    opt, data, device, save_dir = job.opt, job.data, job.device, job.save_dir
    write_csv(results_rows(models), save_dir / "results.csv")
    write_csv(seed_rows(models), save_dir / "results_seeds.csv")
    charts = plot_all(models, save_dir, data.names, classes_present(data.val), opt.imgsz)
    versions, dev = environment(device)
    settings = dict(data=opt.data, weights=opt.weights, hyp=opt.hyp, epochs=opt.epochs, imgsz=opt.imgsz,
                    batch_size=opt.batch_size, seeds=opt.seeds, half=device.type == "cuda", jobs=opt.jobs,
                    **({"ray": opt.ray} if opt.ray else {}))
    meta = ReportMeta(opt.command(), versions, dev, settings, wall_s, opt.imgsz, opt.imgsz, resumed,
                      size_counts(job.size_gt.gt) if job.size_gt else None, deploy_line(opt, versions, device))
    return write_report(models, meta, save_dir, charts, routing)


def _job_folder(opt: CompareOptions) -> Path:
    """A new job folder with the options saved in it, or with --resume the job's folder, its options in `opt`."""
    if opt.resume:
        job = resume_job_dir(opt.resume, opt.project)
        take_job_options(opt, job, vars(parse_opt(args=[])))
        opt.check()
        LOGGER.info(f"Resuming {job}: {opt.command()}")
        return job
    opt.cfgs = list(opt.cfgs or default_cfgs(opt.weights))
    opt.check()
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok, mkdir=True)
    if opt.sweep:  # the variants' YAMLs go into the job folder; opt.yaml lists them, so --resume builds the same
        opt.cfgs = [v.cfg for v in sweep_variants(opt.cfgs, save_dir / "sweep")]
        opt.check()
        LOGGER.info(f"--sweep: {len(opt.cfgs)} configs, the variants written to {save_dir / 'sweep'}")
    save_options(opt, save_dir)
    return save_dir


def _measure(job: _Job, models) -> list[Path]:
    """Latency, memory and routing figures of the models with a finished run; routing figure paths."""
    opt, bar = job.opt, job.bar
    done = finished(models)
    bar.update(len(models) - len(done))  # no memory step for a model without weights
    if not done:
        bar.update(1 + int(opt.visualize_routing))
        return []
    _timing(opt, done, job.device, bar, job.data.nc)
    if not opt.visualize_routing:
        return []
    bar.set_description("routing, heatmaps")
    files = model_figures({m.name: m.seeds[0].run_dir / "weights" / "best.pt" for m in done}, job.save_dir,
                          opt.imgsz)
    bar.update(1)
    return files


def main(opt: argparse.Namespace | CompareOptions):
    """Run the whole comparison; returns (report folder, list of ModelResult). Failed runs are in each
    ModelResult's `failures`; `cli` turns them into the exit status."""
    setup_logging()
    opt = CompareOptions.from_namespace(opt)
    save_dir = _job_folder(opt)
    data = load_data_config(opt.data)
    job = _Job(opt, save_dir, data, select_device(opt.device), build_size_gt(data.val, data.names, data.nc))
    n, s = len(opt.cfgs), opt.seeds
    LOGGER.info(f"Comparing {n} models x {s} seeds ({', '.join(opt.cfgs)}) on {opt.data}; "
                f"per-run logs in {save_dir}/<model>_seed<k>/train.log")
    t0 = time.perf_counter()
    with tqdm(total=2 * n * s + 2 + n + int(opt.visualize_routing), file=sys.stderr,
              bar_format="{desc:<34}{percentage:3.0f}%|{bar:20}| {n}/{total} [{elapsed}<{remaining}]") as job.bar:
        models, reused = _fine_tune_all(job)
        job.bar.set_description(f"bootstrap ({opt.bootstrap} resamples)")
        bootstrap_all(models, opt.bootstrap, size_gt=job.size_gt)
        job.bar.update(1)
        routing = _measure(job, models)
        job.bar.set_description("done")
    resumed = (f"`python compare.py --resume {save_dir}` reused {reused} finished run(s) and ran "
               f"{n * s - reused}" if opt.resume else "")
    report = _report(job, models, routing, time.perf_counter() - t0, resumed)
    LOGGER.info("\n" + "\n".join(table_lines(models, opt.imgsz)))
    LOGGER.info(f"\nmAP: mean ± std over {s} seed(s); (delta ≈) within seed noise, (delta *) outside it, "
                f"(?) unknown. Wall time {(time.perf_counter() - t0) / 60:.1f} min.")
    LOGGER.info(f"Report saved to {report}")
    failed = sum(len(m.failures) for m in models)
    if failed:
        LOGGER.warning(f"WARNING: {failed} run(s) failed; the report lists them under 'Failed runs'")
    return save_dir, models



class _NoBar:
    """A worker's progress bar: none (the driver's counts the runs)."""

    n = 0

    def set_description(self, *_):
        pass

    def update(self, *_):
        pass


def worker_main(argv: list[str]) -> int:
    """One run of a job, in a process of its own (utils.compare.parallel starts it): JOB CFG SEED --device D
    --threads T --attempt K [--host H]. The job's options come from JOB/opt.yaml; 0 with result.json written,
    1 with failed.json (what the run raised)."""
    a = worker_parser().parse_args(argv)
    setup_logging()
    torch.set_num_threads(a.threads)
    job_dir = Path(a.job_dir)
    run_dir = job_dir / run_name(model_name(a.cfg), a.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        opt = CompareOptions.from_namespace(parse_opt(args=[]))
        take_job_options(opt, job_dir, vars(parse_opt(args=[])))
        opt.device = a.device
        opt.check()  # imports the job's --modules in this process
        data, dev = load_data_config(opt.data), select_device(a.device)
        job = _Job(opt, job_dir, data, dev, build_size_gt(data.val, data.names, data.nc), _NoBar())
        _finish_run(job, a.cfg, a.seed, run_dir, share_batches(opt.imgsz, data.val),
                    where_this_runs(dev, a.threads, a.attempt, a.host))
        return 0
    except Exception as e:  # noqa: BLE001  (the run's error, for the driver's report)
        write_failure(failed_run(e, a.seed, run_dir / "train.log"), run_dir)
        return 1

def parse_opt(known: bool = False, args: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    return p.parse_known_args(args)[0] if known else p.parse_args(args)


def run(**kwargs):
    """`compare.run(cfgs=['yolov5n.yaml', 'yolov5n_biformer.yaml'], epochs=1)`: (report folder, ModelResults).

    Returns normally when runs failed (see each ModelResult's `failures`); `compare.run(resume=folder)` finishes
    a job."""
    return main(apply_options(parse_opt(args=[]), kwargs, "compare.run"))


def cli(opt: argparse.Namespace) -> None:
    """`python compare.py`: user errors exit 2 with one line (utils.cli.cli_errors); when a run failed, the
    report is still written and the process exits 1 with a one-line summary."""
    save_dir, models = cli_errors(main)(opt)
    line = failure_summary(models, save_dir)
    if line:
        print(f"ERROR: {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli(parse_opt())
