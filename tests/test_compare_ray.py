"""compare.py --ray on a real cluster on this machine: a head node without CPUs (where the driver attaches) and two
one-CPU worker nodes, each `ray start` in a process of its own. A tiny compare runs across both; the raylet of the
node running the plug-in model is killed by its process id mid-run, and the run is retried on the other node; the
figures equal those of a sequential job. The cluster is stopped whatever happens."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import compare
from tests.conftest import COMPARE_CFGS, compare_command

pytest.importorskip("ray")

ROOT = Path(compare.__file__).resolve().parent
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """host:port of a three-node Ray cluster (head with 0 CPUs, two nodes with 1 CPU), its own temp folder (short:
    Ray's socket paths have a length limit) and its own environment; `ray stop` on its processes at the end."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    port = _free_port()
    home = Path(temp) / "home"  # Ray keeps an auth token in ~/.ray: one left by another Ray stops nodes joining
    home.mkdir()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "HOME": str(home),
           "CLUSTER_OF_TEST": temp,  # inherited by every process of the cluster: how the end finds them
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    address = f"127.0.0.1:{port}"
    before = _pids()
    try:
        for args in (["--head", f"--port={port}", "--num-cpus=0", f"--temp-dir={temp}", "--include-dashboard=false"],
                     [f"--address={address}", "--num-cpus=1"], [f"--address={address}", "--num-cpus=1"]):
            r = subprocess.run([RAY, "start", *args, "--disable-usage-stats"], env=env, capture_output=True,
                               text=True, timeout=180)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        yield address, env, temp
    finally:
        _stop_cluster(temp, before)
        shutil.rmtree(temp, ignore_errors=True)


def _pids() -> set[int]:
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}


def _stop_cluster(temp: str, before: set[int]) -> None:
    """Kill every process of this cluster: those with CLUSTER_OF_TEST=temp in their environment, and those started
    since under one of them (Ray's workers rename themselves 'ray::...', which overwrites the environment); never
    another's, such as the Ray workers of a `--ray local` job in a test running beside this one."""
    mark = f"CLUSTER_OF_TEST={temp}".encode()
    marked, parent = set(), {}
    for pid in sorted(_pids() - before - {os.getpid()}):
        try:
            if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                marked.add(pid)
            parent[pid] = _ppid(pid)
        except (OSError, ValueError, IndexError):
            pass

    def ours(pid: int) -> bool:
        for _ in range(8):  # a run's worker -> Ray's worker -> raylet -> ray start
            if pid in marked:
                return True
            pid = parent.get(pid, 0)
        return False

    for pid in [pid for pid in parent if ours(pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def _raylet_of(pid: int) -> int:
    """The raylet above process `pid` (a run's worker -> Ray's worker -> raylet)."""
    p = pid
    for _ in range(5):
        p = _ppid(p)
        if "raylet" in _cmdline(p).split()[0]:
            return p
    raise AssertionError(f"no raylet above process {pid}")


def _rows(job: Path) -> dict[str, dict]:
    with open(job / "results_seeds.csv", newline="", encoding="utf-8") as f:
        return {r["model"]: r for r in csv.DictReader(f)}


def test_two_node_cluster_survives_a_dead_node(cluster, sequential_job, tiny_data, tmp_path):
    address, env, _ = cluster
    p = subprocess.Popen(compare_command(tiny_data, tmp_path, "ray", "--ray", address), cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log = tmp_path / "ray" / "yolov5n_biformer_seed0" / "train.log"
        deadline = time.time() + 300
        while not log.is_file() and p.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert log.is_file(), p.stdout.read().decode()[-3000:]
        pids = subprocess.run(["pgrep", "-f", f"compare.worker_main.* {tmp_path / 'ray'} yolov5n_biformer.yaml 0"],
                              capture_output=True, text=True).stdout.split()
        assert pids, "the run's worker is not running"
        raylet = _raylet_of(int(pids[0]))
        os.kill(raylet, signal.SIGKILL)  # the whole node goes: its raylet, Ray's worker, the run's worker
        out = p.communicate(timeout=900)[0].decode()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, out[-3000:]
    assert "2 runs on the Ray cluster at " in out and "(3 node(s))" in out
    job = tmp_path / "ray"
    rows = _rows(job)
    assert rows["yolov5n_biformer"]["status"] == "ok" and rows["yolov5n_biformer"]["attempts"] == "2", rows
    assert rows["yolov5n"]["attempts"] == "1"
    assert all(" node " in r["host"] for r in rows.values())
    assert (job / "report.md").is_file() and "ray=" + address in (job / "report.md").read_text()

    seq = _rows(sequential_job)  # the same job run one after another, one thread a run
    for model, row in rows.items():
        for col in ("precision", "recall", "map50", "map", "plugin_share", "ap_all"):
            assert row[col] == seq[model][col], (model, col, row[col], seq[model][col])


def test_a_node_that_cannot_read_the_data_stops_the_job_at_once(cluster, tiny_data, tmp_path):
    """The data set is checked on every node before the first run: here a data YAML whose folder is gone after
    the driver read it stands in for a node without the shared folder."""
    address, env, _ = cluster
    shutil.copytree(Path(tiny_data).parent, tmp_path / "data")
    data = tmp_path / "data" / "tiny.yaml"
    data.write_text(data.read_text().replace(str(Path(tiny_data).parent), str(tmp_path / "data")))
    r = subprocess.run([sys.executable, "-c", f"""
import shutil, sys
sys.argv = ['compare.py']
import compare
from utils.compare import cluster
real = cluster._nodes_can_read
def check(ray, paths, writable):
    shutil.rmtree({str(tmp_path / 'data' / 'images')!r})
    return real(ray, paths, writable)
cluster._nodes_can_read = check
from utils.cli import cli_errors
cli_errors(compare.main)(compare.parse_opt(args={['--cfgs', *COMPARE_CFGS, '--data', str(data), '--epochs', '1',
                                                  '--imgsz', '64', '--seeds', '1', '--workers', '0', '--device',
                                                  'cpu', '--project', str(tmp_path), '--ray', address]!r}))
"""], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "ERROR: Ray node " in r.stderr, r.stderr[-2000:]
    assert f"cannot read {tmp_path / 'data' / 'images'} (missing)" in r.stderr, r.stderr[-2000:]
    assert not list((tmp_path / "exp").glob("*_seed*/result.json"))


def test_ray_local_starts_a_cluster_of_its_own_beside_a_running_one(cluster, tmp_path):
    """--ray local while another cluster runs on the machine (here the three-node one, named by RAY_ADDRESS as on a
    cluster's machines): the job gets a new one-node cluster, never the running one, which ray.init() without an
    address would attach to (RAY_ADDRESS, else the latest cluster started here)."""
    address, env, _ = cluster
    home = tmp_path / "home"
    home.mkdir()
    r = subprocess.run([sys.executable, "-c", """
import ray
from utils.compare.cluster import _connect
_connect(ray, "local", ".")
print("nodes", len(ray.nodes()))
ray.shutdown()
"""], cwd=ROOT, env={**env, "HOME": str(home), "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nodes 1" in r.stdout, r.stdout[-2000:]
