"""Lower precision by choice, through the command line: export.py --half (OpenVINO weights stored in fp16, on the
CPU) and --int8 (NNCF post-training quantization on --data's images), val.py running the results, and the
options that cannot work refused in one line. The table of their mAP and latency per config is
benchmarks/README.md's ("OpenVINO at lower precision")."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import val
from utils.deploy.runtimes import compile_openvino, is_pinned_f32

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

ROOT = Path(__file__).resolve().parent.parent
IMGSZ = 160


def _cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """yolov5n.pt and a data YAML over 12 COCO128 images, in one folder."""
    d = tmp_path_factory.mktemp("precision")
    shutil.copy(ROOT / "weights" / "yolov5n.pt", d)
    ims = sorted((ROOT / "data/coco128/images/train2017").glob("*.jpg"))[:12]
    (d / "list.txt").write_text("".join(f"{p}\n" for p in ims))
    names = yaml.safe_load((ROOT / "data" / "coco128.yaml").read_text())["names"]
    (d / "tiny.yaml").write_text(yaml.safe_dump(dict(path=str(d), train="list.txt", val="list.txt", names=names)))
    return d


def _constants(xml: Path) -> collections.Counter:
    """Element types of the IR's weight constants (rank >= 2)."""
    ops = ov.Core().read_model(str(xml)).get_ops()
    return collections.Counter(str(op.get_element_type()) for op in ops if op.get_type_name() == "Constant"
                               and op.get_output_partial_shape(0).rank.get_length() >= 2)


def _map(weights: Path, data: Path, project: Path) -> float:
    res, _, _ = val.run(data=str(data), weights=str(weights), imgsz=IMGSZ, batch_size=1, workers=0, task="speed",
                        plots=False, project=project, exist_ok=True)
    return float(res[3])


def test_half_and_int8_exports_from_the_command_line(tiny, tmp_path):
    r = _cli("export.py", "--weights", str(tiny / "yolov5n.pt"), "--include", "openvino", "--imgsz", str(IMGSZ),
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    fp32 = tiny / "yolov5n_openvino_model"
    map32 = _map(fp32, tiny / "tiny.yaml", tmp_path / "v32")
    assert map32 > 0.2  # a real operating point of yolov5n on these images
    assert "<Type: 'float16'>" not in _constants(fp32 / "yolov5n.xml")

    r = _cli("export.py", "--weights", str(tiny / "yolov5n.pt"), "--include", "openvino", "--half", "--imgsz",
             str(IMGSZ), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    types = _constants(fp32 / "yolov5n.xml")  # the same folder, now with fp16 weights (as YOLOv5 names it)
    assert types["<Type: 'float16'>"] > 50 and "<Type: 'float32'>" not in types, types
    assert is_pinned_f32(ov.Core().read_model(str(fp32 / "yolov5n.xml")))  # computed at f32 all the same
    map16 = _map(fp32, tiny / "tiny.yaml", tmp_path / "v16")
    assert map16 == pytest.approx(map32, abs=0.01), (map16, map32)

    r = _cli("export.py", "--weights", str(tiny / "yolov5n.pt"), "--include", "openvino", "--int8", "--data",
             str(tiny / "tiny.yaml"), "--imgsz", str(IMGSZ), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "calibrating on 12 images" in r.stdout + r.stderr
    q = tiny / "yolov5n_int8_openvino_model"
    ops = collections.Counter(op.get_type_name() for op in ov.Core().read_model(str(q / "yolov5n.xml")).get_ops())
    assert ops["FakeQuantize"] > 50
    runtime = compile_openvino(q).get_runtime_model()
    conv = collections.Counter(op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ops()
                               if op.get_rt_info()["layerType"].astype(str) == "Convolution")
    assert conv["u8"] + conv["i8"] > 50, conv  # convolutions really run in int8 (the f32 pin leaves them be)
    map8 = _map(q, tiny / "tiny.yaml", tmp_path / "v8")
    assert map8 == pytest.approx(map32, abs=0.06), (map8, map32)

    r = _cli("val.py", "--weights", str(q), "--data", str(tiny / "tiny.yaml"), "--imgsz", str(IMGSZ), "--workers",
             "0", "--ov-precision", "bf16", "--project", str(tmp_path / "vbf16"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]  # bf16 asked for: run (at f32 where the CPU has no bf16)


@pytest.mark.parametrize("args, message", [
    (["--include", "onnx", "--half"], "--half on the CPU applies to OpenVINO (weights stored in fp16) and CoreML"),
    (["--include", "onnx", "openvino", "--int8"], "--int8 applies to OpenVINO (NNCF post-training quantization) and"),
    (["--include", "openvino", "--int8", "--half"], "--int8 and --half cannot be combined"),
])
def test_precision_options_that_cannot_work_are_one_line(args, message, tiny, tmp_path):
    r = _cli("export.py", "--weights", str(tiny / "yolov5n.pt"), "--imgsz", "64", *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and message in r.stderr, r.stderr


def test_val_refuses_an_unknown_openvino_precision(tiny, tmp_path):
    r = _cli("val.py", "--weights", str(tiny / "yolov5n.pt"), "--ov-precision", "fp8", cwd=tmp_path)
    assert r.returncode == 2 and "--ov-precision: invalid choice: 'fp8'" in r.stderr
