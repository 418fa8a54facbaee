"""train.py's smaller YOLOv5 flags: --image-weights, --batch-size -1 (AutoBatch), labels_correlogram.jpg, and a
parser that takes official YOLOv5's prefixes."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from tests.test_train import _opts
from utils.training.autobatch import DEFAULT_BATCH, autobatch, fit_batch_size
from utils.training.callbacks import Callbacks
from utils.training.image_weights import image_weights, labels_to_class_weights, sample_image_indices


def _lb(*classes):
    return np.array([[c, 0.5, 0.5, 0.1, 0.1] for c in classes], dtype=np.float32).reshape(-1, 5)


def test_image_weights_favour_rare_and_badly_detected_classes():
    labels = [_lb(0, 0, 0), _lb(0), _lb(1), _lb()]  # class 0: 4 labels, class 1: 1 label, an empty image
    cw = labels_to_class_weights(labels, nc=3)
    assert np.allclose(cw, np.array([1 / 4, 1, 1]) / 2.25)  # inverse counts (none counts 1), normalised
    w = image_weights(labels, 3, maps=np.zeros(3))
    assert np.allclose(w, [3 * cw[0], cw[0], cw[1], 0])
    w_good1 = image_weights(labels, 3, maps=np.array([0.0, 0.9, 0.0]))  # class 1 already well detected
    assert w_good1[2] == pytest.approx(cw[1] * 0.01)
    assert np.allclose(image_weights([_lb(), _lb()], 2, np.zeros(2)), [1, 1])  # no labels at all: uniform
    draws = Counter(sample_image_indices(labels * 250, 3, np.zeros(3), seed=0, epoch=0))
    assert draws[3] == 0 and draws[2] > draws[1]  # never the empty image; the class-1 image over a class-0 one
    assert sample_image_indices(labels, 3, np.zeros(3), 1, 5) == sample_image_indices(labels, 3, np.zeros(3), 1, 5)
    assert sample_image_indices(labels * 10, 3, np.zeros(3), 1, 5) != sample_image_indices(labels * 10, 3,
                                                                                            np.zeros(3), 1, 6)


def test_autobatch_fit_and_cpu_default(log):
    sizes = [1, 2, 4, 8, 16]
    mem = [0.5 + 0.25 * b for b in sizes]
    assert fit_batch_size(sizes, mem, free_gb=10, reserved_gb=0, total_gb=12, fraction=0.6) == 22  # (6 - .5) / .25
    assert fit_batch_size(sizes, mem[:3] + [None, None], 10, 0, 12, 0.6) == 4  # b8 ran out of memory
    assert fit_batch_size(sizes, [None] * 5, 10, 0, 12) == DEFAULT_BATCH
    assert autobatch(torch.nn.Conv2d(3, 3, 1), 64, torch.device("cpu")) == DEFAULT_BATCH
    assert any("on cpu there is none to measure" in r for r in log)


def test_labels_correlogram(tmp_path):
    from utils.training.plots import plot_labels_correlogram

    rng = np.random.default_rng(0)
    labels = [np.concatenate([np.zeros((20, 1)), rng.random((20, 4))], 1), np.zeros((0, 5))]
    out = plot_labels_correlogram(labels, tmp_path)
    assert out == tmp_path / "labels_correlogram.jpg" and out.stat().st_size > 10_000


def test_run_folder_has_label_plots(tmp_path):
    """A new run's folder gets hyp.yaml, opt.yaml, weights/ and both label plots (none on --noplots)."""
    from types import SimpleNamespace

    from utils.hyp import load_hyp
    from utils.training.options import TrainOptions
    from utils.training.run_folder import open_run_folder

    rng = np.random.default_rng(0)
    labels = [np.concatenate([rng.integers(0, 2, (20, 1)), rng.random((20, 4))], 1) for _ in range(3)]
    setup = SimpleNamespace(model=torch.nn.Conv2d(3, 3, 1), dataset=SimpleNamespace(labels=labels),
                            data=SimpleNamespace(names={0: "a", 1: "b"}), imgsz=64)
    opt = TrainOptions.from_namespace(train.parse_opt(args=[]))
    for noplots, folder in ((False, tmp_path / "plots"), (True, tmp_path / "noplots")):
        ck, _ = open_run_folder(opt.with_(noplots=noplots), load_hyp("hyp.scratch-low.yaml"), setup, folder,
                                Callbacks())
        assert ck.last.parent == folder / "weights" and ck.last.parent.is_dir()
        assert (folder / "hyp.yaml").is_file() and (folder / "opt.yaml").is_file()
        plots = {p.name for p in folder.glob("labels*.jpg")}
        assert plots == (set() if noplots else {"labels.jpg", "labels_correlogram.jpg"})


def test_image_weights_and_autobatch_in_a_run(tmp_path):
    """--image-weights trains on the images its rule draws for the epoch; --batch-size -1 on the CPU trains with
    the default 16."""
    seen = []
    cb = Callbacks()
    cb.register_action("on_train_batch_end", "paths", lambda model, ni, imgs, targets, paths, vals: seen.extend(paths))
    opt = train.run(callbacks=cb, **_opts(tmp_path, epochs=1, image_weights=True, batch_size=-1, seed=3))
    assert opt.opt.batch_size == DEFAULT_BATCH
    from utils.data.dataset import LoadImagesAndLabels

    ds = LoadImagesAndLabels(str(Path(opt.opt.data).parent / "ims4.txt"), 96, augment=False)
    drawn = sample_image_indices(ds.labels, 80, np.zeros(80), seed=3, epoch=0)
    assert sorted(seen) == sorted(ds.im_files[i] for i in drawn)


def test_prefixes_as_official_and_unknown_flags_refused(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train.py", "--image-weight", "--batch", "8"])
    opt = train.parse_opt()
    assert opt.image_weights and opt.batch_size == 8
    monkeypatch.setattr(sys, "argv", ["train.py", "--image-weightz"])
    with pytest.raises(SystemExit):
        train.parse_opt()
    assert "unrecognized arguments: --image-weightz" in capsys.readouterr().err


def test_every_option_is_a_typed_field():
    """train.py's command line and TrainOptions name the same options: a flag added to one only would be dropped
    (or missing) when the options are parsed into the typed object."""
    from dataclasses import fields

    from utils.training.options import TrainOptions

    assert set(vars(train.parse_opt(True))) == {f.name for f in fields(TrainOptions)} - {"save_dir"}
