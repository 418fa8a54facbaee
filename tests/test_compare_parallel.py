"""compare.py --jobs and --ray local: runs side by side, each in a process of its own, give the figures a sequential
job gives (one thread a run; the session's `sequential_job`), a run whose worker dies starts again, and the options
are checked."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import compare
from tests.conftest import COMPARE_CFGS, compare_command
from utils.compare.parallel import Slot, plan_slots
from utils.errors import UserError

ROOT = Path(compare.__file__).resolve().parent
CFGS = list(COMPARE_CFGS)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FIGURES = ("precision", "recall", "map50", "map", "plugin_share", "ap_all")


def _rows(job: Path) -> dict[tuple[str, str], dict]:
    with open(job / "results_seeds.csv", newline="", encoding="utf-8") as f:
        return {(r["model"], r["seed"]): r for r in csv.DictReader(f)}


def _compare(tmp_path: Path, tiny_data: Path, name: str, *extra: str, wait: bool = True, env: dict | None = None):
    cmd = compare_command(tiny_data, tmp_path, name, *extra)
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=tmp_path, env=env or ENV, capture_output=True, text=True, timeout=900)


def _same_figures(seq: dict, other: dict, attempts: dict | None = None) -> None:
    """Every run of `other` is 'ok' with the sequential job's figures, at one thread."""
    assert set(seq) == set(other) == {("yolov5n", "0"), ("yolov5n_biformer", "0")}
    for key, a in seq.items():
        b = other[key]
        assert a["status"] == b["status"] == "ok", (a, b)
        for col in FIGURES:
            assert a[col] == b[col], (key, col, a[col], b[col])
        assert b["threads"] == a["threads"] == "1"
        assert b["attempts"] == (attempts or {}).get(key[0], "1"), b


def _losses(run_dir: Path) -> list[str]:
    return (run_dir / "results.csv").read_text().splitlines()


def test_jobs_two_equal_a_sequential_job_from_the_command_line(sequential_job, tiny_data, tmp_path):
    """`python compare.py ... --jobs 2` against the same job run one after another, one thread a run: every run's
    mAP, precision, recall, plug-in share and per-epoch losses are the same, and each row says where it ran."""
    r = _compare(tmp_path, tiny_data, "par", "--jobs", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 runs, 2 at a time, each in a process of its own: device cpu with 1 thread(s)" in r.stdout + r.stderr
    seq, par = _rows(sequential_job), _rows(tmp_path / "par")
    _same_figures(seq, par)
    for key, b in par.items():
        assert b["device"] == "cpu"
        run = f"{key[0]}_seed{key[1]}"
        assert _losses(sequential_job / run) == _losses(tmp_path / "par" / run)
    assert seq["yolov5n_biformer", "0"]["plugin_share"] != ""
    assert "jobs=2" in (tmp_path / "par" / "report.md").read_text()


def test_ray_local_equals_a_sequential_job_from_the_command_line(sequential_job, tiny_data, tmp_path):
    """`python compare.py ... --ray local`: a one-machine Ray cluster for the job, each run a Ray task with one CPU
    (its torch threads): the figures and per-epoch losses of the sequential job, each row naming its Ray node; the
    cluster is gone when the job ends."""
    pytest.importorskip("ray")
    home = tmp_path / "home"  # Ray keeps an auth token in ~/.ray: kept out of the real home
    home.mkdir()
    r = _compare(tmp_path, tiny_data, "ray", "--ray", "local",
                 env={**ENV, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(tmp_path / "ray")
    _same_figures(_rows(sequential_job), rows)
    assert all(" node " in row["host"] for row in rows.values()), rows
    for model in CFGS:
        run = f"{Path(model).stem}_seed0"
        assert _losses(sequential_job / run) == _losses(tmp_path / "ray" / run)
    assert "ray=local" in (tmp_path / "ray" / "report.md").read_text()


def test_a_killed_worker_is_run_again_then_recorded(sequential_job, tiny_data, tmp_path):
    """A worker killed while its run trains starts again (--retries 1) and the job ends as if nothing happened (the
    sequential job's figures);
    with --retries 0 the same kill is a failed run named 'WorkerDied' with the signal, the job writes its report,
    exits 1, and --resume finishes it."""
    for retries, name in ((1, "retry"), (0, "noretry")):
        p = _compare(tmp_path, tiny_data, name, "--jobs", "2", "--retries", str(retries), wait=False)
        log = tmp_path / name / "yolov5n_biformer_seed0" / "train.log"
        deadline = time.time() + 300
        while not log.is_file() and p.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert log.is_file(), p.stdout.read().decode()[-2000:]
        worker = subprocess.run(["pgrep", "-f", f"compare.worker_main.* {tmp_path / name} yolov5n_biformer.yaml 0"],
                                capture_output=True, text=True).stdout.split()
        assert worker, "the worker of yolov5n_biformer seed 0 is not running"
        os.kill(int(worker[0]), signal.SIGKILL)
        err = p.communicate(timeout=900)[0].decode()
        rows = _rows(tmp_path / name)
        row = rows["yolov5n_biformer", "0"]
        if retries:
            assert p.returncode == 0, err[-3000:]
            assert "ended with signal SIGKILL on attempt 1; starting it again (attempt 2 of 2)" in err
            assert row["status"] == "ok" and row["attempts"] == "2", row
            _same_figures(_rows(sequential_job), rows, attempts={"yolov5n_biformer": "2"})
        else:
            assert p.returncode == 1, err[-3000:]
            assert row["status"] == "failed" and row["error"].startswith("WorkerDied: its worker process ended "
                                                                          "with signal SIGKILL on attempt 1"), row
            assert rows["yolov5n", "0"]["status"] == "ok"
            r = subprocess.run([sys.executable, str(ROOT / "compare.py"), "--resume", str(tmp_path / name)],
                               cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, r.stderr[-3000:]
            assert _rows(tmp_path / name)["yolov5n_biformer", "0"]["status"] == "ok"
            _same_figures(_rows(sequential_job), _rows(tmp_path / name))


def test_slots_and_bad_options():
    assert plan_slots("cpu", 2, 2) == [Slot("cpu", 1), Slot("cpu", 1)]
    assert plan_slots("", 3, 2) == [Slot("", 1)] * 3  # never under one thread
    assert plan_slots("0,1", 4, 16) == [Slot("0", 4), Slot("1", 4), Slot("0", 4), Slot("1", 4)]
    with pytest.raises(UserError, match="--jobs must be >= 1 \\(runs at a time\\), got 0"):
        compare.run(cfgs=CFGS, jobs=0)
    with pytest.raises(UserError, match="--retries must be >= 0, got -1"):
        compare.run(cfgs=CFGS, retries=-1)
