"""Deployed latency (utils.deploy.runners, compare.py's ORT / OV columns) and `python benchmarks.py` (benchmarks.deploy)
on tiny settings: a 64x64 input, 4 images."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

import compare
from models.yolo import Model
from tests.conftest import open_residuals
from tests.helpers import FakeClock, Sleeper
from utils.checkpoint import save_checkpoint
from utils.compare.report import ReportMeta, results_rows, table_lines, write_report
from utils.compare.results import ModelResult, SeedResult
from utils.compare.tables import deploy_line
from utils.deploy import runners as deploy
from utils.deploy.latency import measure_latency
from utils.deploy.timing import time_checkpoints

IMGSZ = 64
ROOT = Path(__file__).resolve().parent.parent


class _Runner:
    """A runner of another runtime that takes `ms` per call on `clock`, exported for batch 1."""

    batch = 1

    def __init__(self, name: str, ms: float, log: list, clock: FakeClock):
        self.name, self.ms, self.log, self.clock = name, ms, log, clock

    def prepare(self, x: torch.Tensor) -> np.ndarray:
        return x.numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.log.append((self.name, x.shape[0], type(x).__name__))
        self.clock.advance(self.ms)
        return x


def test_runners_are_timed_in_the_pytorch_rounds(monkeypatch):
    """On a fake clock that only the stand-ins move: exact figures, whatever the machine's load."""
    from utils.deploy import latency

    log, clock = [], FakeClock()
    monkeypatch.setattr(latency, "time_sync", clock.time)
    models = {"a": Sleeper("a", 20, log, clock), "a@ort": _Runner("a@ort", 10, log, clock),
              "b@ov": _Runner("b@ov", 5, log, clock)}
    out = measure_latency(models, imgsz=8, batch_sizes=(1, 4), warmup=1, repeats={1: 4, 4: 2})
    assert out["a@ort"][1].median_ms == pytest.approx(10) and set(out["a@ort"]) == {1}
    assert out["b@ov"][1].median_ms == pytest.approx(5) and out["b@ov"][1].n == 4
    assert out["a"][1].median_ms == pytest.approx(20)
    assert set(out["a"]) == {1, 4}  # the runners have batch 1 only: left out of batch 4
    b1 = [n for n, bs, _ in log if bs == 1][3:]  # after the warm-up
    assert b1[:6] == ["a", "a@ort", "b@ov", "a@ort", "b@ov", "a"]  # one rotating round for all of them
    assert {t for n, _, t in log if "@" in n} == {"ndarray"} and {t for n, _, t in log if "@" not in n} == {"Tensor"}


def test_missing_runtimes_give_reasons_without_exporting(tmp_path, monkeypatch):
    def no_export(*a, **k):
        raise AssertionError("nothing to export for")

    monkeypatch.setattr(deploy, "export_for_deploy", no_export)
    d = deploy.deploy_runners(nn.Conv2d(3, 3, 1), IMGSZ, tmp_path, "m", versions={
        "onnxruntime": "missing (ImportError: No module named 'onnxruntime')", "openvino": "missing (ImportError: x)"})
    assert d.runners == {} and d.errors["onnxruntime"].startswith("onnxruntime missing (ImportError: No module")
    with pytest.raises(ValueError, match="runtime 'tensorrt'; valid: onnxruntime, openvino"):
        deploy.deploy_runners(nn.Conv2d(3, 3, 1), IMGSZ, tmp_path, "m", runtimes=("tensorrt",))


def _checkpoint(cfg: str, path: Path) -> Path:
    torch.manual_seed(0)
    model = Model(cfg, nc=80, verbose=False)
    open_residuals(model, 0.5)  # a zero gate must not hide the plug-in from any runtime
    return save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": model.names}, path)


def _model(name: str, cfg: str, best: Path) -> ModelResult:
    m = ModelResult(name, cfg, 1000, 1.0)
    m.seeds = [SeedResult(0, 0.5, 0.5, 0.4, 0.3, [0.3], 1.0, best.parent.parent)]
    return m


def test_compare_deploy_columns_and_a_failed_export(tmp_path, monkeypatch):
    """compare's latency step on two tiny models: ORT and OV figures beside PyTorch's, equal outputs; then the
    plug-in model's OpenVINO conversion made to fail: n/a with the reason, the rest measured."""
    base = _model("yolov5n", "yolov5n.yaml", _checkpoint("yolov5n.yaml", tmp_path / "a" / "weights" / "best.pt"))
    bra = _model("yolov5n_biformer", "yolov5n_biformer.yaml",
                 _checkpoint("yolov5n_biformer.yaml", tmp_path / "b" / "weights" / "best.pt"))
    real = deploy.export_openvino

    def flaky_openvino(model, im, file, *a, **k):
        if "biformer" in Path(file).stem:
            raise RuntimeError("Check 'shape' failed: conversion refused | node X")
        return real(model, im, file, *a, **k)

    monkeypatch.setattr(deploy, "export_openvino", flaky_openvino)
    # the step in this process, so that the patched export applies (the child interpreter is
    # tests/test_runtime_isolation.py's)
    monkeypatch.setattr(compare, "time_checkpoints_in_child", time_checkpoints)
    opt = SimpleNamespace(imgsz=IMGSZ, no_deploy_latency=False)
    bar = SimpleNamespace(set_description=lambda s: None, update=lambda n=1: None)
    compare._latency(opt, [base, bra], torch.device("cpu"), bar)

    assert set(base.deploy_latency) == {"onnxruntime", "openvino"} and set(bra.deploy_latency) == {"onnxruntime"}
    assert all(s.median_ms > 0 and s.n == 10 for m in (base, bra) for s in m.deploy_latency.values())
    assert set(base.latency) == {1, 32} and base.deploy_errors == {}
    assert bra.deploy_errors == {"openvino": "openvino export failed: RuntimeError: Check 'shape' failed: "
                                             "conversion refused | node X"}
    rows = {r["model"]: r for r in results_rows([base, bra])}
    assert float(rows["yolov5n"]["latency_ort_b1_ms"]) > 0 and float(rows["yolov5n"]["latency_openvino_b1_ms"]) > 0
    assert rows["yolov5n"]["latency_ort_b1_delta"] == "" and rows["yolov5n"]["latency_ort_b1_error"] == ""
    ratio = bra.deploy_latency["onnxruntime"].median_ms / base.deploy_latency["onnxruntime"].median_ms - 1
    assert rows["yolov5n_biformer"]["latency_ort_b1_delta"] == pytest.approx(ratio, abs=1e-4)
    assert rows["yolov5n_biformer"]["latency_openvino_b1_ms"] == ""
    assert rows["yolov5n_biformer"]["latency_openvino_b1_error"].startswith("openvino export failed: RuntimeError")
    lines = table_lines([base, bra], IMGSZ)
    head = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert head[5:9] == ["ms/img b1", "ms/img b32", "ms/img ORT b1", "ms/img OV b1"]
    base_cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    bra_cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert float(base_cells[7]) > 0 and float(base_cells[8]) > 0
    assert bra_cells[7].endswith("%)") and bra_cells[8] == "n/a"
    meta = ReportMeta("python compare.py", {"torch": "x"}, "CPU", {"half": False},
                      deploy=deploy_line(SimpleNamespace(no_deploy_latency=False, imgsz=IMGSZ), {},
                                                  torch.device("cpu")))
    report = write_report([base, bra], meta, tmp_path).read_text(encoding="utf-8")
    versions = deploy.runtime_versions()
    assert f"onnxruntime {versions['onnxruntime']} (CPUExecutionProvider" in report
    assert f"openvino {versions['openvino']} (CPU" in report and "fixed 64x64, batch 1" in report
    assert ("- yolov5n_biformer OV: openvino export failed: RuntimeError: Check 'shape' failed: conversion refused "
            "| node X") in report
    assert "**ms/img ORT b1 / OV b1**" in report


def test_no_deploy_latency_flag():
    opt = compare.parse_opt(args=["--no-deploy-latency", "--cfgs", "yolov5n.yaml"])
    command = compare.CompareOptions.from_namespace(opt).command()
    assert opt.no_deploy_latency and command.endswith("--no-deploy-latency")
    assert deploy_line(opt, {}, torch.device("cpu")) == "not measured (--no-deploy-latency)."
    assert not compare.parse_opt(args=[]).no_deploy_latency
    m = ModelResult("a", "a.yaml", 1000, 1.0, seeds=[SeedResult(0, 0.5, 0.5, 0.4, 0.3, [0.3], 1.0, Path("a"))])
    assert "ORT" not in table_lines([m], 64)[0] and not any(k.startswith("latency_ort") for k in results_rows([m])[0])


# ---- python benchmarks.py -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """yolov5n.pt copied into a temporary folder (exports land beside it) and a 4-image data YAML."""
    d = tmp_path_factory.mktemp("bench")
    coco = ROOT / "data" / "coco128"
    images = sorted((coco / "images" / "train2017").glob("*.jpg"))[:4]
    (d / "list.txt").write_text("\n".join(str(p) for p in images) + "\n")
    names = yaml.safe_load((ROOT / "data" / "coco128.yaml").read_text())["names"]
    (d / "tiny.yaml").write_text(yaml.safe_dump(dict(path=str(d), train="list.txt", val="list.txt", names=names)))
    shutil.copy(ROOT / "weights" / "yolov5n.pt", d / "yolov5n.pt")
    return d


def test_benchmarks_pt_and_onnx_then_a_failed_format(tiny, monkeypatch, capsys):
    import export
    import val
    from benchmarks.deploy import BenchmarkFailure, cli, run
    from benchmarks.deploy import table_lines as bench_table

    kw = dict(weights=str(tiny / "yolov5n.pt"), imgsz=IMGSZ, data=str(tiny / "tiny.yaml"), device="cpu",
              workers=0, project=str(tiny / "runs"))
    rows = run(include=["onnx", "pytorch"], **kw)
    assert [r.format for r in rows] == ["PyTorch", "ONNX"] and all(r.ok for r in rows)
    ref = val.run(data=kw["data"], weights=kw["weights"], batch_size=1, imgsz=IMGSZ, task="speed", device="cpu",
                  workers=0, plots=False, project=str(tiny / "runs"), name="ref", exist_ok=True)[0]
    onnx_row = rows[1]
    assert rows[0].map == pytest.approx(ref[3], abs=1e-6) and onnx_row.map == pytest.approx(ref[3], abs=2e-3)
    assert onnx_row.file == tiny / "yolov5n.onnx" and onnx_row.size_mb > 1 and all(r.ms > 0 for r in rows)
    lines = bench_table(rows)
    assert lines[0] == "| Format | Size (MB) | mAP50-95 | Inference time (ms) |"
    assert lines[3].startswith(f"| ONNX | {onnx_row.size_mb:.1f} | {onnx_row.map:.4f} | ")

    def broken(*a, **k):
        raise RuntimeError("openvino conversion failed | here")

    monkeypatch.setattr(export, "export_openvino", broken)
    rows = run(include=["openvino"], pt_only=False, test=True, **kw)  # --test: export only
    assert not rows[0].ok and rows[0].error == "RuntimeError: openvino conversion failed | here"
    want = "| OpenVINO | no | - | RuntimeError: openvino conversion failed \\| here |"
    assert bench_table(rows, test=True)[2] == want
    with pytest.raises(BenchmarkFailure, match="1 format\\(s\\) failed: OpenVINO \\(RuntimeError"):
        run(include=["openvino"], test=True, hard_fail=True, **kw)
    args = ["--weights", kw["weights"], "--imgsz", str(IMGSZ), "--data", kw["data"], "--include", "openvino",
            "--test", "--hard-fail", "--project", kw["project"]]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli(args)
    assert e.value.code == 1 and "ERROR: --hard-fail: 1 format(s) failed: OpenVINO" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli(["--weights", kw["weights"], "--include", "tensorrt"])
    assert e.value.code == 2 and "--include tensorrt: not a format; valid: pytorch, torchscript, onnx, openvino" \
        in capsys.readouterr().err
    with pytest.raises(ValueError, match="--hard-fail 'x'"):
        run(hard_fail="x", **kw)
    with pytest.raises(BenchmarkFailure, match="mAP50-95 below the floor: PyTorch"):
        run(pt_only=True, hard_fail="0.99", **kw)


def test_memory_is_measured_before_the_runtimes_load(monkeypatch):
    """compare forks a process per memory figure; it does so before the latency step loads ONNX Runtime's and
    OpenVINO's native thread pools (a fork after them killed a full job with SIGSEGV)."""
    from utils.compare import memory
    calls = []
    monkeypatch.setattr(memory, "peak_train_memory", lambda cfg, *a: calls.append(("memory", cfg)))
    monkeypatch.setattr(compare, "_latency", lambda opt, models, device, bar: calls.append(("latency",)))
    models = [ModelResult("a", "a.yaml", 1, 1.0), ModelResult("b", "b.yaml", 1, 1.0)]
    bar = SimpleNamespace(set_description=lambda s: None, update=lambda n=1: None)
    compare._timing(SimpleNamespace(imgsz=IMGSZ, batch_size=2, modules=None), models, torch.device("cpu"), bar, 80)
    assert calls == [("memory", "a.yaml"), ("memory", "b.yaml"), ("latency",)]
