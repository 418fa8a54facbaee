"""compare.py end to end at tiny settings, and its report, latency and memory pieces on hand-made inputs."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import compare
from models.yolo import Model
from tests.helpers import FakeClock, Sleeper
from utils.compare.charts import plot_size_ap
from utils.compare.memory import MemoryStat, peak_train_memory
from utils.compare.report import ReportMeta, results_rows, seed_rows, table_lines, write_report
from utils.compare.results import FailedRun, ModelResult, SeedResult
from utils.compare.runs import RunRecord, fresh_run_dir, load_result, save_options, save_result, take_job_options
from utils.deploy.latency import LatencyStat, measure_latency
from utils.data.labels import classes_present
from utils.errors import UserError
from utils.flops import gflops

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


@pytest.mark.runtime  # its deployed-latency step loads ONNX Runtime and OpenVINO
def test_compare_job_end_to_end(tiny_data, tmp_path_factory, tmp_path, monkeypatch, capsys):
    """One tiny compare run (one test, so that pytest-xdist runs it once), then every check on its output; then
    the same job with one run made to fail, and its --resume, which must end where the first job ended."""
    project = tmp_path_factory.mktemp("compare")
    save_dir, models = compare.run(cfgs=CFGS, data=str(tiny_data), epochs=1, imgsz=IMGSZ, batch_size=2, seeds=1,
                                   workers=0, device="cpu", project=str(project), name="exp",
                                   visualize_routing=True)
    job = save_dir, models, tiny_data
    _check_every_report_file_is_written(job)
    _check_params_and_gflops_equal_the_model_summary(job)
    _check_map_equals_val_on_the_saved_weights(job, tmp_path)
    _check_report_states_command_versions_and_timings(job)
    _check_size_ap_equals_pycocotools_on_val_json(job, tmp_path)
    _check_paired_columns_with_one_seed(job)
    _check_deployed_latency_columns(job)
    _check_verdict_and_bootstrap(job)
    _check_failed_run_is_reported_then_resumed(job, tmp_path_factory.mktemp("compare_fail"), monkeypatch, capsys)


def _check_verdict_and_bootstrap(job):
    """Each run kept its validation's matches; the bootstrap's point difference is the paired mAP difference
    (one seed: the runs' own mAPs); the report opens with one verdict sentence per model and has the table."""
    save_dir, models, _ = job
    assert all((s.run_dir / "val" / "image_stats.npz").is_file() for m in models for s in m.seeds)
    rows = {r["model"]: r for r in _csv(save_dir / "results.csv")}
    bra, base = rows["yolov5n_biformer"], rows["yolov5n"]
    assert float(bra["boot_map_delta"]) == pytest.approx(float(bra["map_mean"]) - float(base["map_mean"]), abs=1e-6)
    assert float(bra["boot_map_lo"]) <= float(bra["boot_map_hi"]) and 0 <= float(bra["boot_map_p"]) <= 1
    assert bra["boot_map_p_holm"] == bra["boot_map_p"]  # one model against the baseline: Holm changes nothing
    assert base["boot_map_delta"] == "" and base["verdict"] == ""
    report = (save_dir / "report.md").read_text(encoding="utf-8")
    assert report.index("## Verdict") < report.index("## Results")
    assert f"- {bra['verdict']}" in report and bra["verdict"].startswith("yolov5n_biformer: mAP50-95 ")
    assert "(1 seed, 4 images)" in bra["verdict"] and "GFLOPs" in bra["verdict"]
    assert "## Bootstrap over validation images" in report and "1000 resamples of the 4 validation images" in report
    # by size (COCOeval's matching on the same resamples): the 4 images have no small object, so no small column
    by_model = {m.name: m for m in models}
    assert bra["boot_ap_small_delta"] == "" and bra["boot_ap_large_delta"] != ""
    for k in ("medium", "large"):
        if bra[f"boot_ap_{k}_delta"] != "":
            want = getattr(by_model["yolov5n_biformer"].seeds[0], f"ap_{k}") - getattr(by_model["yolov5n"].seeds[0],
                                                                                        f"ap_{k}")
            assert float(bra[f"boot_ap_{k}_delta"]) == pytest.approx(want, abs=1e-5), k
    assert "; by object size (COCO AP) " in bra["verdict"] and "| yolov5n_biformer | AP large |" in report


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_every_report_file_is_written(job):
    save_dir, models, _ = job
    assert save_dir.name == "exp"
    for name in ("opt.yaml", "report.md", "results.csv", "results_seeds.csv", "map_vs_gflops.png", "latency.png",
                 "class_ap_diff.png", "training_curves.png", "size_ap.png", "heatmaps.png"):
        assert (save_dir / name).is_file(), name
    report = (save_dir / "report.md").read_text()
    assert "## Where the models look" in report and "![heatmaps](heatmaps.png)" in report
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
        assert json.loads((run / "result.json").read_text())["result"]["seed"] == 0


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


def _check_size_ap_equals_pycocotools_on_val_json(job, tmp_path):
    """compare's AP by size (from val.py's txt detections and its own ground truth) against pycocotools run here
    on the detections JSON and ground truth that `val.py --save-json` writes."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    import val

    save_dir, models, data = job
    seeds = {r["model"]: r for r in _csv(save_dir / "results_seeds.csv")}
    report = (save_dir / "report.md").read_text(encoding="utf-8")
    for m in models:
        out = tmp_path / f"{m.name}_json"
        val.run(data=str(data), weights=str(save_dir / f"{m.name}_seed0" / "weights" / "best.pt"), batch_size=4,
                imgsz=IMGSZ, device="cpu", workers=0, project=str(tmp_path), name=out.name, plots=False,
                save_json=True)
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(out / "instances_gt.json"))
            ev = COCOeval(gt, gt.loadRes(str(out / "best_predictions.json")), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        for key, i in (("ap_all", 0), ("ap_small", 3), ("ap_medium", 4), ("ap_large", 5)):
            got = getattr(m.seeds[0], key)
            if ev.stats[i] == -1:  # no object of that size in the split: n/a, not -1
                assert got is None and seeds[m.name][key] == ""
            else:
                assert got == pytest.approx(ev.stats[i], abs=1e-6), key
                assert float(seeds[m.name][key]) == pytest.approx(ev.stats[i], abs=1e-5), key
    assert ev.stats[3] == -1 and ev.stats[5] > 0  # the 4 images have no small object; the n/a path is taken
    assert "## AP by object size" in report
    assert f"| {models[0].name} | {models[0].seeds[0].ap_all:.3f} | n/a |" in report


def _check_paired_columns_with_one_seed(job):
    save_dir, models, _ = job
    rows = {r["model"]: r for r in _csv(save_dir / "results.csv")}
    other, base = rows[models[1].name], rows[models[0].name]
    assert other["paired_n"] == "1" and other["map_mark_by"] == "unpaired" and other["paired_map_p"] == ""
    assert float(other["paired_map_delta"]) == pytest.approx(models[1].seeds[0].map - models[0].seeds[0].map,
                                                             abs=1e-5)
    assert base["paired_n"] == "" and all(r["status"] == "ok" for r in _csv(save_dir / "results_seeds.csv"))
    assert "## Paired against the baseline" in (save_dir / "report.md").read_text(encoding="utf-8")


def _check_deployed_latency_columns(job):
    """ONNX Runtime and OpenVINO batch-1 latency of every model, in results.csv and the table (tests/test_deploy.py
    checks how they are timed and what a failed export leaves)."""
    save_dir, models, _ = job
    rows = {r["model"]: r for r in _csv(save_dir / "results.csv")}
    report = (save_dir / "report.md").read_text(encoding="utf-8")
    for m in models:
        assert set(m.deploy_latency) == {"onnxruntime", "openvino"} and m.deploy_errors == {}
        for col in ("latency_ort_b1_ms", "latency_openvino_b1_ms"):
            assert float(rows[m.name][col]) > 0
    base, plug = (float(rows[m.name]["latency_ort_b1_ms"]) for m in models)
    assert float(rows[models[1].name]["latency_ort_b1_delta"]) == pytest.approx(plug / base - 1, abs=1e-3)
    assert "| ms/img ORT b1 | ms/img OV b1 |" in report and "Deployed latency: onnxruntime" in report


_FIGURES = ("precision", "recall", "map50", "map", "ap_all", "ap_small", "ap_medium", "ap_large", "plugin_share")


def _check_failed_run_is_reported_then_resumed(job, project, monkeypatch, capsys):
    """The job again with yolov5n_biformer's training raising: report, CSVs and exit status 1; then --resume
    trains only that run, and the results equal those of the job that never failed."""
    import train

    first_dir, _, data = job
    real, calls, failing = train.run, [], {"yolov5n_biformer"}

    def flaky_run(**kw):
        calls.append(Path(kw["cfg"]).stem)
        if Path(kw["cfg"]).stem in failing:
            raise FloatingPointError("non-finite loss at epoch 0, batch 1: box, obj, cls = [nan, 0.1, 0.2]")
        return real(**kw)

    timed = []  # latency and memory are checked above; here only which models they are asked for
    monkeypatch.setattr(train, "run", flaky_run)
    monkeypatch.setattr(compare, "_timing", lambda opt, models, device, bar, nc: timed.append([m.name for m in models]))
    args = ["--cfgs", *CFGS, "--data", str(data), "--epochs", "1", "--imgsz", str(IMGSZ), "--batch-size", "2",
            "--seeds", "1", "--workers", "0", "--device", "cpu", "--project", str(project), "--name", "exp"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        compare.cli(compare.parse_opt(args=args))
    assert e.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR")]
    save_dir = project / "exp"
    assert errors == [f"ERROR: 1 of 2 runs failed: yolov5n_biformer seed 0 (FloatingPointError); report of the "
                      f"finished runs in {save_dir / 'report.md'}; finish with: python compare.py --resume {save_dir}"]
    assert calls == ["yolov5n", "yolov5n_biformer"] and timed == [["yolov5n"]]
    _check_failure_is_recorded(save_dir)

    with pytest.raises(ValueError, match="drop --epochs 2"):
        compare.run(resume=str(save_dir), epochs=2)
    failing.clear()
    calls.clear()
    kept = (save_dir / "yolov5n_seed0" / "result.json").stat().st_mtime_ns
    monkeypatch.setattr(compare, "plot_all", lambda *a, **k: [])  # drawn above, from the same runs
    resumed_dir, models = compare.run(resume=str(save_dir))
    assert resumed_dir == save_dir and calls == ["yolov5n_biformer"]  # the finished run is reused, not re-trained
    assert (save_dir / "yolov5n_seed0" / "result.json").stat().st_mtime_ns == kept
    assert "this run failed" not in (save_dir / "yolov5n_biformer_seed0" / "train.log").read_text()  # fresh folder
    assert not any(m.failures for m in models) and timed[-1] == [Path(c).stem for c in CFGS]
    report = (save_dir / "report.md").read_text(encoding="utf-8")
    assert "## Failed runs" not in report and "reused 1 finished run(s) and ran 1" in report
    for got, want in zip(_csv(save_dir / "results_seeds.csv"), _csv(first_dir / "results_seeds.csv")):
        assert got["status"] == "ok" and {k: got[k] for k in _FIGURES} == {k: want[k] for k in _FIGURES}
    for got, want in zip(_csv(save_dir / "results.csv"), _csv(first_dir / "results.csv")):
        same = [k for k in want if k.startswith(("map", "ap_", "paired_", "params", "gflops", "plugin"))]
        assert {k: got[k] for k in same} == {k: want[k] for k in same}


def _check_failure_is_recorded(save_dir: Path):
    report = (save_dir / "report.md").read_text(encoding="utf-8")
    assert "## Failed runs" in report and "1 of 2 runs failed" in report
    assert ("| yolov5n_biformer | 0 | FloatingPointError: non-finite loss at epoch 0, batch 1: box, obj, cls = "
            "[nan, 0.1, 0.2] | yolov5n_biformer_seed0/train.log |") in report
    assert "| yolov5n_biformer | all 1 runs failed (see Failed runs) |" in report
    runs = {r["model"]: r for r in _csv(save_dir / "results_seeds.csv")}
    assert runs["yolov5n"]["status"] == "ok" and runs["yolov5n_biformer"]["status"] == "failed"
    assert runs["yolov5n_biformer"]["error"].startswith("FloatingPointError: non-finite loss at epoch 0")
    assert runs["yolov5n_biformer"]["train_log"] == str(save_dir / "yolov5n_biformer_seed0" / "train.log")
    assert runs["yolov5n_biformer"]["map"] == ""
    model = {r["model"]: r for r in _csv(save_dir / "results.csv")}["yolov5n_biformer"]
    assert (model["seeds"], model["failed"], model["map_mean"]) == ("0", "1", "")
    log = (save_dir / "yolov5n_biformer_seed0" / "train.log").read_text()
    assert "Traceback" in log and "FloatingPointError: non-finite loss" in log
    assert not (save_dir / "yolov5n_biformer_seed0" / "result.json").exists()


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
    # far's mAP50-95: paired p 0.033 alone, but two models face the baseline: Holm doubles the smaller p (0.067)
    from scipy.stats import ttest_rel

    p_raw = ttest_rel([0.40, 0.41], [0.30, 0.32]).pvalue
    assert p_raw < 0.05 < 2 * p_raw and rows["far"]["map_p_holm"] == pytest.approx(2 * p_raw, abs=1e-4)
    assert far_cells == ["far", "0.002 (+50%)", "1.50 (+50%)", "0.610 ± 0.014 (+0.100 *)",
                         "0.405 ± 0.007 (+0.095 ≈)", "12.0 (+20%)", "4.0 (-20%)", "130 (+30)", "3.0 (+50%)", "3%"]
    assert rows["far"]["map50_p_holm"] == ""  # every paired difference 0.10: no p, the exact rule's mark stays
    alone = {r["model"]: r for r in results_rows([base, far])}["far"]  # one model: Holm changes nothing
    assert alone["map_mark"] == "*" and alone["map_p_holm"] == pytest.approx(p_raw, abs=1e-4)
    assert lines[2].split("|")[-2].strip() == "-"  # the baseline has no plug-in
    assert rows["far"]["plugin_share"] == pytest.approx(0.03) and rows["base"]["plugin_share"] == ""


def _with_sizes(m: ModelResult, small, medium) -> ModelResult:
    for s, a, b in zip(m.seeds, small, medium):
        s.ap_all, s.ap_small, s.ap_medium, s.ap_large = s.map, a, b, None  # no large object in this split
    return m


def test_paired_columns_failed_runs_and_sizes_by_hand(tmp_path):
    from scipy import stats

    base = _with_sizes(_result("base", [0.50, 0.52, 0.51], [0.30, 0.40, 0.35]), [0.10, 0.20, 0.15], [0.3] * 3)
    plug = _with_sizes(_result("plug", [0.50, 0.53], [0.310, 0.411]), [0.12, None], [0.35, 0.36])
    plug.failures = [FailedRun(2, "FloatingPointError", "non-finite loss", tmp_path / "plug_seed2" / "train.log")]
    dead = ModelResult("dead", "dead.yaml", None, None, failures=[
        FailedRun(k, "OutOfMemoryError", "CUDA out of memory | tried 2 GiB", tmp_path / f"dead_seed{k}" / "train.log")
        for k in (0, 1, 2)])
    models = [base, plug, dead]
    rows = {r["model"]: r for r in results_rows(models)}
    d = [0.310 - 0.30, 0.411 - 0.40]  # seed 2 failed for plug: only seeds 0 and 1 pair
    ref = stats.ttest_rel([0.310, 0.411], [0.30, 0.40])
    p = rows["plug"]
    assert p["paired_n"] == 2 and p["paired_map_delta"] == pytest.approx(np.mean(d), abs=1e-5)
    assert p["paired_map_p"] == pytest.approx(ref.pvalue, abs=1e-5) and p["map_mark_by"] == "paired"
    ci = ref.confidence_interval(0.95)
    assert (p["paired_map_ci_low"], p["paired_map_ci_high"]) == (pytest.approx(ci.low, abs=1e-5),
                                                                 pytest.approx(ci.high, abs=1e-5))
    assert p["map_delta"] == pytest.approx(0.3605 - 0.35, abs=1e-5)  # unpaired: difference of all finished means
    assert p["map_mark"] == ("≈" if ref.pvalue >= 0.05 else "*")
    assert p["paired_ap_small_delta"] == pytest.approx(0.02, abs=1e-5)  # seed 1 has no small AP: one pair
    assert p["paired_ap_medium_delta"] == pytest.approx(0.055, abs=1e-5) and p["paired_ap_large_delta"] == ""
    assert (p["ap_small"], p["ap_large"], p["failed"]) == (0.12, "", 1)
    assert rows["dead"]["seeds"] == 0 and rows["dead"]["failed"] == 3 and "map_mean" not in rows["dead"]
    assert rows["dead"]["error"].startswith("seed 0: OutOfMemoryError: CUDA out of memory")
    statuses = [(r["model"], r["seed"], r["status"]) for r in seed_rows(models)]
    assert statuses[3:] == [("plug", 0, "ok"), ("plug", 1, "ok"), ("plug", 2, "failed"), ("dead", 0, "failed"),
                            ("dead", 1, "failed"), ("dead", 2, "failed")]
    lines = table_lines(models, 320)
    assert lines[3].startswith("| plug (1 of 3 runs failed) | ")
    assert lines[4] == "| dead | all 3 runs failed (see Failed runs) | " + " | ".join(["-"] * 8) + " |"
    meta = ReportMeta("python compare.py", {"torch": "x"}, "CPU", {"half": False}, size_counts=dict(
        small=5, medium=7, large=0))
    report = write_report(models, meta, tmp_path).read_text(encoding="utf-8")
    assert "4 of 9 runs failed" in report
    assert "| dead | 1 | OutOfMemoryError: CUDA out of memory \\| tried 2 GiB | dead_seed1/train.log |" in report
    assert f"| plug | mAP50-95 | 2 | {np.mean(d):+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] | {ref.pvalue:.3g} |" in report
    assert "Marks decided by the paired t-test" not in report and "decided by the paired t-test (>= 2" in report
    assert "| base | 0.350 | 0.150 | 0.300 | n/a |" in report  # AP all, small, medium, large: large is n/a
    assert "| plug | 0.360 (+0.010) | 0.120 (+0.020) | 0.355 (+0.055) | n/a |" in report  # 0.3605 in binary is below
    assert "The val split holds 5 small, 7 medium, 0 large objects." in report
    png = plot_size_ap([base, plug], tmp_path / "size_ap.png")
    assert cv2.imread(str(png)).std() > 5


def test_a_failed_baseline_gives_figures_without_deltas():
    base = ModelResult("base", "base.yaml", None, None, failures=[FailedRun(0, "RuntimeError", "boom", Path("l"))])
    plug = _result("plug", [0.5], [0.3])
    rows = {r["model"]: r for r in results_rows([base, plug])}
    assert rows["plug"]["map_mean"] == 0.3 and rows["plug"]["map_delta"] == "" and rows["plug"]["paired_n"] == ""
    cells = [c.strip() for c in table_lines([base, plug], 320)[3].split("|")[1:-1]]
    assert cells[:5] == ["plug", "0.001", "1.00", "0.500", "0.300"]  # no bracketed delta anywhere


def test_keyboard_interrupt_stops_the_job(tiny_data, tmp_path, monkeypatch):
    """Ctrl-C is not a failed run: it ends the job at once, leaving a folder that --resume can finish."""
    import train

    def interrupted(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare.run(cfgs=CFGS, data=str(tiny_data), epochs=1, imgsz=IMGSZ, batch_size=2, seeds=1, workers=0,
                    device="cpu", project=str(tmp_path), name="exp")
    assert (tmp_path / "exp" / "opt.yaml").is_file() and not (tmp_path / "exp" / "report.md").exists()
    assert not (tmp_path / "exp" / "yolov5n_seed0" / "result.json").exists()


def test_result_json_round_trip_and_stale_runs(tmp_path):
    run = fresh_run_dir(tmp_path / "yolov5n_seed1")
    res = SeedResult(1, 0.5, 0.4, 0.3, 0.2, [0.2, 0.1], 1.5, run, None, 0.25, None, 0.125, 0.5)
    save_result(RunRecord("yolov5n", "yolov5n.yaml", 1000, 1.5, res))
    assert load_result(run, "yolov5n", 1) is None  # no weights: the run starts again
    (run / "weights").mkdir()
    (run / "weights" / "best.pt").write_bytes(b"")
    rec = load_result(run, "yolov5n", 1)
    assert rec == RunRecord("yolov5n", "yolov5n.yaml", 1000, 1.5, res)
    assert load_result(run, "yolov5n", 2) is None and load_result(run, "other", 1) is None
    (run / "result.json").write_text("{not json")
    assert load_result(run, "yolov5n", 1) is None
    assert list(fresh_run_dir(run).iterdir()) == []  # an unfinished run's leftovers are deleted


def test_resume_takes_the_jobs_options_and_rejects_others(tmp_path):
    job = compare.parse_opt(args=["--cfgs", *CFGS, "--epochs", "5", "--imgsz", "128"])
    save_options(job, tmp_path)
    defaults = vars(compare.parse_opt(args=[]))
    opt = compare.parse_opt(args=["--resume", str(tmp_path)])
    take_job_options(opt, tmp_path, defaults)
    assert (opt.cfgs, opt.epochs, opt.imgsz, opt.resume) == (CFGS, 5, 128, str(tmp_path))
    opt = compare.parse_opt(args=["--resume", str(tmp_path), "--epochs", "7", "--device", "0"])
    with pytest.raises(ValueError, match=r"opt.yaml; drop --epochs 7 --device 0"):
        take_job_options(opt, tmp_path, defaults)
    (tmp_path / "opt.yaml").write_text("epochs: 5\nepoch: 3\n")
    with pytest.raises(ValueError, match=r"unknown options \['epoch'\]"):
        take_job_options(compare.parse_opt(args=["--resume", str(tmp_path)]), tmp_path, defaults)
    with pytest.raises(FileNotFoundError, match="no opt.yaml"):
        take_job_options(compare.parse_opt(args=["--resume", str(tmp_path / "x")]), tmp_path / "x", defaults)
    with pytest.raises(FileNotFoundError, match="missing: no such folder"):
        compare.run(resume=str(tmp_path / "missing"))


@pytest.mark.parametrize("text, message", [
    ("epochs: three\n", r"epochs: 'three' is not an integer"),
    ("seeds: 1.5\n", r"seeds: 1.5 is not an integer"),
    ("cfgs: yolov5n.yaml\n", r"cfgs: 'yolov5n.yaml' is not a list of model configs"),
    ("augment: 'yes'\n", r"augment: 'yes' is not true or false"),
    ("epochs: !!python/object/apply:os.system ['touch pwned']\n", r"not plain YAML"),
])
def test_resume_refuses_a_tampered_opt_yaml(text, message, tmp_path, monkeypatch):
    """compare.py --resume reads opt.yaml as data of the types the options have: a value of another type (which
    ran on as 'three' epochs, or cfgs read one character at a time) or a YAML tag is a one-line error."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "opt.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        compare.run(resume=str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_latency_is_per_image_median_and_interleaved(monkeypatch):
    """On a fake clock that only the stand-ins move (no timed assertion on the real, shared machine)."""
    from utils.deploy import latency

    log, clock = [], FakeClock()
    monkeypatch.setattr(latency, "time_sync", clock.time)
    models = {"a": Sleeper("a", 20, log, clock), "b": Sleeper("b", 40, log, clock), "c": Sleeper("c", 10, log, clock)}
    out = measure_latency(models, imgsz=8, batch_sizes=(1, 4), warmup=1, repeats={1: 5, 4: 3})
    for name, ms in (("a", 20), ("b", 40), ("c", 10)):
        assert out[name][1].median_ms == pytest.approx(ms)
        assert out[name][4].median_ms == pytest.approx(ms / 4)  # per image at batch 4
        assert out[name][1].n == 5 and out[name][4].n == 3
    timed_b1 = [n for n, bs, _ in log if bs == 1][3:]  # after the warm-up round
    assert timed_b1[:9] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # round-robin, rotated each round


def test_peak_training_memory_grows_with_the_batch():
    small = peak_train_memory("yolov5n.yaml", 64, 1, nc=80)
    big = peak_train_memory("yolov5n.yaml", 64, 32, nc=80)
    assert small.method == big.method == "cpu_peak_rss_subprocess"
    assert big.base_mb == pytest.approx(small.base_mb, rel=0.1)  # same interpreter and libraries
    assert big.peak_mb - small.peak_mb > 20  # activations of 31 more 64x64 images, at least


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
    assert classes_present([tiny_data.parent / "list.txt"]) == sorted(
        {int(float(line.split()[0])) for p in (tiny_data.parent / "list.txt").read_text().split()
         for line in Path(p.replace("/images/", "/labels/").rsplit(".", 1)[0] + ".txt").read_text().splitlines()})


def test_flags_are_the_options_and_the_command_repeats_them():
    """compare.py's flags are CompareOptions' fields, and a job's command line parses back to its options."""
    from dataclasses import asdict, fields

    assert set(vars(compare.parse_opt(args=[]))) == {f.name for f in fields(compare.CompareOptions)}
    argv = ["--cfgs", *CFGS, "--epochs", "2", "--seeds", "3", "--imgsz", "320", "--augment", "--no-deploy-latency"]
    opt = compare.CompareOptions.from_namespace(compare.parse_opt(args=argv))
    again = compare.parse_opt(args=opt.command().split()[2:])
    assert asdict(compare.CompareOptions.from_namespace(again)) == asdict(opt)


def test_plugins_against_the_controls_by_hand():
    from scipy import stats

    from utils.compare.tables import control_lines

    base = _result("yolov5n", [0.5] * 3, [0.30, 0.32, 0.34])
    bra = _result("yolov5n_biformer", [0.5] * 3, [0.35, 0.36, 0.40])
    ctrl = _result("yolov5n_control", [0.5] * 3, [0.31, 0.33, 0.34])
    c3tr = _result("yolov5n_transformer", [0.5] * 3, [0.34, 0.37, 0.39])
    single = _result("yolov5n_hilo", [0.5], [0.9])
    lines = control_lines([base, bra, ctrl, c3tr, single])
    rows = {tuple(c.strip() for c in ln.split("|")[1:3]): [c.strip() for c in ln.split("|")[3:-1]]
            for ln in lines if ln.startswith("| yolov5n_")}
    d = [0.35 - 0.31, 0.36 - 0.33, 0.40 - 0.34]
    p = stats.ttest_rel([0.35, 0.36, 0.40], [0.31, 0.33, 0.34]).pvalue
    n, delta, pval, verdict = rows[("yolov5n_biformer", "yolov5n_control")]
    assert n == "3" and delta.startswith(f"{sum(d) / 3:+.3f} [") and pval == f"{p:.3g}" and p < 0.05
    assert verdict == "beats it"
    assert rows[("yolov5n_biformer", "yolov5n_transformer")][-1] == "cannot tell apart (paired p >= 0.05)"
    assert rows[("yolov5n_hilo", "yolov5n_control")][-1] == "cannot tell (fewer than 2 paired seeds)"
    assert not any(k[0] in ("yolov5n", "yolov5n_control") for k in rows)  # baseline and controls are not rows
    assert control_lines([base, bra]) == []  # no control in the job: no section


def test_report_environment_starts_no_process(monkeypatch):
    """The report's head is written after ONNX Runtime and OpenVINO are loaded, where a fork can die with SIGSEGV
    (a main job did, in the report step): reading the CPU's name must not start `uname -p`."""
    import subprocess

    from utils.compare.report import environment

    def forked(*a, **k):
        raise AssertionError(f"started a process: {a}")

    monkeypatch.setattr(subprocess, "Popen", forked)
    versions, dev = environment(torch.device("cpu"))
    assert dev.startswith("CPU: ") and "threads" in dev and versions["torch"] == torch.__version__


def test_cli_resume_after_a_kill(tiny_data, tmp_path):
    """What a user types: `python compare.py ...` killed (SIGKILL) while its second run trains, then
    `python compare.py --resume JOB`: the finished run is reused, the killed one is trained again, the report is
    written and the exit status is 0. A bare `--resume --project P` finds the same job. (train.run once read
    compare's own sys.argv, so a resumed job's every run failed with '--resume: no checkpoint at JOB'.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(compare.__file__).resolve().parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, str(root / "compare.py")]
    job = tmp_path / "exp"
    p = subprocess.Popen(base + ["--cfgs", *CFGS, "--data", str(tiny_data), "--epochs", "1", "--imgsz", str(IMGSZ),
                                 "--batch-size", "2", "--seeds", "1", "--workers", "0", "--device", "cpu",
                                 "--project", str(tmp_path), "--name", "exp", "--no-deploy-latency"],
                         cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    second = job / "yolov5n_biformer_seed0" / "train.log"
    deadline = time.time() + 300
    while not second.is_file() and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert second.is_file(), p.stderr.read().decode()[-2000:]
    assert (job / "yolov5n_seed0" / "result.json").is_file() and not (job / "report.md").exists()

    r = subprocess.run(base + ["--resume", str(job)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = (job / "report.md").read_text()
    assert f"`python compare.py --resume {job}` reused 1 finished run(s) and ran 1" in report
    rows = {row["model"]: row for row in _csv(job / "results.csv")}
    assert set(rows) == {"yolov5n", "yolov5n_biformer"}
    assert all(row["map_mean"] != "" and row["failed"] == "0" for row in rows.values()), rows

    r = subprocess.run(base + ["--resume", "--project", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reused 2 finished run(s) and ran 0" in (job / "report.md").read_text()
