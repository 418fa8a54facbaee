"""Exported models as val.py / detect.py weights (models.backends.DetectBackend): yolov5n.pt exported once at 256
to TorchScript, ONNX and OpenVINO (--dynamic) scores the .pt's mAP50-95 on half of COCO128 (64 images, in 4
rectangular batches of different shapes), detects the .pt's boxes, and carries its names and stride; an export of
fixed size and batch runs at its own size and batch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import detect
import export
import val
from models.backends import DetectBackend, DetectMultiBackend
from utils.errors import UserError

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parent.parent
IMGSZ = 256
FIXED_BATCH = 2
MAP_TOL = {"torchscript": 0.001, "onnx": 0.001, "openvino": 0.002}
STEMS = ["000000000009", "000000000025", "000000000030", "000000000034", "000000000036"]
N_VAL = 64  # COCO128 images the mAP comparison runs on: all 128 take twice the time for no more coverage


def _export(folder: Path, **kw) -> dict:
    """yolov5n.pt copied into `folder` (so the files land there) and exported: {format: path} plus 'pt'."""
    pt = folder / "yolov5n.pt"
    shutil.copy(ROOT / "weights" / "yolov5n.pt", pt)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        files = export.run(weights=str(pt), imgsz=(IMGSZ, IMGSZ), device="cpu", check=False, **kw)
    finally:
        torch.set_num_threads(n)
    return {"pt": pt, **files}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """Dynamic exports (batch, height and width free) to all three formats."""
    return _export(tmp_path_factory.mktemp("dynamic"), include=("torchscript", "onnx", "openvino"), dynamic=True)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory) -> Path:
    """An ONNX export fixed at 256x256 and batch 2."""
    return _export(tmp_path_factory.mktemp("fixed"), include=("onnx",), batch_size=FIXED_BATCH)["onnx"]


def _subset(root: Path, stems: list[str]) -> Path:
    """A data YAML over these COCO128 images (copied, so the label cache is written in a temporary folder)."""
    for sub in ("images", "labels"):
        (root / sub).mkdir()
    src = ROOT / "data/coco128"
    for s in stems:
        shutil.copy(src / "images/train2017" / f"{s}.jpg", root / "images")
        if (src / "labels/train2017" / f"{s}.txt").is_file():
            shutil.copy(src / "labels/train2017" / f"{s}.txt", root / "labels")
    names = (ROOT / "data/coco128.yaml").read_text().split("names:", 1)[1]
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnc: 80\nnames:{names}")
    return root / "data.yaml"


@pytest.fixture(scope="module")
def coco64(tmp_path_factory) -> Path:
    stems = sorted(p.stem for p in (ROOT / "data/coco128/images/train2017").glob("*.jpg"))[:N_VAL]
    return _subset(tmp_path_factory.mktemp("coco64"), stems)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return _subset(tmp_path_factory.mktemp("tiny"), STEMS)


@pytest.fixture(scope="module")
def pt_results(exports, coco64, tmp_path_factory) -> tuple:
    """val.run of the .pt on 64 COCO128 images at 256: the reference every export is held to."""
    return _val(exports["pt"], tmp_path_factory.mktemp("val_pt"), data=coco64)


def _val(weights, project: Path, data: Path, **kw) -> tuple:
    (mp, mr, map50, map_, *losses), maps, _ = val.run(
        data=data, weights=str(weights), workers=0, device="cpu", project=project, plots=False,
        **{"imgsz": IMGSZ, "batch_size": 16, **kw})
    return mp, mr, map50, map_, losses


def _detect(weights, project: Path, **kw):
    return detect.run(weights=str(weights), source=ROOT / "data/images", imgsz=kw.pop("imgsz", (IMGSZ, IMGSZ)),
                      device="cpu", nosave=True, project=project, **kw)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "openvino"])
def test_val_map_equals_pt(fmt, exports, coco64, pt_results, tmp_path, log):
    """A dynamic export is validated on the .pt's rectangular batches: the same mAP50-95 (and mAP50), no loss."""
    mp, mr, map50, map_, losses = pt_results
    assert 0.3 < map50 < 0.7 and 0.18 < map_ < 0.45, pt_results  # a real operating point of yolov5n at 256
    got = _val(exports[fmt], tmp_path, data=coco64)
    assert got[3] == pytest.approx(map_, abs=MAP_TOL[fmt]), (fmt, got[3], map_)
    assert got[2] == pytest.approx(map50, abs=MAP_TOL[fmt]), (fmt, got[2], map50)
    assert got[4] == [0.0, 0.0, 0.0]
    assert not any("exported for" in m for m in log)  # a dynamic export takes --imgsz as it is


def test_detect_boxes_equal_pt(exports, tmp_path):
    """detect.py on the bundled photos: the ONNX and OpenVINO exports find the .pt's boxes (1 px, same classes)."""
    _, ref = _detect(exports["pt"], tmp_path / "pt")
    assert sum(len(r.boxes) for r in ref) >= 10
    for fmt in ("onnx", "openvino"):
        _, got = _detect(exports[fmt], tmp_path / fmt)
        assert [r.path for r in got] == [r.path for r in ref]
        for a, b in zip(got, ref):
            assert a.boxes.shape == b.boxes.shape, (fmt, a.path)
            np.testing.assert_array_equal(a.boxes[:, 5], b.boxes[:, 5])
            np.testing.assert_allclose(a.boxes[:, :4], b.boxes[:, :4], atol=1.0)
            np.testing.assert_allclose(a.boxes[:, 4], b.boxes[:, 4], atol=2e-3)


def test_metadata_and_outputs(exports, fixed):
    """Names and stride read back from each format; each gives (decoded, None), the .pt's decoded tensor."""
    pt = DetectBackend(exports["pt"])
    assert pt.pt and pt.fmt == "pt" and pt.model is not None and pt.fixed_shape is None
    x = torch.rand(3, 3, 128, 192, generator=torch.Generator().manual_seed(0))  # not the export's size or batch
    with torch.no_grad():
        ref = pt(x)[0]
    for fmt in ("torchscript", "onnx", "openvino"):
        m = DetectMultiBackend(exports[fmt], "cpu")
        assert (m.fmt, m.pt, m.model, m.stride) == (fmt, False, None, 32)
        assert m.names == pt.names and len(m.names) == 80 and m.names[0] == "person" and m.nc == 80
        assert m.fixed_shape is None and m.fixed_batch is None
        with torch.no_grad():
            y, raw = m(x)
        assert raw is None and y.shape == ref.shape and y.dtype == torch.float32
        assert (y - ref).abs().max() <= 1e-3 * ref.abs().max(), fmt
    xml = next(exports["openvino"].glob("*.xml"))
    assert DetectBackend(xml).names == pt.names  # the .xml itself names the model too

    m = DetectBackend(fixed)
    assert (m.fixed_shape, m.fixed_batch, m.stride, m.names) == ((IMGSZ, IMGSZ), FIXED_BATCH, 32, pt.names)
    x = torch.rand(3, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))  # batch 3: chunks of 2
    with torch.no_grad():
        y, ref = m(x)[0], pt(x)[0]
    assert y.shape == ref.shape and (y - ref).abs().max() <= 1e-3 * ref.abs().max()
    with pytest.raises(UserError, match=r"exported for 256x256 images \(h x w\), got 320x256"):
        m(torch.zeros(FIXED_BATCH, 3, 320, IMGSZ))


def test_fixed_export_runs_at_its_own_size(fixed, exports, tiny_data, tmp_path, log):
    """--imgsz 320 with an export fixed at 256 and batch 2: a warning naming both, then 256 (square letterbox)
    and batch 2, in detect.py and val.py; val's mAP is the .pt's on the same square batches."""
    _, dets = _detect(fixed, tmp_path / "detect", imgsz=[320])
    assert len(dets) == 5
    assert any("--imgsz 320 320 differs from the 256x256" in m for m in log)
    lines = [m for m in log if m.startswith("image ")]
    assert len(lines) == 5 and all(" 256x256 " in m for m in lines), lines

    log.clear()
    got = _val(fixed, tmp_path / "val", data=tiny_data, imgsz=320, batch_size=4)
    assert any("--imgsz 320 differs from the 256x256" in m for m in log)
    assert any("--batch-size 4 differs from the batch 2" in m for m in log)
    assert any(f"at shape ({FIXED_BATCH}, 3, {IMGSZ}, {IMGSZ})" in m for m in log)
    # the .pt on square letterboxed batches (what task='speed' builds), same thresholds
    want = _val(exports["pt"], tmp_path / "val_pt", data=tiny_data, task="speed")
    assert want[2] > 0.2 and got[3] == pytest.approx(want[3], abs=0.001) and got[2] == pytest.approx(want[2],
                                                                                                   abs=0.001)


def test_bad_weights_are_named(exports, tmp_path, capsys):
    with pytest.raises(UserError, match=r"model\.h5.*unknown model format '\.h5'; valid: \.pt, \.torchscript"):
        DetectBackend(tmp_path / "model.h5")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        DetectBackend(tmp_path / "nope.onnx")
    with pytest.raises(FileNotFoundError, match="nope_openvino_model"):
        DetectBackend(tmp_path / "nope_openvino_model")
    empty = tmp_path / "empty_openvino_model"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no OpenVINO .xml"):
        DetectBackend(empty)
    with pytest.raises(UserError, match="--visualize-routing needs the PyTorch checkpoint"):
        detect.run(weights=str(exports["onnx"]), visualize_routing=True, project=tmp_path)
    for script in (val, detect):
        with pytest.raises(SystemExit) as e:
            script.cli(["--weights", str(tmp_path / "model.h5"), "--project", str(tmp_path)])
        assert e.value.code == 2 and "unknown model format '.h5'" in capsys.readouterr().err


def test_hostile_or_wrong_metadata_is_refused_or_padded(exports, tmp_path, log):
    """Metadata is data, never code, and must fit the model: an OpenVINO .yaml with stride 0, a list or a
    !!python tag, names for more classes than the output has, or a TorchScript config.txt that is not JSON are
    refused with the file named; fewer names than classes are padded with a warning, and detect.py draws every
    class (it raised IndexError on class 2 of a model whose metadata named 2)."""
    import onnx

    def ov_copy(name: str, text: str) -> Path:
        d = tmp_path / f"{name}_openvino_model"
        shutil.copytree(exports["openvino"], d)
        next(d.glob("*.yaml")).write_text(text)
        return d

    cases = [("stride: 0\n", r"stride=0; valid: one of \[8, 16, 32, 64, 128\]"),
             ("stride: [32]\n", r"stride=\[32\]"),
             ("stride: !!python/object/apply:os.system ['touch pwned']\n", r"is not plain YAML"),
             ("stride: 32\nnames: {0: a, 1: b}\nextra: [\n", r"is not plain YAML"),
             ("stride: 32\nnames: person\n", r"names='person'; valid: a list"),
             (f"stride: 32\nnames: {list(range(81))}\n", r"names 81 classes but the model outputs 80")]
    for i, (text, match) in enumerate(cases):
        with pytest.raises(UserError, match=match):
            DetectBackend(ov_copy(f"bad{i}", text))
    assert not (tmp_path / "pwned").exists()

    m = onnx.load(str(exports["onnx"]))
    for p in m.metadata_props:
        if p.key == "names":
            p.value = str({0: "person", 1: "bicycle"})
    few = tmp_path / "few.onnx"
    onnx.save(m, str(few))
    log.clear()
    b = DetectBackend(few)
    assert b.nc == 80 and b.names[:3] == ["person", "bicycle", "class2"] and b.names[-1] == "class79"
    assert any("metadata names 2 classes but the model outputs 80" in x for x in log)
    _, dets = _detect(few, tmp_path / "detect", conf_thres=0.1)
    assert any(int(c) >= 2 for r in dets for c in r.boxes[:, 5])  # a class beyond the named ones was drawn

    ts = torch.jit.load(str(exports["torchscript"]))
    bad_ts = tmp_path / "bad.torchscript"
    ts.save(str(bad_ts), _extra_files={"config.txt": "{stride: 32"})
    with pytest.raises(UserError, match=r"bad\.torchscript: its metadata config\.txt is not JSON"):
        DetectBackend(bad_ts)
