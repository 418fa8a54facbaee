"""train.py --evolve: generations of mutated hyperparameters, evolve.csv, hyp_evolve.yaml, evolve.png."""

from __future__ import annotations

import numpy as np
import pytest

import train
from tests.test_train import _opts
from utils.errors import UserError
from utils.hyp import Hyp, load_hyp
from utils.training import evolve as ev


def test_mutation_respects_limits_and_selects_the_fittest():
    base = Hyp()
    rows = np.zeros((3, len(ev.RESULT_KEYS) + len(ev.HYP_KEYS)))
    d = base.to_dict()
    for r, (m, lr) in enumerate([(0.1, 0.001), (0.5, 0.02), (0.2, 0.004)]):
        rows[r, 3] = m  # mAP50-95: row 1 is by far the fittest
        rows[r, len(ev.RESULT_KEYS):] = [d[k] for k in ev.HYP_KEYS]
        rows[r, len(ev.RESULT_KEYS) + ev.HYP_KEYS.index("plugin_lr")] = lr
    assert ev.mutate(base, rows[:0], np.random.default_rng(0)) is base  # no history: the hyp file itself
    children = [ev.mutate(base, rows, np.random.default_rng(s)) for s in range(40)]
    for c in children:
        for k, (gain, lo, hi) in ev.META.items():
            v = getattr(c, k)
            assert (lo <= v <= hi) if gain else v == getattr(base, k), (k, v)
    # parents are chosen in proportion to fitness above the worst: mostly the plugin_lr 0.02 row
    near = [abs(np.log(c.plugin_lr / 0.02)) < abs(np.log(c.plugin_lr / 0.004)) for c in children]
    assert sum(near) > 25
    assert len({c.lr0 for c in children}) > 20  # mutated, differently per draw


def test_evolve_two_generations(tmp_path, log):
    opt = train.run(**_opts(tmp_path, weights="yolov5n.pt", cfg="yolov5n_biformer.yaml", epochs=1, evolve=2,
                            name="evo"))
    d = tmp_path / "runs" / "evo"
    assert opt.save_dir == d
    rows = ev.read_rows(d / "evolve.csv")
    assert rows.shape == (2, len(ev.RESULT_KEYS) + len(ev.HYP_KEYS))
    hyp0 = dict(zip(ev.HYP_KEYS, rows[0, len(ev.RESULT_KEYS):]))
    hyp1 = dict(zip(ev.HYP_KEYS, rows[1, len(ev.RESULT_KEYS):]))
    assert hyp0["plugin_lr"] == pytest.approx(0.003) and hyp0["lr0"] == pytest.approx(0.01)  # generation 1: the file
    assert any(hyp0[k] != hyp1[k] for k in ev.HYP_KEYS)  # generation 2: a mutation
    assert np.all(rows[:, 3] > 0)  # both trained and were validated
    best = load_hyp(d / "hyp_evolve.yaml")  # loadable with --hyp
    i = int(np.argmax(0.1 * rows[:, 2] + 0.9 * rows[:, 3]))
    assert best.lr0 == pytest.approx(rows[i, len(ev.RESULT_KEYS) + ev.HYP_KEYS.index("lr0")], rel=1e-4)
    assert (d / "evolve.png").is_file()  # drawn with --noplots too: it is the search's result
    assert opt.results[3] == pytest.approx(rows[i, 3])
    # continuing the search in the same folder runs only the missing generations
    opt = train.run(**_opts(tmp_path, epochs=1, evolve=2, name="evo", exist_ok=True))
    assert ev.read_rows(d / "evolve.csv").shape[0] == 2
    # a search killed while appending (half a row at the end): the row is skipped with a warning, its generation
    # runs again, and the file is whole afterwards
    text = (d / "evolve.csv").read_text()
    (d / "evolve.csv").write_text(text[: len(text) - 60])
    assert ev.read_rows(d / "evolve.csv").shape[0] == 1
    assert any("line 3 is not a complete row" in m for m in log)
    train.run(**_opts(tmp_path, epochs=1, evolve=2, name="evo", exist_ok=True))
    lines = (d / "evolve.csv").read_text().splitlines()
    assert len(lines) == 3 and all(len(x.split(",")) == len(ev.RESULT_KEYS) + len(ev.HYP_KEYS) for x in lines)
    with pytest.raises(UserError, match="--evolve cannot be combined with --resume"):
        train.run(**_opts(tmp_path, evolve=2, resume=str(d / "weights" / "last.pt")))
