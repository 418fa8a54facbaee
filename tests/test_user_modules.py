"""A user's own attention module in a file of their own (models/user_modules.py), through the command line as a user
types it: `--modules my_attention.py` on train.py, the checkpoint then loading in val.py, detect.py and export.py
with nothing more, a moved file named in one line and found again with --modules, a YAML that names its file,
and compare.py --modules with its runs in worker processes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from utils.checkpoint import load_checkpoint

MY_ATTENTION = textwrap.dedent('''
    import torch.nn as nn
    import torch.nn.functional as F

    from models.registry import inserts_dim, register


    @register("MyAttention", channels=inserts_dim)
    class MyAttention(nn.Module):
        def __init__(self, dim, num_heads=4):
            super().__init__()
            self.heads = num_heads
            self.qkv = nn.Conv2d(dim, 3 * dim, 1)
            self.proj = nn.Conv2d(dim, dim, 1)

        def forward(self, x):
            b, c, h, w = x.shape
            qkv = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2)
            y = F.scaled_dot_product_attention(*qkv.unbind(1))
            return self.proj(y.transpose(-1, -2).reshape(b, c, h, w))
''')
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _user_files(folder: Path, modules_in_yaml: bool = False) -> Path:
    """my_attention.py and yolov5n_my.yaml (BRA's rows with MyAttention) in `folder`; the YAML's path."""
    (folder / "my_attention.py").write_text(MY_ATTENTION)
    rows = (ROOT / "configs" / "yolov5_biformer.yaml").read_text()
    rows = rows.replace("[BiLevelRoutingAttention]", "[MyAttention, 4]")
    if modules_in_yaml:
        rows = "modules: [my_attention.py]\n" + rows
    (folder / "yolov5n_my.yaml").write_text(rows)
    return folder / "yolov5n_my.yaml"


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_train_with_modules_then_val_detect_export_without(tiny_data, tmp_path):
    _user_files(tmp_path)
    r = _run("train.py", "--modules", "my_attention.py", "--cfg", "yolov5n_my.yaml", "--weights", "yolov5n.pt",
             "--data", str(tiny_data), "--epochs", "1", "--img", "64", "--batch", "2", "--workers", "0",
             "--device", "cpu", "--project", str(tmp_path / "runs"), "--noplots", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    best = tmp_path / "runs" / "exp" / "weights" / "best.pt"
    ckpt = load_checkpoint(best)
    assert ckpt["yaml"]["modules"] == [str(tmp_path / "my_attention.py")]
    assert any(row[3] == ["MyAttention", 4] for row in ckpt["yaml"]["head"])
    assert "model.20 Residual(MyAttention)" in r.stdout + r.stderr or "MyAttention" in r.stdout + r.stderr

    elsewhere = tmp_path / "elsewhere"  # the checkpoint finds its file from any folder
    elsewhere.mkdir()
    r = _run("val.py", "--weights", str(best), "--data", str(tiny_data), "--img", "64", "--device", "cpu",
             "--project", str(tmp_path / "val"), cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    image = next((ROOT / "data" / "images").glob("*.jpg"))
    r = _run("detect.py", "--weights", str(best), "--source", str(image), "--img", "64", "--device", "cpu",
             "--project", str(tmp_path / "detect"), cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "detect" / "exp" / image.name).is_file()
    r = _run("export.py", "--weights", str(best), "--include", "onnx", "--img", "64", cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    assert best.with_suffix(".onnx").is_file()

    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "my_attention.py").rename(moved / "my_attention.py")
    r = _run("val.py", "--weights", str(best), "--data", str(tiny_data), "--img", "64", "--device", "cpu",
             "--project", str(tmp_path / "val"), cwd=elsewhere)
    assert r.returncode == 2, r.stderr[-3000:]
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("ERROR: ") and f"module file '{tmp_path / 'my_attention.py'}' not found" in err[-1]
    assert "--modules" in err[-1] and "Traceback" not in r.stderr
    r = _run("val.py", "--weights", str(best), "--data", str(tiny_data), "--img", "64", "--device", "cpu",
             "--project", str(tmp_path / "val"), "--modules", str(moved / "my_attention.py"), cwd=elsewhere)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "is gone; its blocks are registered already" in r.stdout + r.stderr
    # export.run from Python takes modules= as the scripts' run() do
    code = (f"import export; f = export.run(weights={str(best)!r}, include='onnx', imgsz=64, check=False, "
            f"modules=[{str(moved / 'my_attention.py')!r}]); print('written', f['onnx'])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "written" in r.stdout, r.stderr[-3000:]


def test_a_yaml_names_its_own_file_and_the_gflops_count_the_attention(tmp_path):
    """`modules: [my_attention.py]` in the YAML (relative to the YAML's folder) is all a fresh process needs; the
    summary's GFLOPs include the attention's (scaled_dot_product_attention counted)."""
    cfg = _user_files(tmp_path, modules_in_yaml=True)
    code = textwrap.dedent(f"""
        from models.yolo import Model
        from utils.flops import gflops
        m = Model({str(cfg)!r}, verbose=False)
        b = Model('yolov5n_biformer.yaml', verbose=False)
        base = Model('yolov5n.yaml', verbose=False)
        print(m.yaml['modules'], round(gflops(m, 640), 3), round(gflops(base, 640), 3))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    files, g_my, g_base = r.stdout.strip().splitlines()[-1].rsplit(" ", 2)
    assert files == str([str(tmp_path / "my_attention.py")])
    # the two plug-ins' 1x1 convolutions and attention at 640: P4 (128 ch, 40x40) and P5 (256 ch, 20x20)
    convs = sum(2 * (4 * c * c) * n for c, n in ((128, 1600), (256, 400)))
    attention = sum(2 * 2 * n * n * c for c, n in ((128, 1600), (256, 400)))
    assert float(g_my) == pytest.approx(float(g_base) + (convs + attention) / 1e9, abs=2e-3)


@pytest.mark.parametrize("text, message", [
    ("import nosuchpackage\n", "importing {f} failed: ModuleNotFoundError: No module named 'nosuchpackage'"),
    ("x = (\n", "importing {f} failed: SyntaxError"),
])
def test_a_file_that_fails_to_import_is_one_line(text, message, tmp_path):
    f = tmp_path / "bad.py"
    f.write_text(text)
    r = _run("detect.py", "--modules", str(f), "--source", str(ROOT / "data" / "images"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert message.format(f=f) in r.stderr.strip().splitlines()[-1]
    r = _run("val.py", "--modules", str(tmp_path / "notes.txt"), cwd=tmp_path)
    assert r.returncode == 2 and "is not a Python file (.py)" in r.stderr.strip().splitlines()[-1]


def test_compare_with_modules_and_workers(tiny_data, tmp_path):
    """compare.py --modules: the driver and each run's worker process (--jobs 2) import the file; the plug-in
    model is trained and reported beside the baseline, and the job's command repeats --modules."""
    _user_files(tmp_path)
    r = _run("compare.py", "--cfgs", "yolov5n.yaml", "yolov5n_my.yaml", "--modules", "my_attention.py", "--data",
             str(tiny_data), "--epochs", "1", "--imgsz", "64", "--batch-size", "2", "--seeds", "1", "--workers",
             "0", "--device", "cpu", "--project", str(tmp_path / "runs"), "--no-deploy-latency", "--bootstrap",
             "0", "--jobs", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    job = tmp_path / "runs" / "exp"
    with open(job / "results_seeds.csv", newline="") as f:
        rows = {row["model"]: row for row in csv.DictReader(f)}
    assert rows["yolov5n_my"]["status"] == "ok" and rows["yolov5n_my"]["plugin_share"] != "", rows
    assert f"--modules {tmp_path / 'my_attention.py'}" in (job / "report.md").read_text()
