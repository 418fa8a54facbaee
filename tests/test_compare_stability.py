"""The report's stability warning: a plug-in share above 100% in some epoch, or (>= 3 seeds a side) a seed spread
of mAP50-95 over twice the baseline's, puts 'unstable' beside the model's verdict, in results.csv and under the
table; the share per epoch (each run's plugin_share.csv) is charted."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.attention.share import SHARE_CSV, read_epoch_shares, write_epoch_shares
from utils.compare.charts import plot_all, plot_plugin_share
from utils.compare.report import ReportMeta, results_rows, write_report
from utils.compare.results import UNSTABLE, ModelResult, SeedResult, epoch_peak_shares, instability


def _model(tmp: Path, name: str, maps: list[float], curves: list[list[float]] | None = None) -> ModelResult:
    """A model whose seed k scored maps[k]; with `curves`, run k recorded those peak shares per epoch (two layers:
    the curve and a tenth of it)."""
    m = ModelResult(name, f"{name}.yaml", 1000, 1.0)
    for k, v in enumerate(maps):
        run = tmp / f"{name}_seed{k}"
        run.mkdir(parents=True)
        share = None
        if curves is not None:
            for e, s in enumerate(curves[k]):
                write_epoch_shares(run / SHARE_CSV, e, {"model.20": s, "model.24": s / 10}, {"model.20": 0.1})
            share = curves[k][-1] / 2
        m.seeds.append(SeedResult(k, 0.5, 0.5, v + 0.2, v, [v], 1.0, run, share))
    return m


def test_epoch_shares_file_replaces_epochs_trained_again(tmp_path):
    f = tmp_path / SHARE_CSV
    for e, s in ((0, 0.01), (1, 0.02), (2, 0.03), (1, 0.05)):  # a run resumed at epoch 1
        write_epoch_shares(f, e, {"model.20": s}, {"model.20": s * 10})
    assert read_epoch_shares(f) == [(0, "model.20", 0.01, 0.1), (1, "model.20", 0.05, 0.5)]
    assert epoch_peak_shares(tmp_path) == [0.01, 0.05] and epoch_peak_shares(tmp_path / "none") == []


def test_share_above_100_percent_in_any_epoch_is_unstable(tmp_path):
    base = _model(tmp_path, "base", [0.30, 0.31])
    calm = _model(tmp_path, "calm", [0.30, 0.32], curves=[[0.02, 0.2, 0.9], [0.01, 0.1, 0.5]])
    wild = _model(tmp_path, "wild", [0.29, 0.33], curves=[[0.1, 1.65, 0.8], [0.1, 0.5, 0.9]])  # peak mid-run
    assert instability(base, calm) == []
    assert instability(base, wild) == ["plug-in share above 100% (seed 0 165%)"]
    assert instability(base, base) == []
    rows = {r["model"]: r for r in results_rows([base, calm, wild])}
    assert rows["wild"]["unstable"] == "plug-in share above 100% (seed 0 165%)" and rows["calm"]["unstable"] == ""
    meta = ReportMeta("python compare.py", {"torch": "x"}, "CPU", {"half": False})
    text = write_report([base, calm, wild], meta, tmp_path).read_text(encoding="utf-8")
    assert f"- **wild: {UNSTABLE}**: plug-in share above 100% (seed 0 165%)." in text
    assert "**calm:" not in text
    assert text.index(UNSTABLE) < text.index("## How to read it")  # under the results table


def test_final_share_counts_where_no_epoch_was_recorded(tmp_path):
    base = _model(tmp_path, "base", [0.30])
    m = _model(tmp_path, "m", [0.30])
    m.seeds[0].share = 1.2
    assert instability(base, m) == ["plug-in share above 100% (seed 0 120%)"]


def test_seed_spread_over_twice_the_baseline_needs_three_seeds_a_side(tmp_path):
    base = _model(tmp_path, "base", [0.30, 0.31, 0.32])  # std 0.01
    wide = _model(tmp_path, "wide", [0.25, 0.30, 0.35])  # std 0.05
    narrow = _model(tmp_path, "narrow", [0.30, 0.32, 0.34])  # std 0.02: exactly 2x, not over
    assert instability(base, wide) == ["seed spread (std) of mAP50-95 0.050, 5.0x the baseline's 0.010"]
    assert instability(base, narrow) == []
    two = _model(tmp_path, "two", [0.20, 0.40])
    assert instability(base, two) == []  # two seeds cannot pin a spread
    still = _model(tmp_path, "still", [0.3, 0.3, 0.3])
    assert instability(still, wide) == ["seed spread (std) of mAP50-95 0.050, against the baseline's 0"]


def test_share_chart_only_when_runs_recorded_shares(tmp_path):
    base = _model(tmp_path, "base", [0.30, 0.31])
    assert plot_plugin_share([base], tmp_path / "a.png") is None
    bra = _model(tmp_path, "bra", [0.30, 0.32], curves=[[0.001, 0.2, 1.7], [0.0, 0.1, 0.5, 0.6]])
    png = plot_plugin_share([base, bra], tmp_path / "plugin_share.png")
    assert png == tmp_path / "plugin_share.png" and png.stat().st_size > 10_000
    charts = plot_all([base, bra], tmp_path / "job", ["raccoon"], [0], 64)
    assert tmp_path / "job" / "plugin_share.png" in charts


@pytest.mark.parametrize("seeds", [1, 3])
def test_the_baseline_is_never_unstable(tmp_path, seeds):
    base = _model(tmp_path, "base", [0.1, 0.5, 0.9][:seeds])
    assert instability(base, base) == [] and instability(None, base) == []
