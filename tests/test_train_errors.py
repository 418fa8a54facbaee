"""train.py refuses options that cannot make a run before any work, with one line naming the value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import train
from tests.conftest import ROOT
from tests.test_train import _opts
from utils.hyp import Hyp, load_hyp
from utils.training.run_files import Checkpoints


@pytest.mark.parametrize("kw, match", [
    (dict(epochs=0), r"--epochs 0: must be an integer >= 1"),
    (dict(epochs=-1), r"--epochs -1: must be an integer >= 1"),
    (dict(batch_size=0), r"--batch-size 0: must be an integer >= 1"),
    (dict(imgsz=100000), r"--imgsz 100000: at most 8192"),
    (dict(freeze=[100]), r"--freeze 100: .* valid N: 0\.\.24"),
    (dict(freeze=[3, 99]), r"--freeze 3 99: layer indices must be in 0\.\.23"),
    (dict(weights="x.pth", cfg="yolov5n.yaml"), r"--weights 'x\.pth': not found"),
])
def test_bad_options_fail_before_any_run_folder(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        train.run(**_opts(tmp_path, **kw))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_weights_that_are_not_a_checkpoint(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"is not a \.pt checkpoint"):
        train.run(**_opts(tmp_path, weights=str(f), cfg="yolov5n.yaml"))


def test_hyperparameters_out_of_range_are_named():
    with pytest.raises(ValueError) as e:
        Hyp.from_dict({"momentum": 1.5, "mosaic": 2, "fliplr": -1, "warmup_epochs": -3, "anchor_t": 0, "lr0": -0.01})
    for k in ("momentum=1.5", "mosaic=2.0", "fliplr=-1.0", "warmup_epochs=-3.0", "anchor_t=0.0", "lr0=-0.01"):
        assert k in str(e.value)
    for f in ("hyp.scratch-low.yaml", "hyp.scratch-med.yaml", "hyp.scratch-high.yaml"):
        load_hyp(f)  # the bundled files are all in range


def test_checkpoint_folder_is_checked_and_cleaned(tmp_path, monkeypatch):
    w = tmp_path / "weights"
    w.mkdir()
    (w / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    ck = Checkpoints(w, tmp_path / "results.csv")
    assert not list(w.glob("*.tmp"))  # an unfinished save of a killed run is removed
    ck.check_writable(1000)
    monkeypatch.setattr("shutil.disk_usage", lambda p: SimpleNamespace(total=100, used=90, free=10))
    with pytest.raises(OSError, match=r"MB free, checkpoints need about"):
        ck.check_writable(1000)


def test_command_line_user_error_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "train.py", "--epochs", "0", "--project", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == "ERROR: --epochs 0: must be an integer >= 1"
    assert not list(Path(tmp_path).iterdir())


def test_missing_weights_in_a_folder_never_fall_back_to_the_bundled_file(tmp_path):
    from models import resolve_weights

    assert resolve_weights("yolov5n.pt").is_file()  # a bare name finds the bundled file
    with pytest.raises(FileNotFoundError, match=r"weights '/no/such/dir/yolov5n\.pt' not found"):
        resolve_weights("/no/such/dir/yolov5n.pt")
    with pytest.raises(FileNotFoundError):
        train.run(**_opts(tmp_path, weights=str(tmp_path / "yolov5n.pt")))


def test_a_file_size_limit_during_a_checkpoint_write_is_one_line(tmp_path):
    """`ulimit -f` (RLIMIT_FSIZE) reached while last.pt is written: one `ERROR: checkpoint ... could not be
    written` line and exit status 2, no traceback (torch's writer raised a RuntimeError about a file position)."""
    import resource

    from tests.test_train import _data_yaml

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    cmd = [sys.executable, str(ROOT / "train.py"), "--data", str(_data_yaml(tmp_path, 4)), "--epochs", "1",
           "--imgsz", "64", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--project",
           str(tmp_path / "runs"), "--noplots", "--noautoanchor"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "ERROR: checkpoint " in r.stderr and "last.pt could not be written" in r.stderr
    assert "file size limit (ulimit -f)" in r.stderr


@pytest.mark.parametrize("flag, text", [
    ("--data", "path: !!python/object/apply:os.system ['touch {pwned}']\ntrain: a\nval: a\nnames: [x]\n"),
    ("--hyp", "lr0: !!python/object/apply:os.system ['touch {pwned}']\n"),
    ("--cfg", "nc: !!python/object/apply:os.system ['touch {pwned}']\nbackbone: []\nhead: []\n"),
    ("--cfg", "nc: 80\nbackbone: [[-1, 1, Conv, [64, 6, 2, 2]]\nhead: []\n"),  # broken YAML
])
def test_yaml_files_are_plain_data(flag, text, tmp_path):
    """A data, hyperparameter or model YAML with a Python tag is refused without running it, and any YAML that
    does not parse, as one `ERROR: FILE: not plain YAML (...)` line (exit 2)."""
    pwned = tmp_path / "pwned"
    f = tmp_path / "x.yaml"
    f.write_text(text.format(pwned=pwned))
    extra = ["--weights", ""] if flag == "--cfg" else []
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), flag, str(f), *extra, "--epochs", "1",
                        "--project", str(tmp_path / "runs"), "--device", "cpu"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0 and f"ERROR: {f}: not plain YAML (" in r.stderr, r.stderr
    assert not pwned.exists()
