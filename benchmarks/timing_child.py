"""compare's latency step in the calling process against the same step in a child interpreter of its own.

    python -m benchmarks.timing_child                      # yolov5n and yolov5n_biformer at 256, 3 alternations
    python -m benchmarks.timing_child --imgsz 320 --rounds 5 --threads 1

Both models are built from their YAMLs (seed 0, Residual gates 0.1) and saved as checkpoints; then, `--rounds`
times, `utils.deploy.timing.time_checkpoints` runs in this process and `time_checkpoints_in_child` in a fresh
interpreter, alternately. Printed: each model's median ms per image at batch 1 in PyTorch, ONNX Runtime and
OpenVINO, the median over the rounds of each way, and child / in-process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from models.common import Residual
from models.yolo import Model
from utils.checkpoint import save_checkpoint
from utils.deploy.timing import time_checkpoints, time_checkpoints_in_child

CFGS = ("yolov5n.yaml", "yolov5n_biformer.yaml")


def _checkpoints(folder: Path) -> dict[str, str]:
    out = {}
    for cfg in CFGS:
        torch.manual_seed(0)
        m = Model(cfg, verbose=False)
        for r in m.modules():
            if isinstance(r, Residual):
                with torch.no_grad():
                    r.gamma.fill_(0.1)
        out[Path(cfg).stem] = str(save_checkpoint(dict(model=m.state_dict(), yaml=m.yaml, names=m.names),
                                                  folder / f"{Path(cfg).stem}.pt"))
    return out


def _medians(t) -> dict[tuple[str, str], float]:
    out = {}
    for n, by_bs in t.latency.items():
        out[(n, "pytorch")] = by_bs[1].median_ms
        out.update({(n, rt): s.median_ms for rt, s in t.deploy_latency[n].items()})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rounds", type=int, default=3, help="alternations of in-process and child")
    opt = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        weights = _checkpoints(Path(d))
        runs = {"in-process": [], "child": []}
        for _ in range(opt.rounds):
            runs["in-process"].append(_medians(time_checkpoints(weights, opt.imgsz, "cpu", True, opt.threads)))
            runs["child"].append(_medians(time_checkpoints_in_child(weights, opt.imgsz, "cpu", True, opt.threads)))
    print(f"\n{opt.imgsz}x{opt.imgsz}, batch 1, {opt.threads} thread(s), {opt.rounds} alternations: median ms per "
          "image (each round's median, then the median over rounds)\n")
    print("| model | runtime | in-process | child | child / in-process |")
    print("|---|---|---|---|---|")
    for key in runs["in-process"][0]:
        a = statistics.median(r[key] for r in runs["in-process"])
        b = statistics.median(r[key] for r in runs["child"])
        print(f"| {key[0]} | {key[1]} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
