"""compare.py's latency step: PyTorch at batch 1 and 32, and the deployed ONNX Runtime / OpenVINO runners at batch
1, timed in the same rotating rounds, for every model's checkpoint (`time_checkpoints`).

`time_checkpoints_in_child` runs the same step in a fresh interpreter (`python -m utils.deploy.timing JOB OUT`), so
that ONNX Runtime and OpenVINO never load into the calling process: a process holding them died with SIGSEGV when
a DataLoader worker it had started later exited (compare jobs run one after another in one process; the crash
came on the SIGCHLD handler's return). The figures equal the in-process ones within the machine's noise
(benchmarks/README.md, "Deployed latency in a process of its own").
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from models import load_model
from utils.deploy.latency import LatencyStat, measure_latency, prepare_for_timing
from utils.deploy.runners import RUNTIMES, deploy_runners, runtime_versions, short_error, temp_deploy_dir

__all__ = ["Timings", "time_checkpoints", "time_checkpoints_in_child"]


@dataclass
class Timings:
    """Per model name: PyTorch's {batch size: LatencyStat}, the deployed runtimes' {runtime: LatencyStat} at batch
    1, and {runtime: why there is no figure}."""

    latency: dict[str, dict[int, LatencyStat]] = field(default_factory=dict)
    deploy_latency: dict[str, dict[str, LatencyStat]] = field(default_factory=dict)
    deploy_errors: dict[str, dict[str, str]] = field(default_factory=dict)


def time_checkpoints(weights: dict[str, str], imgsz: int, device: str, deploy: bool, threads: int,
                     batch_sizes: tuple[int, ...] = (1, 32)) -> Timings:
    """Load each checkpoint (name -> best.pt), export it for ONNX Runtime and OpenVINO when `deploy`, and time
    everything in one interleaved measurement with `threads` intra-op threads. A runtime that is missing, or an
    export, load or timed call that fails, is recorded in deploy_errors; PyTorch's figures are always there."""
    torch.set_num_threads(int(threads))
    dev = torch.device(device)
    half = dev.type == "cuda"
    nets = {n: prepare_for_timing(load_model(w), dev, half) for n, w in weights.items()}
    repeats = {1: 50, 32: 10} if dev.type == "cuda" else {1: 10, 32: 2}
    warmup = 2 if dev.type == "cuda" else 1
    out = Timings(deploy_errors={n: {} for n in weights})
    with temp_deploy_dir() as folder:
        runners = {}
        if deploy:
            versions = runtime_versions()
            for n in weights:
                try:
                    d = deploy_runners(nets[n], imgsz, folder, n, RUNTIMES, int(threads), versions)
                except Exception as e:  # noqa: BLE001  (deployed latency is extra: never the job's end)
                    out.deploy_errors[n] = {rt: f"export failed: {short_error(e)}" for rt in RUNTIMES}
                    continue
                out.deploy_errors[n] = dict(d.errors)
                runners.update({f"{n}@{rt}": r for rt, r in d.runners.items()})
        try:
            lat = measure_latency({**nets, **runners}, imgsz, batch_sizes, warmup=warmup, repeats=repeats)
        except Exception as e:  # noqa: BLE001  (a runtime that fails while timed: PyTorch's figures alone)
            if not runners:
                raise
            why = f"failed while timed: {short_error(e)}"
            for key in runners:
                n, rt = key.split("@", 1)
                out.deploy_errors[n][rt] = why
            lat = measure_latency(nets, imgsz, batch_sizes, warmup=warmup, repeats=repeats)
        del runners
    for n in weights:
        out.latency[n] = dict(lat[n])
        out.deploy_latency[n] = {k.split("@", 1)[1]: v[1] for k, v in lat.items() if k.startswith(f"{n}@") and 1 in v}
    return out


def time_checkpoints_in_child(weights: dict[str, str], imgsz: int, device: str, deploy: bool, threads: int,
                              batch_sizes: tuple[int, ...] = (1, 32)) -> Timings:
    """`time_checkpoints` in a child interpreter of its own when `deploy` (in this process otherwise: PyTorch
    alone forks nothing unsafe). A child that fails raises RuntimeError here with its status and last line."""
    if not deploy:
        return time_checkpoints(weights, imgsz, device, deploy, threads, batch_sizes)
    from utils.paths import ROOT

    with tempfile.TemporaryDirectory(prefix="timing_") as d:
        job, out = Path(d) / "job.json", Path(d) / "timings.json"
        job.write_text(json.dumps(dict(weights={n: str(Path(w).resolve()) for n, w in weights.items()},
                                       imgsz=int(imgsz), device=str(device), deploy=True, threads=int(threads),
                                       batch_sizes=list(batch_sizes))))
        r = subprocess.run([sys.executable, "-m", "utils.deploy.timing", str(job), str(out)], cwd=ROOT,
                           capture_output=True, text=True)
        if not out.is_file():  # written last and whole: present means complete
            last = ((r.stderr or r.stdout).strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the latency step's process exited with status {r.returncode}: {last}")
        return _timings_from_dict(json.loads(out.read_text()))


def _timings_from_dict(d: dict) -> Timings:
    """Timings back from their JSON form (batch sizes were written as strings)."""
    return Timings(latency={n: {int(b): LatencyStat(**s) for b, s in v.items()} for n, v in d["latency"].items()},
                   deploy_latency={n: {rt: LatencyStat(**s) for rt, s in v.items()}
                                   for n, v in d["deploy_latency"].items()},
                   deploy_errors=d["deploy_errors"])


def _child(job_file: str, out_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    t = time_checkpoints(job["weights"], job["imgsz"], job["device"], job["deploy"], job["threads"],
                         tuple(job["batch_sizes"]))
    tmp = Path(out_file).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(t), allow_nan=True))
    tmp.replace(out_file)


if __name__ == "__main__":
    _child(*sys.argv[1:3])
