"""compare.py end to end at tiny settings, and its report, latency and memory pieces on hand-made inputs."""

from __future__ import annotations

import csv
import logging
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

import compare
from models.yolo import Model
from utils.compare_report import ModelResult, SeedResult, results_rows, table_lines
from utils.flops import gflops
from utils.latency import LatencyStat, MemoryStat, measure_latency, peak_train_memory

CFGS = ["yolov5n.yaml", "yolov5n_biformer.yaml"]
IMGSZ = 64


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, coco128_dir=Path(__file__).resolve().parent.parent / "data" / "coco128"):
    """A data YAML whose train and val splits are the same 4 COCO128 images."""
    d = tmp_path_factory.mktemp("tiny")
    images = sorted((coco128_dir / "images" / "train2017").glob("*.jpg"))[:4]
    (d / "list.txt").write_text("\n".join(str(p) for p in images) + "\n")
    names = yaml.safe_load((coco128_dir.parent / "coco128.yaml").read_text())["names"]
    (d / "tiny.yaml").write_text(yaml.safe_dump(dict(path=str(d), train="list.txt", val="list.txt", names=names)))
    return d / "tiny.yaml"


def test_compare_job_end_to_end(tiny_data, tmp_path_factory, tmp_path):
    """One tiny compare run (one test, so that pytest-xdist runs it once), then every check on its output."""
    project = tmp_path_factory.mktemp("compare")
    save_dir, models = compare.run(cfgs=CFGS, data=str(tiny_data), epochs=1, imgsz=IMGSZ, batch_size=2, seeds=1,
                                   workers=0, device="cpu", project=str(project), name="exp",
                                   visualize_routing=True)
    job = save_dir, models, tiny_data
    _check_every_report_file_is_written(job)
    _check_params_and_gflops_equal_the_model_summary(job)
    _check_map_equals_val_on_the_saved_weights(job, tmp_path)
    _check_report_states_command_versions_and_timings(job)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_every_report_file_is_written(job):
    save_dir, models, _ = job
    assert save_dir.name == "exp"
    for name in ("report.md", "results.csv", "results_seeds.csv", "map_vs_gflops.png", "latency.png",
                 "class_ap_diff.png", "training_curves.png"):
        assert (save_dir / name).is_file(), name
    for png in save_dir.glob("*.png"):
        im = cv2.imread(str(png))
        assert im is not None and im.shape[0] > 200 and im.std() > 5, png  # a real, non-blank picture
    routing = sorted(p.name for p in (save_dir / "routing" / "yolov5n_biformer").glob("*.png"))
    assert routing == [f"{p}_layer{i}.png" for p in ("astronaut", "bus", "zidane") for i in (20, 24)]
    assert not (save_dir / "routing" / "yolov5n").exists()  # no BRA, no routing figure
    for m in CFGS:
        run = save_dir / f"{Path(m).stem}_seed0"
        assert (run / "weights" / "best.pt").is_file() and (run / "results.csv").is_file()
        assert (run / "train.log").stat().st_size > 0


def _check_params_and_gflops_equal_the_model_summary(job):
    rows = {r["model"]: r for r in _csv(job[0] / "results.csv")}
    for cfg in CFGS:
        model = Model(cfg, nc=80, verbose=False)
        n_params = sum(p.numel() for p in model.parameters())
        summary = model.info(imgsz=IMGSZ)  # "... N layers, 1,872,157 parameters, ..., 0.0 GFLOPs at 64"
        row = rows[Path(cfg).stem]
        assert int(row["params"]) == n_params == int(re.search(r"([\d,]+) parameters", summary)[1].replace(",", ""))
        assert float(row["gflops"]) == pytest.approx(gflops(model, IMGSZ), abs=1e-4)
        assert f"{float(row['gflops']):.1f} GFLOPs at {IMGSZ}" in summary


def _check_map_equals_val_on_the_saved_weights(job, tmp_path):
    import val

    save_dir, models, data = job
    rows = {r["model"]: r for r in _csv(save_dir / "results.csv")}
    seeds = {r["model"]: r for r in _csv(save_dir / "results_seeds.csv")}
    report = (save_dir / "report.md").read_text(encoding="utf-8")
    for m in models:
        best = save_dir / f"{m.name}_seed0" / "weights" / "best.pt"
        (mp, mr, map50, map_, *_), maps, _ = val.run(data=str(data), weights=str(best), batch_size=4, imgsz=IMGSZ,
                                                     device="cpu", workers=0, project=str(tmp_path),
                                                     name=m.name, plots=False)
        assert float(rows[m.name]["map50_mean"]) == pytest.approx(map50, abs=1e-5)
        assert float(rows[m.name]["map_mean"]) == pytest.approx(map_, abs=1e-5)
        assert float(seeds[m.name]["precision"]) == pytest.approx(mp, abs=1e-5)
        assert np.allclose(m.seeds[0].maps, maps, atol=1e-6)
        assert f"| {m.name} | " in report and f"{map_:.3f}" in report
    base, other = (float(rows[m.name]["map_mean"]) for m in models)
    assert float(rows[models[1].name]["map_delta"]) == pytest.approx(other - base, abs=2e-5)
    assert rows[models[1].name]["map_mark"] == "?"  # one seed each: the noise cannot be told


def _check_report_states_command_versions_and_timings(job):
    save_dir, models, data = job
    report = (save_dir / "report.md").read_text(encoding="utf-8")
    assert f"python compare.py --cfgs {' '.join(CFGS)} --weights yolov5n.pt --data {data}" in report
    assert "--epochs 1 --imgsz 64 --batch-size 2 --seeds 1" in report and "--visualize-routing" in report
    assert f"torch {torch.__version__}" in report and "Device: CPU" in report and "How to read it" in report
    assert "\n".join(table_lines(models, IMGSZ)) in report
    for m in models:
        assert set(m.latency) == {1, 32} and all(s.median_ms > 0 for s in m.latency.values())
        assert m.memory.method == "cpu_peak_rss_subprocess" and m.memory.base_mb > 50
        # at least weights, gradients, SGD momentum and the EMA copy: 4 fp32 copies of the parameters
        assert m.memory.peak_mb - m.memory.base_mb >= 4 * m.params * 4 / 2**20
        assert 0 < m.seeds[0].epoch_s < 600
    shares = {m.name: m.share() for m in models}  # the computation itself: tests/test_plugin_share.py
    assert shares["yolov5n"] is None and 0 <= shares["yolov5n_biformer"] < 0.5


def _result(name, maps50, map_, params=1000, gf=1.0, lat=(10.0, 5.0), mem=100.0, epoch_s=2.0, shares=None):
    m = ModelResult(name, f"{name}.yaml", params, gf)
    m.seeds = [SeedResult(k, 0.5, 0.5, a, b, [b] * 3, epoch_s, Path(f"{name}_seed{k}"),
                          None if shares is None else shares[k])
               for k, (a, b) in enumerate(zip(maps50, map_))]
    m.latency = {1: LatencyStat(lat[0], lat[0], lat[0], 1), 32: LatencyStat(lat[1], lat[1], lat[1], 1)}
    m.memory = MemoryStat(mem, 50.0, "cpu_peak_rss_subprocess")
    return m


def test_table_deltas_and_marks_by_hand():
    base = _result("base", [0.50, 0.52], [0.30, 0.32])
    far = _result("far", [0.60, 0.62], [0.40, 0.41], params=1500, gf=1.5, lat=(12.0, 4.0), mem=130.0, epoch_s=3.0,
                  shares=[0.02, 0.04])
    near = _result("near", [0.51, 0.50], [0.31, 0.30])
    rows = {r["model"]: r for r in results_rows([base, far, near])}
    assert rows["far"]["map50_delta"] == pytest.approx(0.10) and rows["far"]["map50_mark"] == "*"
    assert rows["near"]["map_delta"] == pytest.approx(-0.005) and rows["near"]["map_mark"] == "≈"
    assert rows["base"]["map_mark"] == "" and rows["base"]["map50_std"] == pytest.approx(0.01414, abs=1e-5)
    lines = table_lines([base, far, near], 320)
    assert lines[0].startswith("| model | params (M) | GFLOPs@320 | mAP50 | mAP50-95 | ms/img b1 | ms/img b32")
    assert lines[0].endswith("| s/epoch | plug-in share |")
    far_cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert far_cells == ["far", "0.002 (+50%)", "1.50 (+50%)", "0.610 ± 0.014 (+0.100 *)",
                         "0.405 ± 0.007 (+0.095 *)", "12.0 (+20%)", "4.0 (-20%)", "130 (+30)", "3.0 (+50%)", "3%"]
    assert lines[2].split("|")[-2].strip() == "-"  # the baseline has no plug-in
    assert rows["far"]["plugin_share"] == pytest.approx(0.03) and rows["base"]["plugin_share"] == ""


class _Sleeper(nn.Module):
    """A 'model' whose forward takes `ms` milliseconds per call and logs its name."""

    def __init__(self, name: str, ms: float, log: list):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.name, self.ms, self.log = name, ms, log

    def forward(self, x):
        self.log.append((self.name, x.shape[0]))
        time.sleep(self.ms / 1000)
        return x


def test_latency_is_per_image_median_and_interleaved():
    log = []
    models = {"a": _Sleeper("a", 20, log), "b": _Sleeper("b", 40, log), "c": _Sleeper("c", 10, log)}
    out = measure_latency(models, imgsz=8, batch_sizes=(1, 4), warmup=1, repeats={1: 5, 4: 3})
    for name, ms in (("a", 20), ("b", 40), ("c", 10)):
        assert out[name][1].median_ms == pytest.approx(ms, rel=0.5, abs=3)
        assert out[name][4].median_ms == pytest.approx(ms / 4, rel=0.5, abs=1.5)  # per image at batch 4
        assert out[name][1].n == 5 and out[name][4].n == 3
    timed_b1 = [n for n, bs in log if bs == 1][3:]  # after the warm-up round
    assert timed_b1[:9] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # round-robin, rotated each round


def test_peak_training_memory_grows_with_the_batch():
    small = peak_train_memory("yolov5n.yaml", 64, 1, nc=80)
    big = peak_train_memory("yolov5n.yaml", 64, 32, nc=80)
    assert small.method == big.method == "cpu_peak_rss_subprocess"
    assert big.base_mb == pytest.approx(small.base_mb, rel=0.1)  # same interpreter and libraries
    assert big.peak_mb - small.peak_mb > 20  # activations of 31 more 64x64 images, at least


def test_epoch_clock_reads_train_log():
    clock = compare._EpochClock()
    logger = logging.getLogger("test_epoch_clock")
    logger.addHandler(clock)
    logger.setLevel(logging.INFO)
    for _ in range(2):
        logger.info("\n      Epoch    GPU_mem   box_loss   obj_loss")
        time.sleep(0.05)
    logger.info("2 epochs completed in 0.000 hours.")
    logger.removeHandler(clock)
    assert clock.seconds_per_epoch() == pytest.approx(0.05, abs=0.03)


def test_default_cfgs_and_bad_options(tiny_data):
    cfgs = compare.default_cfgs("yolov5n.pt")
    assert cfgs[:2] == CFGS and {"yolov5n_hilo.yaml", "yolov5n_slide.yaml"} <= set(cfgs)
    assert compare.default_cfgs("yolov5s.pt")[:2] == ["yolov5s.yaml", "yolov5s_biformer.yaml"]
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        compare.run(cfgs=["yolov5n.yaml", "nope.yaml"], data=str(tiny_data))
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        compare.run(cfgs=CFGS, seeds=0, data=str(tiny_data))
    with pytest.raises(TypeError, match="unknown option 'epoch'"):
        compare.run(epoch=3)
    assert compare.classes_present([tiny_data.parent / "list.txt"]) == sorted(
        {int(float(line.split()[0])) for p in (tiny_data.parent / "list.txt").read_text().split()
         for line in Path(p.replace("/images/", "/labels/").rsplit(".", 1)[0] + ".txt").read_text().splitlines()})
