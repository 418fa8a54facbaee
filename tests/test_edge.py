"""Edge formats (export.py --include tflite coreml executorch): every bundled config, plug-ins switched on,
converts; the TFLite and ExecuTorch files equal PyTorch on real photos at a non-square size and are val.py /
detect.py weights with the .pt's mAP50-95; the CoreML package is read back (inputs, outputs, metadata, nothing
outside Core ML's own operator set)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import export
import val
from models import load_model
from models.backends import DetectBackend, weights_format
from tests.conftest import build_once
from tests.test_export import CONFIGS, _checkpoint, _images, _rel
from utils.deploy.edge import coreml_summary, open_edge, tflite_metadata
from utils.errors import UserError

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("executorch")
ct = pytest.importorskip("coremltools")

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4  # max |diff| <= TOL * max |output|, as the other exports
HW = (192, 256)  # non-square, so a transposed axis would show
RUNNABLE = ("tflite", "executorch")


def _coreml_ops_ok(ops: list[str]) -> list[str]:
    """The operators that are not Core ML's own (iOS16 opset or older): a custom or dialect layer would be here."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    return [op for op in ops if op not in SSAOpRegistry.core_ops
            or not any(t <= ct.target.iOS16 for t in SSAOpRegistry.core_ops[op])]


def _check_edge_files(files: dict, pt: Path, hw: tuple[int, int], names: dict) -> None:
    """TFLite and ExecuTorch equal PyTorch within 1e-4 of the output's range on the two bundled photos at `hw`, with
    the shape, stride and names in their metadata; CoreML converted with 1/255-scaled image input, the decoded
    output shape, the model's stride and names, and Core ML operators only."""
    x = _images(*hw)
    with torch.no_grad():
        ref = load_model(pt, fuse=True)(x)[0].numpy()
    for fmt in RUNNABLE:
        m = open_edge(fmt, files[fmt])
        got_names = {int(k): v for k, v in m.meta["names"].items()}  # JSON (TFLite) writes the keys as strings
        assert m.shape == (1, 3, *hw) and m.meta["stride"] == 32 and got_names == names
        got = np.concatenate([m.run(x[i:i + 1].numpy()) for i in range(len(x))])
        assert _rel(got, ref) <= TOL, (pt, fmt, _rel(got, ref))
    s = coreml_summary(files["coreml"])
    assert s["program"] == "mlProgram"
    assert s["inputs"] == {"images": ("image", *hw)} and s["outputs"] == {"output0": ("multiArrayType", *ref[:1].shape)}
    assert s["metadata"]["stride"] == "32" and s["metadata"]["names"] == str(names)
    assert not _coreml_ops_ok(s["ops"]), (pt, _coreml_ops_ok(s["ops"]))


# yolov5n.yaml's graph is checked on the session's yolov5n.pt export (test_yolov5n_edge_files_equal_pytorch below):
# the same layers with the official weights, so it is not converted a second time here.
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c != "yolov5n.yaml"])
def test_every_config_converts_and_equals_pytorch(cfg, tmp_path):
    """Random weights with every plug-in's gate open, at a non-square size (a transposed axis would show)."""
    pt = _checkpoint(cfg, tmp_path / "best.pt")
    files = export.run(weights=str(pt), imgsz=HW, include=("tflite", "executorch", "coreml"), check=False)
    _check_edge_files(files, pt, HW, {0: "class0", 1: "class1", 2: "class2"})


def _export_yolov5n_edge(d: Path) -> None:
    shutil.copy(ROOT / "weights" / "yolov5n.pt", d / "yolov5n.pt")
    r = subprocess.run([sys.executable, "export.py", "--weights", str(d / "yolov5n.pt"), "--include", "tflite",
                        "executorch", "coreml", "--imgsz", "256"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    (d / "export.log").write_text(r.stdout + r.stderr)


@pytest.fixture(scope="session")
def yolov5n_edge(tmp_path_factory) -> dict:
    """yolov5n.pt exported at 256 x 256 to the three edge formats from the command line, once per test session
    (shared by pytest-xdist workers; tests only read it)."""
    d = build_once(tmp_path_factory, "yolov5n_edge", _export_yolov5n_edge)
    return {"pt": d / "yolov5n.pt", "tflite": d / "yolov5n.tflite", "executorch": d / "yolov5n_executorch_model",
            "coreml": d / "yolov5n.mlpackage", "log": (d / "export.log").read_text()}


def test_export_cli_writes_each_with_its_metadata(yolov5n_edge):
    """The files and their metadata where YOLOv5-style loaders look, and the check against PyTorch in the log."""
    meta = tflite_metadata(yolov5n_edge["tflite"])
    assert meta["stride"] == 32 and meta["imgsz"] == [256, 256] and meta["names"]["0"] == "person"
    assert (yolov5n_edge["executorch"] / "yolov5n.pte").is_file()
    assert (yolov5n_edge["executorch"] / "metadata.yaml").is_file()
    assert (yolov5n_edge["coreml"] / "Manifest.json").is_file()
    assert [weights_format(yolov5n_edge[f]) for f in ("tflite", "executorch", "coreml")] == \
        ["tflite", "executorch", "coreml"]
    log = yolov5n_edge["log"]
    for fmt in RUNNABLE:
        line = next(x for x in log.splitlines() if x.startswith(fmt) and "MB" not in x and "e-" in x)
        assert float(line.split()[3]) <= TOL, line  # export's own check: max |diff| / max |output|


def test_yolov5n_edge_files_equal_pytorch(yolov5n_edge):
    """yolov5n.pt exported from the command line: the checks every config gets above, on the official weights."""
    names = load_model(yolov5n_edge["pt"]).names
    names = names if isinstance(names, dict) else dict(enumerate(names))  # as the export writes them
    _check_edge_files(yolov5n_edge, yolov5n_edge["pt"], (256, 256), names)


def test_val_map_of_tflite_and_executorch_equals_pt(yolov5n_edge, tiny_data, tmp_path):
    """val.py on the same square 256 batches (task 'speed'): each runnable edge file scores the .pt's mAP50-95."""
    def score(w):
        (_, _, map50, map_, *_), _, _ = val.run(data=tiny_data, weights=str(w), imgsz=256, batch_size=1, workers=0,
                                                task="speed", project=tmp_path, plots=False)
        return map50, map_

    ref = score(yolov5n_edge["pt"])
    assert ref[1] > 0.1, ref
    for fmt in RUNNABLE:
        got = score(yolov5n_edge[fmt])
        assert got[1] == pytest.approx(ref[1], abs=0.002) and got[0] == pytest.approx(ref[0], abs=0.002), (fmt, got)


def test_detect_cli_runs_the_edge_files_and_refuses_coreml_clearly(yolov5n_edge, tmp_path):
    """detect.py --weights X.tflite / X_executorch_model finds the bus photo's people; a CoreML package is one
    clear error line (it runs on Apple devices), never a traceback."""
    def detect(w, name):
        return subprocess.run([sys.executable, "detect.py", "--weights", str(w), "--source",
                               str(ROOT / "data/images/bus.jpg"), "--imgsz", "256", "--project", str(tmp_path),
                               "--name", name, "--save-txt", "--nosave"], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)

    for fmt in RUNNABLE:
        r = detect(yolov5n_edge[fmt], fmt)
        assert r.returncode == 0, r.stderr[-2000:]
        rows = np.loadtxt(tmp_path / fmt / "labels" / "bus.txt", ndmin=2)
        assert (rows[:, 0] == 0).sum() >= 3, (fmt, rows)  # persons
    r = detect(yolov5n_edge["coreml"], "coreml")
    assert r.returncode == 2 and "Apple devices" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_edge_options_are_refused_by_name(tmp_path):
    pt = tmp_path / "yolov5n.pt"
    shutil.copy(ROOT / "weights" / "yolov5n.pt", pt)
    with pytest.raises(UserError, match=r"--dynamic: tflite, executorch exports are made at one fixed size"):
        export.run(weights=str(pt), include=("tflite", "executorch"), dynamic=True)
    with pytest.raises(UserError, match=r"--half: the tflite export is float32 \(CoreML takes --half\)"):
        export.run(weights=str(pt), include=("tflite", "coreml"), half=True)
    with pytest.raises(UserError, match=r"--int8 applies to OpenVINO \(NNCF post-training quantization\) and "
                                        r"ExecuTorch \(XNNPACK's post-training quantization\) only; got "
                                        r"--include tflite"):
        export.run(weights=str(pt), include=("tflite",), int8=True)
    with pytest.raises(UserError, match=r"--include coreml takes one image at a time \(--batch-size 1\)"):
        export.run(weights=str(pt), include=("coreml",), batch_size=2, imgsz=64)
    (tmp_path / "x.mlpackage").mkdir()
    with pytest.raises(UserError, match=r"runs on Apple devices \(macOS, iOS\) only"):
        DetectBackend(tmp_path / "x.mlpackage")


def test_executorch_int8_from_the_command_line(tiny_data, tmp_path):
    """export.py --include executorch --int8 --data: XNNPACK's post-training quantization calibrated on the data's
    train images, written to *_int8_executorch_model with int8 in its metadata, under 0.4x the bytes of the model's
    float32 parameters, and run by val.py (its mAP cost is measured in benchmarks/README.md, not asserted)."""
    pt = tmp_path / "yolov5n.pt"
    shutil.copy(ROOT / "weights" / "yolov5n.pt", pt)
    r = subprocess.run([sys.executable, "export.py", "--weights", str(pt), "--include", "executorch", "--imgsz",
                        "128", "--int8", "--data", str(tiny_data)], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    int8 = tmp_path / "yolov5n_int8_executorch_model"
    m = open_edge("executorch", int8)
    assert m.meta["int8"] is True and m.meta["names"][0] == "person"
    fp32_bytes = 4 * sum(p.numel() for p in load_model(pt).parameters())
    assert (int8 / "yolov5n.pte").stat().st_size < 0.4 * fp32_bytes
    out = m.run(np.zeros((1, 3, 128, 128), np.float32))
    assert out.shape == (1, 3 * (16 * 16 + 8 * 8 + 4 * 4), 85) and np.isfinite(out).all()
    (_, _, _, map_, *_), _, _ = val.run(data=tiny_data, weights=str(int8), imgsz=128, batch_size=1, workers=0,
                                        task="speed", project=tmp_path, plots=False)
    assert 0 < map_ <= 1


def test_coreml_half_computes_in_float16(tmp_path):
    """--half --include coreml: the ML Program computes in float16 (the float32 image input is cast once, and a
    float32 program has no cast at all); the inputs, outputs and metadata are the float32 program's."""
    pt = tmp_path / "yolov5n.pt"
    shutil.copy(ROOT / "weights" / "yolov5n.pt", pt)
    fp32 = coreml_summary(export.run(weights=str(pt), imgsz=64, include=("coreml",), check=False)["coreml"])
    shutil.move(tmp_path / "yolov5n.mlpackage", tmp_path / "fp32.mlpackage")
    fp16 = coreml_summary(export.run(weights=str(pt), imgsz=64, include=("coreml",), half=True,
                                     check=False)["coreml"])
    assert "cast" not in fp32["ops"] and "cast" in fp16["ops"]
    assert (fp16["inputs"], fp16["outputs"]) == (fp32["inputs"], fp32["outputs"]) == \
        ({"images": ("image", 64, 64)}, {"output0": ("multiArrayType", 1, 3 * (64 + 16 + 4), 85)})
    assert fp16["metadata"]["names"] == fp32["metadata"]["names"] and fp16["metadata"]["stride"] == "32"


@pytest.mark.parametrize("fmt, module, package", [("tflite", "litert_torch", "litert-torch"),
                                                  ("coreml", "coremltools", "coremltools"),
                                                  ("executorch", "executorch", "executorch")])
def test_a_missing_edge_package_is_named(fmt, module, package, tmp_path, monkeypatch):
    pt = tmp_path / "yolov5n.pt"
    shutil.copy(ROOT / "weights" / "yolov5n.pt", pt)
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as where it is not installed
    with pytest.raises(UserError, match=rf"--include {fmt} needs the package '{package}' \(pip install -r "
                                        r"requirements-edge.txt\)"):
        export.run(weights=str(pt), imgsz=64, include=(fmt,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yolov5n.pt"]
