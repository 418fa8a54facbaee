"""compare.py --sweep: the variant YAMLs move the plug-in exactly (the layer arithmetic checked against the bundled
configs), build, start as the baseline does, carry the BRA settings, and the report lists every variant."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

import compare
from models.config import load_model_config
from models.yolo import Model
from utils.compare.sweep import _absolute, _insert_after, _relative, _remove, read_sweep, sweep_variants

ROOT = Path(compare.__file__).resolve().parent


def _rows(cfg) -> list:
    d = load_model_config(cfg)
    return d["backbone"] + d["head"]


def test_layer_arithmetic_reproduces_the_bundled_configs():
    """Taking BRA out of yolov5n_biformer gives yolov5n's rows; putting it back before the P4 and P5 C3s gives
    yolov5n_biformer's rows again, row for row (every `from` index included)."""
    rows = _absolute(_rows("yolov5n_biformer.yaml"))
    plugins = [i for i, r in enumerate(rows) if r[3] == "Residual"]
    assert plugins == [20, 24]
    base = _remove(_remove(rows, 24), 20)
    assert _relative(base) == _rows("yolov5n.yaml")
    row = rows[20][2:]
    back = _insert_after(_insert_after(base, 22, row), 19, row)  # P5's concat first, so 19 keeps its index
    assert _relative(back) == _rows("yolov5n_biformer.yaml")


def test_variants_build_start_as_the_baseline_and_carry_their_settings(tmp_path):
    variants = sweep_variants(["yolov5n.yaml", "yolov5n_biformer.yaml", "yolov5n_hilo.yaml"], tmp_path / "sweep")
    names = [v.name for v in variants]
    assert names == ["yolov5n", "yolov5n_biformer", "yolov5n_biformer-p3", "yolov5n_biformer-p4",
                     "yolov5n_biformer-p5", "yolov5n_biformer-topk2", "yolov5n_biformer-topk8",
                     "yolov5n_biformer-nwin5", "yolov5n_biformer-nwin8", "yolov5n_hilo", "yolov5n_hilo-p3",
                     "yolov5n_hilo-p4", "yolov5n_hilo-p5"]
    assert read_sweep(tmp_path) == variants
    assert variants[1].value == "P4+P5 (published)"
    x = torch.rand(1, 3, 96, 160)
    torch.manual_seed(0)
    ref = Model("yolov5n.yaml").eval()(x)[0]
    torch.manual_seed(0)
    n_base = sum(p.numel() for p in Model("yolov5n.yaml").parameters())
    for v in [v for v in variants if Path(v.cfg).parent == tmp_path / "sweep"]:
        torch.manual_seed(0)  # every shared layer draws the same weights; the plug-ins start at gamma = 0
        m = Model(v.cfg).eval()
        assert torch.equal(m(x)[0], ref), v.name
        gammas = [mod.gamma for mod in m.modules() if hasattr(mod, "gamma")]
        assert len(gammas) == (1 if v.varied == "placement" else 2), v.name
        if v.varied == "placement":  # one plug-in at the concat's width: 128, 128, 256 channels at n scale
            assert gammas[0].numel() == {"P3": 128, "P4": 128, "P5": 256}[v.value], v.name
            assert sum(p.numel() for p in m.parameters()) > n_base
        else:
            bras = [mod for mod in m.modules() if type(mod).__name__ == "BiLevelRoutingAttention"]
            assert len(bras) == 2 and all(getattr(b, v.varied) == int(v.value) for b in bras), v.name
    text = Path(variants[2].cfg).read_text()
    assert text.startswith("# yolov5n_biformer with its BiLevelRoutingAttention at P3 alone (compare.py --sweep)")
    assert "scale: n" in text


def test_sweep_from_the_command_line(tiny_data, tmp_path):
    """`python compare.py --cfgs yolov5n.yaml yolov5n_hilo.yaml --sweep ...`: every variant is trained and listed in
    the report's sweep section, grouped by what varied."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "compare.py"), "--cfgs", "yolov5n.yaml", "yolov5n_hilo.yaml",
                        "--sweep", "--data", str(tiny_data), "--epochs", "1", "--imgsz", "64", "--batch-size", "2",
                        "--seeds", "1", "--workers", "0", "--device", "cpu", "--project", str(tmp_path),
                        "--no-deploy-latency", "--bootstrap", "0"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    job = tmp_path / "exp"
    report = (job / "report.md").read_text()
    assert "## Where the attention goes (--sweep)" in report
    for name, value in (("yolov5n_hilo", "P4+P5 (published)"), ("yolov5n_hilo-p3", "P3"), ("yolov5n_hilo-p4", "P4"),
                        ("yolov5n_hilo-p5", "P5")):
        assert f"| {name} | placement | {value} | " in report, name
        assert (job / "sweep" / f"{name}.yaml").is_file() or name == "yolov5n_hilo"
    with open(job / "results_seeds.csv", newline="") as f:
        assert {row["model"]: row["status"] for row in csv.DictReader(f)} == {
            m: "ok" for m in ("yolov5n", "yolov5n_hilo", "yolov5n_hilo-p3", "yolov5n_hilo-p4", "yolov5n_hilo-p5")}
    assert "--sweep" in report.split("Command", 1)[-1] or "--sweep" in report
