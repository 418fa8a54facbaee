"""OpenVINO runs at f32 unless asked for less, whatever the CPU: every path that compiles a model (val.py, detect.py,
torch.hub, export.py's check, the deployed-latency runners) passes INFERENCE_PRECISION_HINT f32, and the IR that
export.py writes carries the f32 pin itself (each operation marked precise, the hint in its runtime options), so a
plain openvino.Core().compile_model keeps f32 too. On a CPU with native bf16 OpenVINO would otherwise run the model
in bf16; these checks look at what is asked and what is written, so they hold on a CPU with bf16 and one without."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import detect
import export
import val
from models.backends import DetectBackend
from models.yolo import Model
from utils.checkpoint import save_checkpoint
from utils.deploy.runtimes import (compile_openvino, compiled_precision, cpu_has_bf16, is_pinned_f32, openvino_config,
                                   precision_name, unpin)
from utils.deploy.writers import run_exported
from utils.errors import UserError

ov = pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parent.parent
IMGSZ = 64


@pytest.fixture(scope="module")
def ov_export(tmp_path_factory) -> dict:
    """A 2-class yolov5n with random weights, exported to OpenVINO (fixed 64x64) and ONNX beside its .pt."""
    folder = tmp_path_factory.mktemp("ov")
    torch.manual_seed(0)
    model = Model("yolov5n.yaml", nc=2, verbose=False)
    model.names = ["a", "b"]
    pt = save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": model.names}, folder / "best.pt")
    files = export.run(weights=str(pt), imgsz=IMGSZ, include=("onnx", "openvino"), check=False)
    return {"pt": pt, **files}


@pytest.fixture
def compiles(monkeypatch) -> list:
    """Every openvino.Core.compile_model call while the test runs: (model passed, config, compiled model)."""
    calls = []
    real = ov.Core.compile_model

    def spy(self, model, device_name=None, config=None, **kw):
        compiled = real(self, model, device_name, config or {}, **kw)
        calls.append((model, dict(config or {}), compiled))
        return compiled

    monkeypatch.setattr(ov.Core, "compile_model", spy)
    return calls


def _assert_all_f32(calls: list, n_min: int = 1) -> None:
    assert len(calls) >= n_min, calls
    for _, config, compiled in calls:
        assert config.get("INFERENCE_PRECISION_HINT") == "f32", config
        assert compiled_precision(compiled) == "f32"


def test_exported_ir_carries_the_f32_pin(ov_export):
    folder = ov_export["openvino"]
    xml = folder / "best.xml"
    text = xml.read_text()
    assert "<runtime_options>" in text and '<INFERENCE_PRECISION_HINT value="f32"' in text
    model = ov.Core().read_model(str(xml))
    assert model.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str) == "f32"
    ops = model.get_ops()
    assert len(ops) > 100 and all("DisablePrecisionConversion_0" in op.get_rt_info() for op in ops)
    assert is_pinned_f32(model)


def test_pin_is_honoured_and_changes_no_output(ov_export, tmp_path):
    """OpenVINO reads the marks as what keeps an operation's precision: compressing the pinned model to fp16
    leaves every weight f32 (an unpinned copy is compressed). The pinned file, compiled at f32, gives the output
    PyTorch gives. (What a plain compile_model does with it on a CPU with bf16 depends on the CPU, so it is
    measured by `python -m benchmarks.ov_precision`, not asserted here.)"""
    core = ov.Core()
    pinned = core.read_model(str(ov_export["openvino"] / "best.xml"))
    ov.save_model(pinned, str(tmp_path / "p.xml"), compress_to_fp16=True)
    unpinned = unpin(pinned.clone())
    ov.save_model(unpinned, str(tmp_path / "u.xml"), compress_to_fp16=True)
    types = lambda f: {str(op.get_element_type()) for op in core.read_model(str(f)).get_ops()  # noqa: E731
                       if op.get_type_name() == "Constant" and op.get_output_partial_shape(0).rank.get_length() == 4}
    assert types(tmp_path / "p.xml") == {"<Type: 'float32'>"}
    assert "<Type: 'float16'>" in types(tmp_path / "u.xml")

    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    ref = DetectBackend(ov_export["pt"])(x)[0].detach().numpy()
    out = np.asarray(compile_openvino(ov_export["openvino"])(x.numpy())[0])
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_every_path_compiles_at_f32(ov_export, compiles, tmp_path):
    folder = ov_export["openvino"]
    DetectBackend(folder)
    DetectBackend(folder / "best.xml")
    _assert_all_f32(compiles, 2)

    compiles.clear()  # export.py's own check of the file it wrote
    run_exported("openvino", folder, torch.rand(1, 3, IMGSZ, IMGSZ))
    _assert_all_f32(compiles)

    compiles.clear()  # detect.py and val.py (benchmarks.py validates through val.run)
    detect.run(weights=str(folder), source=ROOT / "data/images/bus.jpg", imgsz=(IMGSZ, IMGSZ), nosave=True,
               project=tmp_path / "detect")
    _assert_all_f32(compiles)
    compiles.clear()
    data = tmp_path / "data"
    for sub in ("images", "labels"):
        (data / sub).mkdir(parents=True)
    shutil.copy(ROOT / "data/coco128/images/train2017/000000000009.jpg", data / "images")
    (data / "labels/000000000009.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (data / "d.yaml").write_text(f"path: {data}\ntrain: images\nval: images\nnames: [a, b]\n")
    val.run(data=data / "d.yaml", weights=str(folder), imgsz=IMGSZ, batch_size=1, workers=0, plots=False,
            project=tmp_path / "val")
    _assert_all_f32(compiles)

    compiles.clear()  # torch.hub
    import hubconf
    hubconf.custom(str(folder), device="cpu")
    _assert_all_f32(compiles)

    compiles.clear()  # compare's deployed latency and benchmarks/deploy_latency.py
    from utils.deploy.runners import OpenVINORunner
    runner = OpenVINORunner(folder, threads=1)
    assert runner(runner.prepare(torch.rand(1, 3, IMGSZ, IMGSZ))).shape[0] == 1
    _assert_all_f32(compiles)


def test_precision_names_whatever_the_cpu_reports():
    """A compiled model reports its precision as an element type (bf16 only on a CPU that has it); every form OpenVINO
    prints it in reads as the name the hint takes, so the bf16 branch is checked on a CPU without bf16 too."""
    for t, name in ((ov.Type.f32, "f32"), (ov.Type.bf16, "bf16"), (ov.Type.f16, "f16")):
        assert precision_name(t) == name
        assert precision_name(str(t)) == name  # "<Type: 'bfloat16'>"
        assert precision_name(name) == name
    assert precision_name("float32") == "f32" and precision_name("bfloat16") == "bf16"


def test_lower_precision_only_on_request(ov_export, compiles):
    """bf16 asked for: the marks are taken off the in-memory model and the hint says bf16 (the CPU plugin runs
    bf16 where the CPU has it, f32 elsewhere); the file keeps its pin. A precision OpenVINO lacks is refused."""
    folder = ov_export["openvino"]
    compiled = compile_openvino(folder, precision="bf16")
    model, config, _ = compiles[-1]
    assert config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert not any("DisablePrecisionConversion_0" in op.get_rt_info() for op in model.get_ops())
    assert compiled_precision(compiled) == ("bf16" if cpu_has_bf16() else "f32")
    assert is_pinned_f32(ov.Core().read_model(str(folder / "best.xml")))
    assert DetectBackend(folder, ov_precision="bf16").ov_precision == "bf16"
    with pytest.raises(UserError, match=r"OpenVINO precision 'fp8'; valid: f32, bf16, f16"):
        DetectBackend(folder, ov_precision="fp8")
    with pytest.raises(UserError, match=r"OpenVINO precision 'int4'"):
        openvino_config(precision="int4")
