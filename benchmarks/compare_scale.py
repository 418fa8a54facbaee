"""Wall time of one compare.py job run one after another, with --jobs N and with --ray local, on this machine, and
how far each run's mAP is from the sequential job's (equal at equal threads a run, as the tests check; here the
sequential job has every thread and a side-by-side run its share, so sums may be added in another order).

    python -m benchmarks.compare_scale --cfgs yolov5n.yaml yolov5n_biformer.yaml --seeds 2 --epochs 1 --imgsz 256
    python -m benchmarks.compare_scale --main      # the main job (main.py as ./run.sh main runs it), about an hour

Each job is `python compare.py ... --no-deploy-latency --bootstrap 0` in a process of its own with the same
threads in all (the sequential job gets --threads; --jobs N and --ray split them: threads // N a run). Prints a
markdown table: mode, wall time, ratio to sequential and the largest mAP difference; then Ray's overhead a run
((wall of --ray local - wall of --jobs N) / runs, same slots) and, measured alone, a local cluster's start-up and
the time from submitting a task to its first line.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _job(args: argparse.Namespace, project: Path, name: str, extra: list[str], threads: int) -> tuple[float, dict]:
    if args.main:  # the main job as ./run.sh main runs it, all its defaults
        cmd = [sys.executable, str(ROOT / "main.py"), "--project", str(project), "--name", name, *extra]
    else:
        cmd = [sys.executable, str(ROOT / "compare.py"), "--cfgs", *args.cfgs, "--data", args.data, "--epochs",
               str(args.epochs), "--imgsz", str(args.imgsz), "--seeds", str(args.seeds), "--batch-size",
               str(args.batch_size), "--device", "cpu", "--project", str(project), "--name", name,
               "--no-deploy-latency", "--bootstrap", "0", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} failed: {r.stderr[-2000:]}")
    with open(project / name / "results_seeds.csv", newline="") as f:
        rows = {(row["model"], row["seed"]): row for row in csv.DictReader(f)}
    return wall, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfgs", nargs="+", default=["yolov5n.yaml", "yolov5n_biformer.yaml"])
    p.add_argument("--data", default="coco128.yaml")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the whole job")
    p.add_argument("--main", action="store_true", help="time the main job (main.py, its defaults) instead")
    a = p.parse_args()
    per_run = max(1, a.threads // a.jobs)
    project = Path(tempfile.mkdtemp(prefix="compare_scale"))
    modes = [("sequential", [], a.threads), (f"--jobs {a.jobs}", ["--jobs", str(a.jobs)], a.threads)]
    try:
        import ray  # noqa: F401

        modes.append(("--ray local", ["--ray", "local", "--ray-cpus-per-run", str(per_run)], a.threads))
    except ImportError:
        print("Ray is not installed (pip install -r requirements-cluster.txt): --ray local left out")
    out = {}
    for i, (mode, extra, threads) in enumerate(modes):
        out[mode] = _job(a, project, f"m{i}", extra, threads)
        print(f"{mode}: {out[mode][0]:.1f} s", flush=True)
    seq_wall, seq_rows = out["sequential"]
    runs = len(seq_rows)
    what = ("the main job (main.py)" if a.main
            else f"{len(a.cfgs)} configs x {a.seeds} seeds x {a.epochs} epoch(s) at {a.imgsz}")
    print(f"\n{what}, {a.threads} thread(s) in all, {per_run} a run side by side\n")
    print("| mode | wall (s) | / sequential | largest per-run |mAP50-95 - sequential's| |")
    print("|---|---|---|---|")
    for mode, (wall, rows) in out.items():
        diff = max(abs(float(rows[k]["map"]) - float(seq_rows[k]["map"])) for k in seq_rows)
        print(f"| {mode} | {wall:.1f} | {wall / seq_wall:.2f} | {diff:.2g} |")
    if "--ray local" in out:
        extra = (out["--ray local"][0] - out[f"--jobs {a.jobs}"][0]) / runs
        print(f"\nRay's overhead against --jobs {a.jobs} (cluster start-up spread over the runs): {extra:+.1f} s a run")
        start, first, warm = _ray_overhead(per_run)
        print(f"Ray alone: a local cluster starts in {start:.1f} s; a submitted task starts after {first:.2f} s "
              f"(the first, a new worker process) and {warm:.3f} s (median of 20 later ones)")


def _ray_overhead(cpus: int) -> tuple[float, float, float]:
    """Seconds to start a local Ray cluster, from submit to a task's first line for the first task and (median)
    for 20 later ones: what --ray adds to each run before the run's own worker process starts."""
    import statistics

    import ray

    @ray.remote(num_cpus=cpus)
    def started() -> float:
        return time.time()

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    start = time.perf_counter() - t0
    try:
        t = time.time()
        first = ray.get(started.remote()) - t
        later = []
        for _ in range(20):
            t = time.time()
            later.append(ray.get(started.remote()) - t)
        return start, first, statistics.median(later)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
