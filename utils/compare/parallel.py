"""compare.py --jobs N: the job's (config, seed) runs side by side on one machine, each in a Python process of its
own that trains, validates and measures exactly what a run of a sequential job does and writes the same result.json.

Slots: N at a time. With --device 0,1,2,3 slot i gets GPU i modulo the list; on the CPU (or one GPU) the driver's
torch threads are divided between the slots (threads per run = threads // N, at least 1, recorded in each run's
results_seeds.csv row with its host and device). Every run is seeded as in a sequential job, so with the same
threads per run its figures are the same bit for bit (tests/test_compare_parallel.py).

Faults: a run that raises (a non-finite loss, a bad config) is a failed run with its error, as in a sequential job;
a worker process that dies without a word (killed, out of memory, a crash in native code) is started again up to
--retries times, then recorded as failed ('WorkerDied'). Ctrl-C stops every worker and leaves a job that
`compare.py --resume` finishes.

The worker is compare.worker_main (JOB CFG SEED --device D --threads T --attempt K) in a fresh interpreter, run in
the driver's working folder (the job's relative paths mean what they meant to the user); it reads the job's options
from JOB/opt.yaml.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from utils.compare.options import model_name
from utils.compare.results import FailedRun
from utils.compare.runs import RunRecord, fresh_run_dir, load_result, run_name
from utils.files import atomic_write
from utils.log import LOGGER
from utils.paths import ROOT

__all__ = ["Slot", "plan_slots", "run_side_by_side", "FAILED_FILE", "WORKER_LOG", "where_this_runs", "outcome",
           "die_with_parent", "worker_parser", "worker_command", "write_failure"]

FAILED_FILE = "failed.json"  # a worker whose run raised writes what it raised here
WORKER_LOG = "worker.log"  # a worker's own output (the run's training output goes to train.log)


@dataclass(frozen=True)
class Slot:
    """Where one of the N side-by-side runs goes: a device as --device takes it, and its torch threads."""

    device: str
    threads: int


def plan_slots(device: str, jobs: int, threads: int) -> list[Slot]:
    """`jobs` slots: the devices of a comma-separated --device list in turn (every slot gets `device` itself when
    it names one device, the CPU or none), each with threads // jobs torch threads (at least 1)."""
    devices = [d.strip() for d in str(device).split(",") if d.strip()] or [str(device)]
    per_run = max(1, int(threads) // int(jobs))
    return [Slot(devices[i % len(devices)], per_run) for i in range(int(jobs))]


def where_this_runs(device, threads: int, attempt: int = 1, host: str = "") -> dict:
    """A run's host (default: this machine's name), device and threads, as its SeedResult records them."""
    return dict(host=host or socket.gethostname(), device=str(device), threads=int(threads), attempts=int(attempt))


@dataclass
class _Worker:
    cfg: str
    seed: int
    attempt: int
    slot: int
    run_dir: Path
    proc: object
    log: object


def _start(job_dir: Path, cfg: str, seed: int, attempt: int, slot: Slot, slot_index: int) -> _Worker:
    run_dir = fresh_run_dir(Path(job_dir) / run_name(model_name(cfg), seed))
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "OMP_NUM_THREADS": str(slot.threads), "PYTHONUNBUFFERED": "1"}
    log = open(run_dir / WORKER_LOG, "ab")
    cmd = worker_command(Path(job_dir).resolve(), cfg, seed, slot.device, slot.threads, attempt)
    proc = subprocess.Popen(cmd, cwd=os.getcwd(), env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,  # Ctrl-C reaches the driver only
                            preexec_fn=die_with_parent)
    return _Worker(cfg, seed, attempt, slot_index, run_dir, proc, log)


def _tail(path: Path, n: int = 300) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [x for x in text.replace("\r", "\n").splitlines() if x.strip()]
    return " ".join(" ".join(lines[-3:]).split())[-n:]


def outcome(run_dir: Path, cfg: str, seed: int, rc: int) -> RunRecord | FailedRun | None:
    """What a worker that ended with exit code `rc` left in `run_dir`: the run's RunRecord, a FailedRun for a run
    that raised, or None when the worker died without a word."""
    log = run_dir / "train.log"
    failed = run_dir / FAILED_FILE
    if failed.is_file():
        try:
            d = json.loads(failed.read_text(encoding="utf-8"))
            return FailedRun(seed, str(d["error_type"]), str(d["message"]), log)
        except (ValueError, KeyError, OSError):
            pass
    if rc == 0:
        rec = load_result(run_dir, model_name(cfg), seed)
        if rec is not None:
            return rec
        return FailedRun(seed, "RuntimeError", f"the run's worker ended without a result in {run_dir}", log)
    return None


def die_with_parent() -> None:
    """In a worker process (preexec_fn): end when the process that started it ends (Linux), so a killed driver or
    a dead node leaves no run writing into the job folder."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _ended(w: _Worker, rc: int) -> str:
    how = f"signal {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals() else f"exit code {rc}"
    return f"its worker process ended with {how} on attempt {w.attempt}"


def _died(w: _Worker, rc: int) -> FailedRun:
    tail = _tail(w.run_dir / WORKER_LOG)
    msg = _ended(w, rc) + (f"; last output: {tail}" if tail else "")
    return FailedRun(w.seed, "WorkerDied", msg, w.run_dir / WORKER_LOG)


def _stop(w: _Worker) -> None:
    """End a worker and everything it started (its own process group)."""
    if w.proc.poll() is None:
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            w.proc.kill()
    w.proc.wait()
    w.log.close()


def run_side_by_side(job_dir: Path, todo: list[tuple[str, int]], slots: list[Slot], retries: int,
                     on_done: Callable[[str, int, RunRecord | FailedRun], None], poll_s: float = 0.2) -> None:
    """Run every (cfg, seed) of `todo` in order, len(slots) at a time, each in its own worker process; call
    on_done(cfg, seed, RunRecord or FailedRun) as each ends. A worker that dies without a result starts again up to
    `retries` times. KeyboardInterrupt (and any other exception in the driver) stops every worker and goes through."""
    queue = deque((cfg, seed, 1) for cfg, seed in todo)
    free = list(range(len(slots)))
    running: list[_Worker] = []
    try:
        while queue or running:
            while queue and free:
                cfg, seed, attempt = queue.popleft()
                i = free.pop(0)
                running.append(_start(job_dir, cfg, seed, attempt, slots[i], i))
            time.sleep(poll_s)
            for w in list(running):
                rc = w.proc.poll()
                if rc is None:
                    continue
                running.remove(w)
                w.log.close()
                free.append(w.slot)
                free.sort()
                out = outcome(w.run_dir, w.cfg, w.seed, rc)
                if out is None and w.attempt <= retries:
                    LOGGER.warning(f"WARNING: {w.run_dir.name}: {_ended(w, rc)}; starting it again "
                                   f"(attempt {w.attempt + 1} of {retries + 1})")
                    queue.appendleft((w.cfg, w.seed, w.attempt + 1))
                    continue
                on_done(w.cfg, w.seed, out if out is not None else _died(w, rc))
    finally:
        for w in running:
            _stop(w)


def worker_parser() -> argparse.ArgumentParser:
    """The command line of a run's worker (compare.worker_main)."""
    p = argparse.ArgumentParser(description="one run of a compare.py job (started by compare.py --jobs or --ray)")
    p.add_argument("job_dir")
    p.add_argument("cfg")
    p.add_argument("seed", type=int)
    p.add_argument("--device", default="")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--attempt", type=int, default=1)
    p.add_argument("--host", default="", help="where the run is recorded to have run (default: this machine)")
    return p


def write_failure(fail: FailedRun, run_dir: Path) -> Path:
    """failed.json: what a worker's run raised, for the driver."""
    return atomic_write(Path(run_dir) / FAILED_FILE, lambda f: f.write(json.dumps(
        dict(error_type=fail.error_type, message=fail.message)).encode("utf-8")))


def worker_command(job_dir, cfg: str, seed: int, device: str, threads: int, attempt: int, host: str = "") -> list:
    """The command that runs one run of the job (in the driver's working folder, this project on PYTHONPATH)."""
    return [sys.executable, "-c", "import sys, compare; sys.exit(compare.worker_main(sys.argv[1:]))", str(job_dir),
            cfg, str(seed), "--device", device, "--threads", str(threads), "--attempt", str(attempt),
            *(["--host", host] if host else [])]
