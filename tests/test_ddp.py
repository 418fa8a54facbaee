"""Distributed training through torchrun: 2 CPU processes over gloo, one epoch on 4 coco128 images."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.test_train import _data_yaml
from utils.checkpoint import load_checkpoint


def test_torchrun_two_processes_on_cpu(tmp_path):
    data = _data_yaml(tmp_path, 4)
    project = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), "--data", str(data), "--imgsz", "64", "--epochs", "1", "--batch-size", "4",
           "--workers", "0", "--device", "cpu", "--project", str(project), "--noautoanchor", "--noplots",
           "--sync-bn"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    # one run folder, written by rank 0 only; rank 1 logs warnings only
    assert [d.name for d in project.iterdir()] == ["exp"]
    assert sorted(f.name for f in (project / "exp" / "weights").iterdir()) == ["best.pt", "last.pt"]
    assert out.count("Starting training for 1 epochs") == 1
    assert out.count("Transferred 349/349 tensors from yolov5n.pt") == 1
    assert out.count("--sync-bn needs CUDA") == 2  # each rank says why SyncBatchNorm is skipped on the CPU
    rows = (project / "exp" / "results.csv").read_text().splitlines()
    assert len(rows) == 2
    ck = load_checkpoint(project / "exp" / "weights" / "last.pt")
    assert len(ck["model"]) == 349 and ck["names"][0] == "person"
