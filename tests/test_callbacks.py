"""train.py's hooks (utils/training/callbacks.py) and its TensorBoard event files (utils/training/loggers.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import train
from tests.test_train import _opts
from utils.errors import UserError
from utils.training.callbacks import HOOKS, Callbacks
from utils.training.run_files import RESULTS_KEYS, ResultsLog


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def test_hooks_tensorboard_and_stop(tmp_path):
    """A 2-epoch fine-tune of the BRA config: every hook fires where YOLOv5 fires it, with its arguments;
    on_fit_epoch_end gets the results.csv row; the event file holds the same figures, the plug-in shares and
    gates per epoch and the graph; an action setting stop_training ends the run after that epoch."""
    calls, rows, saved = [], [], []
    cb = Callbacks()
    for hook in HOOKS:
        cb.register_action(hook, "record", lambda *a, _h=hook, **k: calls.append(_h))
    cb.register_action("on_fit_epoch_end", "rows", lambda vals, epoch, best, fi: rows.append((epoch, vals, fi)))
    cb.register_action("on_model_save", "saved", lambda last, epoch, final, best, fi: saved.append((epoch, final)))
    cb.register_action("on_pretrain_routine_end", "labels",
                       lambda labels, names: calls.append(f"labels {len(labels)} {len(names)}"))
    t0 = time.perf_counter()
    opt = train.run(callbacks=cb, **_opts(tmp_path, weights="yolov5n.pt", cfg="yolov5n_biformer.yaml",
                                          epochs=2, seed=0, noplots=False))
    wall = time.perf_counter() - t0
    first = ["on_pretrain_routine_start", "on_pretrain_routine_end", "labels 4 80", "on_train_start",
             "on_train_epoch_start", "on_train_batch_start", "on_before_zero_grad", "on_train_batch_end"]
    assert calls[:len(first)] == first
    assert calls.count("on_train_epoch_start") == 2 and calls.count("on_train_batch_end") == 4
    assert calls.count("on_fit_epoch_end") == 2 and calls.count("on_model_save") == 2
    assert calls[-2:] == ["on_train_end", "teardown"] and "on_val_start" not in calls
    assert saved == [(0, False), (1, True)]

    csv = ResultsLog(Path(opt.save_dir) / "results.csv").read()
    for epoch, vals, fi in rows:
        assert len(vals) == len(RESULTS_KEYS)
        assert np.allclose(vals, [csv[k][epoch] for k in RESULTS_KEYS], rtol=1e-4, atol=1e-7)

    scalars, acc = _scalars(opt.save_dir)
    for k in RESULTS_KEYS:
        assert [s for s, _ in scalars[k]] == [0, 1]
        assert np.allclose([v for _, v in scalars[k]], csv[k], rtol=1e-4, atol=1e-7)
    for layer in ("model.20", "model.24"):
        assert len(scalars[f"plugin/share/{layer}"]) == 2 and scalars[f"plugin/share/{layer}"][-1][1] > 0
        assert scalars[f"plugin/gamma_abs_max/{layer}"][-1][1] >= scalars[f"plugin/gamma_abs_mean/{layer}"][-1][1] > 0
    assert np.isclose(scalars["x/plugin_lr"][0][1], 0.003)
    assert acc.Graph() is not None
    # the typed result: each epoch timed by the loop (validation and saving included, set-up and the final
    # validation of best.pt not), and the plug-in shares of best.pt
    assert len(opt.epoch_seconds) == 2 and all(s > 0 for s in opt.epoch_seconds)
    assert sum(opt.epoch_seconds) < wall
    assert set(opt.plugin_share) == {"model.20", "model.24"} and min(opt.plugin_share.values()) > 0
    assert opt.best == Path(opt.save_dir) / "weights" / "best.pt" and opt.best.is_file()

    stopper = Callbacks()
    stopper.register_action("on_fit_epoch_end", "stop",
                            lambda vals, epoch, best, fi: setattr(stopper, "stop_training", True))
    opt = train.run(callbacks=stopper, **_opts(tmp_path, epochs=3, name="stopped"))
    assert list(ResultsLog(Path(opt.save_dir) / "results.csv").read()["epoch"]) == [0]
    assert len(opt.epoch_seconds) == 1 and opt.plugin_share == {}  # stopped after epoch 0; no plug-ins
    acc = _scalars(opt.save_dir)[1]
    assert "metrics/mAP_0.5" in acc.Tags()["scalars"] and not acc.Tags()["graph"]  # --noplots: no graph, as YOLOv5


def test_bad_hooks_are_named():
    cb = Callbacks()
    with pytest.raises(UserError, match="unknown callback hook 'on_epoch_end'"):
        cb.register_action("on_epoch_end", "x", print)
    with pytest.raises(UserError, match="is not callable"):
        cb.register_action("on_train_end", "x", None)


def test_optional_mlflow_and_wandb_when_installed(tmp_path, monkeypatch):
    """MLflow and W&B are not requirements: when a user has them installed the run logs the same figures to
    them. Stand-in modules record what train.py sends; TensorBoard is left out via YOLO_LOGGERS."""
    import sys
    import types

    calls = []
    mlflow = types.ModuleType("mlflow")
    mlflow.start_run = lambda run_name: calls.append(("mlflow.start_run", run_name))
    mlflow.log_params = lambda d: calls.append(("mlflow.log_params", dict(d)))
    mlflow.get_tracking_uri = lambda: "file:./mlruns"
    mlflow.log_metrics = lambda d, step: calls.append(("mlflow.log_metrics", step, dict(d)))
    mlflow.log_artifact = lambda path: calls.append(("mlflow.log_artifact", path))
    mlflow.end_run = lambda: calls.append(("mlflow.end_run",))
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: calls.append(("wandb.init", kw))
    wandb.log = lambda d: calls.append(("wandb.log", dict(d)))
    wandb.finish = lambda: calls.append(("wandb.finish",))
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setenv("YOLO_LOGGERS", "mlflow,wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    opt = train.run(**_opts(tmp_path, epochs=2, name="logged"))
    names = [c[0] for c in calls]
    assert names[:3] == ["mlflow.start_run", "mlflow.log_params", "wandb.init"]
    assert calls[0][1] == "logged" and calls[1][1]["plugin_lr"] == 0.003
    init = calls[2][1]
    assert init["mode"] == "offline" and init["name"] == "logged" and init["config"]["lr0"] == 0.01
    metrics = [c for c in calls if c[0] == "mlflow.log_metrics"]
    csv = ResultsLog(Path(opt.save_dir) / "results.csv").read()
    assert [m[1] for m in metrics] == [0, 1]
    assert np.isclose(metrics[1][2]["metrics/mAP_0.5-0.95"], csv["metrics/mAP_0.5:0.95"][1], rtol=1e-4)
    logs = [c[1] for c in calls if c[0] == "wandb.log"]
    assert [d["epoch"] for d in logs] == [0, 1] and np.isclose(logs[1]["train/box_loss"], csv["train/box_loss"][1])
    assert names[-3:] == ["mlflow.log_artifact", "mlflow.end_run", "wandb.finish"]
    assert calls[-3][1].endswith("best.pt")
    assert not list((tmp_path / "runs" / "logged").glob("events.out.tfevents*"))  # TensorBoard left out


def test_bad_yolo_loggers_is_an_error_naming_the_valid_ones(tmp_path, monkeypatch):
    """YOLO_LOGGERS=bogus logged nothing and said nothing; now train refuses it before any work."""
    import train
    from tests.test_train import _opts

    monkeypatch.setenv("YOLO_LOGGERS", "tensorbord")
    with pytest.raises(UserError, match=r"YOLO_LOGGERS='tensorbord': unknown logger\(s\) \['tensorbord'\]; valid: "
                                        r"a comma list of tensorboard, mlflow, wandb, or none"):
        train.run(**_opts(tmp_path, epochs=1))
    assert not (tmp_path / "runs").exists()
