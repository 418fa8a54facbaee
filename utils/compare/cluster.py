"""compare.py --ray: the job's (config, seed) runs as Ray tasks on a cluster (`--ray auto` or ADDRESS: an existing
cluster; `--ray local`: a one-machine cluster started for the job and stopped after it).

Each run is one task asking for --ray-cpus-per-run CPUs and --ray-gpus-per-run GPUs (default: 1 where the cluster
has GPUs, else 0). The task starts the same worker process as `--jobs` (utils.compare.parallel) on its node, in the
driver's working folder, with the GPU Ray gave it, so a run on the cluster trains, validates and writes result.json
exactly as a run of a sequential job; the driver writes the same job folder.

Paths: the job folder, the data set, the weights and this project's code are read and written at the same paths on
every node (a shared folder such as NFS; nothing is shipped). Before the first run starts, one small task on every
node checks them: a node that cannot read one fails the job at once, naming the node and the path.

Faults: a task whose node dies (its raylet killed, the machine gone) or whose worker process dies without a result
is retried by Ray on any node up to --retries times; after that the run is recorded as failed ('WorkerDied'). A run
that raises is failed at once, as in a sequential job. Ctrl-C cancels the cluster's tasks; `--resume` finishes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Callable

from utils.compare.options import model_name
from utils.compare.parallel import die_with_parent, outcome, worker_command
from utils.compare.results import FailedRun
from utils.compare.runs import RunRecord, fresh_run_dir, run_name
from utils.errors import UserError
from utils.log import LOGGER
from utils.paths import ROOT

__all__ = ["run_on_ray", "ATTEMPT_FILE"]

ATTEMPT_FILE = "attempt.txt"  # in a run folder on the cluster: which attempt of the run wrote it


class WorkerDied(RuntimeError):
    """A run's worker process ended without a result and without an error of its own (killed, out of memory)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install -r requirements-cluster.txt") from None
    return ray


def run_task(job_dir: str, cfg: str, seed: int, threads: int, gpus: float, cwd: str, root: str) -> dict:
    """The Ray task of one run (runs on a node): a fresh run folder, then the worker process; its exit code and
    node. A worker that died without a word raises WorkerDied, which Ray retries."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    run_dir = Path(job_dir) / run_name(model_name(cfg), seed)
    attempt = 1
    with contextlib.suppress(OSError, ValueError):
        attempt = int((run_dir / ATTEMPT_FILE).read_text()) + 1
    fresh_run_dir(run_dir)
    (run_dir / ATTEMPT_FILE).write_text(str(attempt))
    host = f"{socket.gethostname()} node {node[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
           "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    cmd = worker_command(job_dir, cfg, seed, "0" if gpus else "cpu", threads, attempt, host)
    with open(run_dir / "worker.log", "ab") as log:
        rc = subprocess.call(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             preexec_fn=die_with_parent)
    if rc != 0 and not (run_dir / "failed.json").is_file():
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        raise WorkerDied(f"the worker of {run_dir.name} on {host} ended with {how} on attempt {attempt}")
    return dict(rc=rc, node=node, host=host)


def _check_paths(paths: list[str], writable: list[str]) -> list[str]:
    """On a node: each path it cannot read (or, for `writable`, write), with why."""
    bad = [f"{p} (missing)" for p in paths if not os.path.exists(p)]
    bad += [f"{p} (not writable)" for p in writable if not os.access(p, os.W_OK)]
    return bad


def _nodes_can_read(ray, paths: list[str], writable: list[str]) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=0)(_check_paths)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    refs = {check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
        paths, writable): n for n in nodes}
    for ref, n in refs.items():
        bad = ray.get(ref, timeout=120)
        if bad:
            raise UserError(f"Ray node {n['NodeManagerAddress']} ({n['NodeID'][:8]}) cannot read {bad[0]}: the job "
                            "folder, data set, weights and this project must be at the same paths on every node "
                            "(a shared folder)")


def _connect(ray, address: str, root: str) -> None:
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}}
    try:
        if address == "local":
            # "local": a new cluster of its own even where one already runs on this machine (ray.init() with no
            # address would attach to the latest one started)
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     runtime_env=env, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, runtime_env=env, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"--ray {address}: cannot connect ({' '.join(str(e).split())[:300]}); start a cluster "
                        "with `ray start --head`, or use --ray local") from None


def run_on_ray(job_dir: Path, todo: list[tuple[str, int]], address: str, cpus: int, gpus: float, retries: int,
               paths: list[Path], on_done: Callable[[str, int, RunRecord | FailedRun], None]) -> None:
    """Every (cfg, seed) of `todo` as a Ray task; on_done(cfg, seed, RunRecord or FailedRun) as each ends. `paths`:
    what every node must read (the data set, the weights)."""
    ray = _ray()
    job_dir = Path(job_dir).resolve()
    _connect(ray, address, str(ROOT))
    refs = {}
    try:
        if gpus < 0:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
        need = [str(ROOT), os.getcwd(), *(str(Path(p).resolve()) for p in paths)]
        _nodes_can_read(ray, need, [str(job_dir)])
        nodes = sum(n["Alive"] for n in ray.nodes())
        LOGGER.info(f"{len(todo)} runs on the Ray cluster at {address} ({nodes} node(s)), {cpus} CPU(s) and "
                    f"{gpus:g} GPU(s) a run, retried up to {retries} time(s) if a node or worker dies")
        task = ray.remote(run_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries,
                                            retry_exceptions=[WorkerDied])
        for cfg, seed in todo:
            run_dir = job_dir / run_name(model_name(cfg), seed)
            fresh_run_dir(run_dir)  # no attempt count left from an earlier job
            refs[task.remote(str(job_dir), cfg, seed, cpus, gpus, os.getcwd(), str(ROOT))] = (cfg, seed, run_dir)
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in ready:
                cfg, seed, run_dir = refs.pop(ref)
                try:
                    out = ray.get(ref)
                    rec = outcome(run_dir, cfg, seed, out["rc"])
                except (ray.exceptions.RayError, WorkerDied) as e:
                    rec = _task_failed(e, seed, run_dir)
                on_done(cfg, seed, rec)
    except BaseException:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()


def _task_failed(e: Exception, seed: int, run_dir: Path) -> FailedRun:
    cause = getattr(e, "cause", None) or e
    msg = " ".join(str(cause).split())
    if isinstance(cause, WorkerDied):
        msg = str(cause)
    else:
        msg = f"{type(cause).__name__}: {msg}"
    attempts = ""
    with contextlib.suppress(OSError, ValueError):
        attempts = f" after {int((run_dir / ATTEMPT_FILE).read_text())} attempt(s)"
    return FailedRun(seed, "WorkerDied", (msg + attempts)[:1000], run_dir / "worker.log")
