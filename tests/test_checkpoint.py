"""Checkpoints are data: our format round-trips, official YOLOv5 pickles load safely, crafted pickles are refused."""

from __future__ import annotations

import io
import pickle
import zipfile

import pytest
import torch

from models import load_model, model_from_checkpoint, resolve_weights
from models.yolo import Model
from utils.checkpoint import (FORMAT, CheckpointError, UnsafeCheckpointError, load_checkpoint, names_list,
                              save_checkpoint)

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


def _bad_files(tmp_path):
    """(file, words its error must hold) for each way a weights file can be unusable."""
    good = resolve_weights("yolov5n.pt").read_bytes()
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("readme.txt", "not a checkpoint")
    files = {
        "other.zip.pt": (other.getvalue(), "a zip archive but not a PyTorch checkpoint"),
        "empty.pt": (b"", "empty file"),
        "random.pt": (bytes(range(7, 256)) * 16, "not a PyTorch checkpoint"),
        "text.pt": (b"version https://git-lfs.github.com/spec/v1\n", "not a PyTorch checkpoint"),
        "truncated.pt": (good[: len(good) // 2], "truncated or damaged zip archive"),
    }
    out = []
    for name, (data, words) in files.items():
        (tmp_path / name).write_bytes(data)
        out.append((tmp_path / name, words))
    return out


def test_unusable_files_get_one_line_naming_them(tmp_path):
    for path, words in _bad_files(tmp_path):
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: ") and words in msg and "\n" not in msg, msg
        assert not isinstance(e.value, UnsafeCheckpointError) and "arbitrary code" not in msg
    no_yaml = save_checkpoint({"model": {"w": torch.ones(1)}}, tmp_path / "noyaml.pt")
    with pytest.raises(CheckpointError, match=r"noyaml\.pt: no 'yaml' in this checkpoint"):
        load_model(no_yaml)


def test_refusal_names_the_global_and_cli_exits_2(tmp_path, capsys):
    import detect
    import val

    path = tmp_path / "evil.pt"
    torch.save({"model": _Exploit(tmp_path / "pwned"), "epoch": 0}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt: refused to load: its pickle refers to (posix|nt)\.sys"):
        load_checkpoint(path)
    bad = [path] + [p for p, _ in _bad_files(tmp_path)]
    for script in (detect, val):
        for weights in bad:
            with pytest.raises(SystemExit) as e:
                script.cli(["--weights", str(weights), "--project", str(tmp_path / "runs")])
            err = capsys.readouterr().err
            assert e.value.code == 2 and err.startswith(f"ERROR: {weights}: ") and "Traceback" not in err, err
    assert not (tmp_path / "pwned").exists()


def test_names_as_dict_are_ordered_by_key(tmp_path):
    model = Model("yolov5n.yaml", nc=3, verbose=False)
    names = {2: "c", 0: "a", 1: "b"}
    path = save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": names}, tmp_path / "d.pt")
    assert load_checkpoint(path)["names"] == ["a", "b", "c"]
    assert load_model(path).names == ["a", "b", "c"]
    assert model_from_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": names}).names == \
        ["a", "b", "c"]
    assert names_list({"10": "k", "9": "j"}) == ["j", "k"]
