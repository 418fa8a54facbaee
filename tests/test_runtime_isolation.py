"""ONNX Runtime and OpenVINO never load into a compare job's process: its deployed-latency step runs in a child
interpreter (utils.deploy.timing.time_checkpoints_in_child). A process holding them died with SIGSEGV once a
DataLoader worker it had started exited, so jobs run one after another in one process, with workers, must all end.
Each check runs in a fresh interpreter, since this test process may have loaded the runtimes already."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_child_timing_equals_shape_of_in_process_and_loads_no_runtime(tmp_path):
    """The child's Timings come back whole (PyTorch at batch 1 and 32, both runtimes at batch 1, n calls each) and
    the calling process never imports a runtime; a child that fails names its error."""
    r = _python(f"""
        import json, sys, torch
        from models.yolo import Model
        from utils.checkpoint import save_checkpoint
        from utils.deploy.timing import time_checkpoints_in_child
        torch.manual_seed(0)
        m = Model("yolov5n.yaml", verbose=False)
        save_checkpoint(dict(model=m.state_dict(), yaml=m.yaml, names=m.names), {str(tmp_path / 'a.pt')!r})
        t = time_checkpoints_in_child({{"a": {str(tmp_path / 'a.pt')!r}}}, 64, "cpu", True, 1)
        try:
            time_checkpoints_in_child({{"b": {str(tmp_path / 'missing.pt')!r}}}, 64, "cpu", True, 1)
            err = ""
        except RuntimeError as e:
            err = str(e)
        print(json.dumps(dict(pt={{b: s.n for b, s in t.latency["a"].items()}},
                              rt={{k: [s.n, s.median_ms > 0] for k, s in t.deploy_latency["a"].items()}},
                              errors=t.deploy_errors, err=err,
                              loaded=[m for m in ("onnxruntime", "openvino") if m in sys.modules])))
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["pt"] == {"1": 10, "32": 2}
    assert out["rt"] == {"onnxruntime": [10, True], "openvino": [10, True]} and out["errors"] == {"a": {}}
    assert "exited with status 1" in out["err"] and "missing.pt" in out["err"]
    assert out["loaded"] == []


@pytest.mark.slow
def test_compare_jobs_in_a_row_with_workers_and_deployed_latency(tmp_path):
    """Three compare jobs in one process, DataLoader workers on, deployed latency on: every job ends with both
    runtimes timed, the process exits 0, and neither runtime was ever loaded into it."""
    images = sorted((ROOT / "data" / "coco128" / "images" / "train2017").glob("*.jpg"))[:8]
    (tmp_path / "list.txt").write_text("\n".join(str(p) for p in images) + "\n")
    r = _python(f"""
        import json, sys, yaml
        import compare
        names = yaml.safe_load(open("data/coco128.yaml"))["names"]
        d = {str(tmp_path)!r}
        yaml.safe_dump(dict(path=d, train="list.txt", val="list.txt", names=names), open(d + "/tiny.yaml", "w"))
        jobs = []
        if __name__ == "__main__":
            for k in range(3):
                save_dir, models = compare.run(cfgs=["yolov5n.yaml", "yolov5n_biformer.yaml"], data=d + "/tiny.yaml",
                                               epochs=1, imgsz=64, batch_size=4, seeds=1, workers=2, device="cpu",
                                               bootstrap=0, project=d + "/p", name="exp")
                jobs.append({{m.name: sorted(m.deploy_latency) for m in models}})
            print(json.dumps(dict(jobs=jobs, loaded=[m for m in ("onnxruntime", "openvino") if m in sys.modules])))
    """, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["jobs"] == [{"yolov5n": ["onnxruntime", "openvino"],
                            "yolov5n_biformer": ["onnxruntime", "openvino"]}] * 3
    assert out["loaded"] == []
