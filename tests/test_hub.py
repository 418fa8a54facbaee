"""torch.hub: the local checkout loads as YOLOv5's does, and its one-call model finds what detect.py finds."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import detect
from utils.checkpoint import save_checkpoint
from utils.errors import UserError
from utils.hub import AutoShape, Detections

from .conftest import ROOT, LogCapture

BUS = ROOT / "data" / "images" / "bus.jpg"
SIZE = 320  # every comparison runs both sides at this size and detect.py's default thresholds


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    """torch.hub.load of the checkout's `custom` entry on a copy of the bundled yolov5n.pt."""
    w = tmp_path_factory.mktemp("w") / "best.pt"
    shutil.copy(ROOT / "weights" / "yolov5n.pt", w)
    torch.set_num_threads(1)
    return torch.hub.load(str(ROOT), "custom", path=str(w), source="local", _verbose=False), w


def detect_boxes(weights, tmp_path, source=BUS, augment: bool = False) -> np.ndarray:
    _, records = detect.run(weights=weights, source=source, imgsz=SIZE, nosave=True, project=tmp_path,
                            augment=augment)
    return records[0].boxes


def same_boxes(hub: torch.Tensor, ref: np.ndarray) -> None:
    """Same detections in the same order: classes equal, coordinates within 1 px (detect.py rounds them)."""
    hub = hub.cpu().numpy()
    assert hub.shape == ref.shape and len(ref) >= 3
    assert np.array_equal(hub[:, 5], ref[:, 5])
    assert np.abs(hub[:, :4] - ref[:, :4]).max() <= 1.0
    assert np.abs(hub[:, 4] - ref[:, 4]).max() < 1e-3


def test_custom_entry_finds_what_detect_finds(custom, tmp_path):
    model, w = custom
    assert isinstance(model, AutoShape) and model.names[0] == "person"
    results = model(str(BUS), size=SIZE)
    assert isinstance(results, Detections) and len(results) == 1 and results.names == model.names
    same_boxes(results.xyxy[0], detect_boxes(w, tmp_path))
    assert results.files == ["bus.jpg"] and results.s == (1, 3, 320, 256)


# Official YOLOv5's AutoShape (yolov5==7.0.14 wheel, models.common.AutoShape over the official yolov5n.pt, fused,
# CPU fp32) on [bus.jpg, zidane.jpg] at size=640 (batch letterboxed to 640x640): results.xyxy, rounded to 3 places.
OFFICIAL_XYXY = [
    [[50.315, 398.765, 206.328, 898.256, 0.814, 0], [220.096, 407.556, 348.707, 864.409, 0.791, 0],
     [680.353, 379.046, 810.0, 872.605, 0.608, 0], [50.842, 234.593, 810.0, 780.7, 0.508, 5]],
    [[738.997, 40.774, 1154.834, 717.532, 0.787, 0], [147.605, 187.055, 724.297, 719.773, 0.495, 0],
     [437.591, 434.749, 502.898, 711.13, 0.292, 27]],
]


def test_a_batch_matches_official_autoshape(custom):
    results = custom[0]([BUS, ROOT / "data" / "images" / "zidane.jpg"], size=640)
    assert results.s == (2, 3, 640, 640)
    for ours, official in zip(results.xyxy, OFFICIAL_XYXY):
        assert torch.allclose(ours, torch.tensor(official), atol=2e-3)


def test_named_plugin_entry_starts_from_the_bundled_weights(custom, tmp_path):
    with LogCapture() as log:
        model = torch.hub.load(str(ROOT), "yolov5n_biformer", source="local")
    assert "Transferred 349/349" in log.text and "random" not in log.text
    assert model.model.yaml["yaml_file"] == "yolov5n_biformer.yaml" and model.names[0] == "person"
    results = model(BUS, size=SIZE)
    # the same model (each layer's initial weights come from a seed of its own) as a checkpoint through detect.py
    net = torch.hub.load(str(ROOT), "yolov5n_biformer", source="local", autoshape=False, _verbose=False)
    w = save_checkpoint({"model": net.state_dict(), "yaml": net.yaml, "names": net.names}, tmp_path / "bra.pt")
    same_boxes(results.xyxy[0], detect_boxes(w, tmp_path))
    # its plug-ins start as the identity, so it finds what yolov5n finds
    plain = custom[0](BUS, size=SIZE)
    assert torch.allclose(results.xyxy[0], plain.xyxy[0], atol=1e-3)


def test_missing_weights_build_random_with_a_warning():
    with LogCapture() as log:
        model = torch.hub.load(str(ROOT), "yolov5s_hilo", source="local", autoshape=False, _verbose=False,
                               classes=3)
    assert "no bundled weights yolov5s.pt" in log.text and "random" in log.text
    assert model.yaml["nc"] == 3 and not isinstance(model, AutoShape)


def test_entries_are_yolov5s_and_one_per_config_and_scale():
    import hubconf

    entries = {k for k in dir(hubconf) if not k.startswith("_") and callable(getattr(hubconf, k))}
    plugins = ("", "_biformer", "_control", "_hilo", "_slide", "_transformer", "_se", "_eca", "_cbam", "_coordatt")
    assert entries == {"custom"} | {f"yolov5{s}{p}" for s in "nsmlx" for p in plugins}


def test_inputs_lists_and_accessors(custom, tmp_path):
    model, _ = custom
    bgr = cv2.imread(str(BUS))
    pil = Image.open(BUS)
    results = model([str(BUS), pil, bgr[..., ::-1], np.zeros((100, 60, 3), np.uint8)], size=SIZE)
    assert len(results) == 4 and len(results.xyxy) == 4 and results.s[0] == 4
    assert results.files == ["bus.jpg", "bus_1.jpg", "image2.jpg", "image3.jpg"]
    assert len(results.xyxy[3]) == 0  # a black image
    ref = results.xyxy[0]
    for boxes in results.xyxy[1:3]:  # the same picture as a path, a PIL image and an RGB array
        assert torch.allclose(boxes, ref, atol=1e-3)
    h, w = bgr.shape[:2]
    for i in range(4):
        xyxy, xywh, xyxyn, xywhn = results.xyxy[i], results.xywh[i], results.xyxyn[i], results.xywhn[i]
        scale = torch.tensor([w, h, w, h]) if i < 3 else torch.tensor([60, 100, 60, 100])
        assert torch.allclose(xyxyn[:, :4] * scale, xyxy[:, :4], atol=1e-3)
        assert torch.allclose(xywhn[:, :4] * scale, xywh[:, :4], atol=1e-3)
        assert torch.allclose(xywh[:, 2], xyxy[:, 2] - xyxy[:, 0]) and torch.equal(xywh[:, 4:], xyxy[:, 4:])
    persons, buses = (int((ref[:, 5] == c).sum()) for c in (0, 5))
    assert (persons, buses) == (3, 1)
    text = str(results)
    assert "image 1/4: 1080x810 3 persons, 1 bus\n" in text and "image 4/4: 100x60 (no detections)\n" in text
    assert text.endswith("NMS per image at shape (4, 3, 320, 256)")


def test_save_crop_render(custom, tmp_path):
    model, _ = custom
    results = model([BUS, np.zeros((64, 64, 3), np.uint8)], size=SIZE)
    save_dir = results.save(save_dir=tmp_path / "exp")
    assert save_dir == tmp_path / "exp" and sorted(p.name for p in save_dir.iterdir()) == ["bus.jpg", "image1.jpg"]
    assert cv2.imread(str(save_dir / "bus.jpg")).shape == (1080, 810, 3)
    assert results.save(save_dir=tmp_path / "exp") == tmp_path / "exp2"
    crops = results.crop(save_dir=tmp_path / "crops")
    assert len(crops) == len(results.xyxy[0]) and all(c["im"].ndim == 3 for c in crops)
    persons = int((results.xyxy[0][:, 5] == 0).sum())
    assert len(list((tmp_path / "crops" / "crops" / "person").glob("*.jpg"))) == persons
    before = results.ims[0].copy()
    drawn = results.render()
    assert drawn[0].shape == before.shape and not np.array_equal(drawn[0], before)
    df = results.pandas().xyxy[0]  # pandas is a requirement, as in YOLOv5
    assert list(df.columns) == ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
    np.testing.assert_allclose(df.iloc[:, :6].to_numpy(float), results.xyxy[0].numpy(), rtol=1e-6)
    assert list(df["name"]) == [results.names[int(c)] for c in results.xyxy[0][:, 5]]
    assert list(results.pandas().xywhn[0].columns)[:4] == ["xcenter", "ycenter", "width", "height"]


def test_bad_inputs_are_named(custom, tmp_path):
    model, _ = custom
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        model(str(tmp_path / "nope.jpg"))
    with pytest.raises(UserError, match="cannot download image 'http://127.0.0.1:9/bus.jpg'.*offline"):
        model("http://127.0.0.1:9/bus.jpg")
    with pytest.raises(UserError, match="image 1 is a dict"):
        model([BUS, {}])
    with pytest.raises(UserError, match=r"shape \(4, 5, 2\)"):
        model(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(UserError, match="uint8 or float.*int32"):
        model(np.zeros((4, 5, 3), np.int32))
    x = torch.zeros(1, 3, 64, 64)
    assert model(x)[0].shape == (1, 252, 85)  # a tensor goes to the model as it is, as in YOLOv5


def test_augment_is_yolov5_tta_as_detect_runs_it(custom, tmp_path):
    """augment=True: the same detections as detect.py --augment (models.tta), for yolov5n and a plug-in model."""
    model, w = custom
    tta = model(BUS, size=SIZE, augment=True)
    assert tta.s == (1, 3, 320, 256)
    same_boxes(tta.xyxy[0], detect_boxes(w, tmp_path, augment=True))
    plain = model(BUS, size=SIZE).xyxy[0]
    assert tta.xyxy[0].shape != plain.shape or not torch.allclose(tta.xyxy[0], plain, atol=1e-3)  # TTA did run
    # a tensor in returns the raw output of the augmented passes: more predictions than one pass has
    x = torch.zeros(1, 3, 64, 64)
    assert model(x, augment=True)[0].shape[1] > model(x)[0].shape[1]

    net = torch.hub.load(str(ROOT), "yolov5n_biformer", source="local", autoshape=False, _verbose=False)
    w = save_checkpoint({"model": net.state_dict(), "yaml": net.yaml, "names": net.names}, tmp_path / "bra.pt")
    bra = AutoShape(net.fuse(), verbose=False)
    same_boxes(bra(BUS, size=SIZE, augment=True).xyxy[0], detect_boxes(w, tmp_path, augment=True))


@pytest.fixture(scope="module")
def exports(custom, tmp_path_factory):
    """Exports of the copied yolov5n.pt at 320: ONNX and TorchScript with --dynamic, and an ONNX of fixed size."""
    import export

    _, w = custom
    d = tmp_path_factory.mktemp("exports")
    dynamic = export.run(weights=shutil.copy(w, d / "dyn.pt"), imgsz=SIZE, include=("torchscript", "onnx"),
                         dynamic=True, check=False)
    fixed = export.run(weights=shutil.copy(w, d / "fixed.pt"), imgsz=SIZE, include=("onnx",), check=False)
    return dynamic, fixed["onnx"]


def test_custom_loads_exports_through_detect_backend(custom, exports):
    from models.backends import DetectBackend

    model, _ = custom
    dynamic, _ = exports
    ref = model(BUS, size=SIZE)
    ref_tta = model(BUS, size=SIZE, augment=True)
    for fmt, f in dynamic.items():
        hub = torch.hub.load(str(ROOT), "custom", path=str(f), source="local", _verbose=False)
        assert isinstance(hub, AutoShape) and isinstance(hub.model, DetectBackend) and hub.model.fmt == fmt
        assert hub.names == model.names and hub.stride == 32
        results = hub(BUS, size=SIZE)
        assert results.s == ref.s == (1, 3, 320, 256)  # a dynamic export letterboxes as the .pt does
        same_boxes(results.xyxy[0], ref.xyxy[0].numpy())
        same_boxes(hub(BUS, size=SIZE, augment=True).xyxy[0], ref_tta.xyxy[0].numpy())
    raw = torch.hub.load(str(ROOT), "custom", path=str(dynamic["onnx"]), source="local", autoshape=False,
                         _verbose=False)
    assert isinstance(raw, DetectBackend) and raw(torch.zeros(1, 3, 64, 64))[0].shape == (1, 252, 85)


def test_fixed_size_export_runs_at_its_size(exports, tmp_path):
    _, fixed = exports
    hub = torch.hub.load(str(ROOT), "custom", path=str(fixed), source="local", _verbose=False)
    assert hub.fixed_shape == (320, 320)
    with LogCapture() as log:
        results = hub([BUS, ROOT / "data" / "images" / "zidane.jpg"], size=640)
        hub(BUS, size=640)  # warned once per size
    assert log.text.count("size 640 differs from the 320x320 (h x w)") == 1
    assert results.s == (2, 3, 320, 320)  # both images letterboxed to the export's size, run one by one
    same_boxes(results.xyxy[0], detect_boxes(fixed, tmp_path))  # detect.py letterboxes the same way
    with LogCapture() as log:
        hub(BUS, size=SIZE)
    assert "differs" not in log.text
    with pytest.raises(UserError, match="augment=True.*exported for 320x320 images only.*--dynamic"):
        hub(BUS, size=SIZE, augment=True)


def test_custom_names_the_valid_formats(tmp_path):
    with pytest.raises(UserError, match=r"path='best\.h5'.*\.pt.*\.torchscript.*\.onnx.*_openvino_model"):
        torch.hub.load(str(ROOT), "custom", path="best.h5", source="local", _verbose=False)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        torch.hub.load(str(ROOT), "custom", path=str(tmp_path / "nope.onnx"), source="local", _verbose=False)
