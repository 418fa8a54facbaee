"""compare.py --augment: a TTA mAP per run, its section in the report and its results.csv columns."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import compare
from tests.test_train import _data_yaml
from utils.compare.report import results_rows, seed_rows
from utils.compare.results import ModelResult, SeedResult
from utils.compare.tables import tta_lines
from utils.paths import ROOT


def _model(name, maps, ttas):
    seeds = [SeedResult(i, 0.5, 0.5, 0.4, m, [m], 1.0, Path("."), map50_tta=0.45, map_tta=t)
             for i, (m, t) in enumerate(zip(maps, ttas))]
    return ModelResult(name, f"{name}.yaml", 100, 1.0, seeds)


def test_tta_section_and_columns():
    base = _model("yolov5n", [0.20, 0.22], [0.23, 0.24])
    bra = _model("yolov5n_biformer", [0.21, 0.22], [0.25, 0.26])
    lines = tta_lines([base, bra])
    assert lines[0] == "## Test-time augmentation"
    assert "| yolov5n | 0.210 | 0.235 | +0.025 | - |" in lines
    assert "| yolov5n_biformer | 0.215 | 0.255 | +0.040 | +0.020 |" in lines
    rows = {r["model"]: r for r in results_rows([base, bra])}
    assert rows["yolov5n_biformer"]["map_tta"] == pytest.approx(0.255)
    assert rows["yolov5n_biformer"]["paired_map_tta_delta"] == pytest.approx(0.02)
    assert [r["map_tta"] for r in seed_rows([bra])] == [0.25, 0.26]
    assert tta_lines([_model("a", [0.2], [None])]) == []  # no --augment: no section


def test_validate_tta_on_a_run_folder(tmp_path):
    run_dir = tmp_path / "yolov5n_seed0"
    (run_dir / "weights").mkdir(parents=True)
    shutil.copy(ROOT / "weights" / "yolov5n.pt", run_dir / "weights" / "best.pt")
    opt = compare.parse_opt(args=["--augment", "--data", str(_data_yaml(tmp_path, 4)), "--imgsz", "128",
                                  "--device", "cpu", "--workers", "0"])
    assert opt.augment
    import val

    plain = val.run(data=opt.data, weights=str(run_dir / "weights" / "best.pt"), imgsz=128, device="cpu",
                    workers=0, batch_size=opt.batch_size * 2, project=str(tmp_path), name="plain", plots=False,
                    augment=True)[0]
    tta = compare._validate_tta(opt, run_dir)
    assert tta == {"map50_tta": pytest.approx(plain[2]), "map_tta": pytest.approx(plain[3])}
    assert (run_dir / "val_tta" / "image_stats.npz").is_file()  # for the TTA bootstrap
    assert compare.parse_opt(args=["--aug"]).augment  # official YOLOv5's prefixes are accepted
