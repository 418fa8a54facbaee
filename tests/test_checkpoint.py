"""Checkpoints are data: our format round-trips, official YOLOv5 pickles load safely, crafted pickles are refused."""

from __future__ import annotations

import pickle
import zipfile

import pytest
import torch

from models import load_model, model_from_checkpoint, resolve_weights
from models.yolo import Model
from utils.checkpoint import FORMAT, UnsafeCheckpointError, load_checkpoint, save_checkpoint

from .conftest import SHARED

OFFICIAL = SHARED / "weights" / "yolov5n.pt"


def test_round_trip(tmp_path):
    model = Model("yolov5n.yaml", nc=3, verbose=False)
    model.names = ["a", "b", "c"]
    path = save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": model.names, "epoch": 4},
                           tmp_path / "w.pt")
    raw = torch.load(path, weights_only=True)  # loads without executing anything
    assert raw["format"] == FORMAT and raw["epoch"] == 4
    loaded = load_model(path)
    assert loaded.names == ["a", "b", "c"] and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary behind
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_bundled_weights_resolve_and_run():
    path = resolve_weights("yolov5n.pt")
    assert path.parent.name == "weights"
    model = load_model("yolov5n.pt")
    assert len(model.names) == 80 and model.names[0] == "person"
    assert sum(p.numel() for p in model.parameters()) == 1_872_157
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        resolve_weights("nope.pt")


@pytest.mark.skipif(not OFFICIAL.is_file(), reason=f"official checkpoint not present at {OFFICIAL}")
def test_official_yolov5_checkpoint_loads_through_restricted_unpickler():
    ckpt = load_checkpoint(OFFICIAL)
    assert ckpt.legacy and len(ckpt["model"]) == 349 and ckpt["names"][:2] == ["person", "bicycle"]
    # every tensor equals the bundled conversion, bit for bit (fp16 as stored)
    bundled = load_checkpoint(resolve_weights("yolov5n.pt"))
    assert bundled["model"].keys() == ckpt["model"].keys()
    for k, v in ckpt["model"].items():
        assert v.dtype == bundled["model"][k].dtype and torch.equal(v, bundled["model"][k]), k
    a, b = model_from_checkpoint(ckpt).eval(), load_model("yolov5n.pt")
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        assert torch.equal(a(x)[0], b(x)[0])


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Exploit(marker), "epoch": 0}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        load_model(path)
    assert not marker.exists()
    # the same payload inside a file that also looks like an official YOLOv5 checkpoint
    assert zipfile.is_zipfile(path)


class Custom:  # pickled by reference to this test module, which the loader must not import
    pass


def test_unknown_class_in_legacy_pickle_is_named(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"model": Custom()}, path, pickle_protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="Custom"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises((pickle.UnpicklingError, RuntimeError, ValueError)):
        load_checkpoint(tmp_path / "junk.pt")
