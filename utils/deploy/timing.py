"""compare.py's latency step: PyTorch at batch 1 and 32, and the deployed ONNX Runtime / OpenVINO runners at batch
1, timed in the same rotating rounds, for every model's checkpoint (`time_checkpoints`). It runs in the calling
process: timed in a spawned process instead, every figure came out 4-5x slow once the runtimes were loaded
(benchmarks/README.md, "Deployed latency in a process of its own").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models import load_model
from utils.deploy.latency import LatencyStat, measure_latency, prepare_for_timing
from utils.deploy.runners import RUNTIMES, deploy_runners, runtime_versions, short_error, temp_deploy_dir

__all__ = ["Timings", "time_checkpoints"]


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
