"""Hyperparameter evolution as YOLOv5's `train.py --evolve`: a genetic search over the hyp file's keys.

Each generation picks a parent among the 5 fittest rows of evolve.csv (chance by fitness), mutates every key
whose gain is non-zero (with probability 0.8, by a factor 1 + gain * N(0, 1) * U(0, 1) * 0.2 clipped to 0.3..3),
clips the result to the key's limits, trains with it (validating only the final epoch) and appends the final
metrics and the hyperparameters to evolve.csv. Fitness is YOLOv5's: 0.1 mAP50 + 0.9 mAP50-95. The search space
includes the plug-in keys (`plugin_lr`, `plugin_weight_decay`). Mutations draw from a generator seeded by
--seed and the generation, so a search repeats; a killed search continues where evolve.csv stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from utils.errors import UserError
from utils.files import atomic_write
from utils.hyp import Hyp
from utils.log import LOGGER, colorstr
from utils.metrics import fitness
from utils.plots import new_figure, save_figure

__all__ = ["META", "RESULT_KEYS", "search", "mutate", "append_row", "read_rows", "best_hyp", "write_best",
           "plot_evolve"]

# key: (mutation gain, lower limit, upper limit); gain 0 keeps the key as the hyp file sets it
META = {
    "lr0": (1, 1e-5, 1e-1), "lrf": (1, 0.01, 1.0), "momentum": (0.3, 0.6, 0.98), "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95), "warmup_bias_lr": (1, 0.0, 0.2),
    "box": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0), "obj": (1, 0.2, 4.0),
    "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0),
    "anchors": (0, 0.0, 10.0),  # the anchor count changes the head's shape: not mutated
    "fl_gamma": (0, 0.0, 2.0), "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0), "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001), "flipud": (1, 0.0, 1.0), "fliplr": (0, 0.0, 1.0), "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0), "copy_paste": (1, 0.0, 1.0),
    "plugin_lr": (1, 1e-4, 0.03), "plugin_weight_decay": (1, 0.0, 0.1),
}
RESULT_KEYS = ("metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
               "val/box_loss", "val/obj_loss", "val/cls_loss")
HYP_KEYS = tuple(META)


def read_rows(csv: Path) -> np.ndarray:
    """evolve.csv as an array (generations, len(RESULT_KEYS) + len(HYP_KEYS)); empty when there is none."""
    csv, n = Path(csv), len(RESULT_KEYS) + len(HYP_KEYS)
    if not csv.is_file():
        return np.zeros((0, n))
    rows = []
    lines = csv.read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    for i, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        try:
            row = [float(x) for x in line.split(",")]
        except ValueError:
            row = []
        if len(row) != n:  # a row cut short by a kill or a full disk: that generation runs again
            LOGGER.warning(f"WARNING: {csv} line {i} is not a complete row of {n} numbers; skipped")
            continue
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(-1, n)


def mutate(hyp: Hyp, rows: np.ndarray, rng: np.random.Generator, parents: int = 5) -> Hyp:
    """A child of the fittest `parents` rows of evolve.csv (none yet: `hyp` itself, unmutated)."""
    d = hyp.to_dict()
    if len(rows) == 0:
        return hyp
    fit = fitness(rows)
    top = rows[np.argsort(-fit)][:parents]
    w = fitness(top) - fitness(top).min() + 1e-6
    parent = top[rng.choice(len(top), p=w / w.sum())]
    gains = np.array([META[k][0] for k in HYP_KEYS], dtype=float)
    v = np.ones(len(HYP_KEYS))
    while np.all(v == 1) and gains.any():  # mutate until something changes
        v = (gains * (rng.random(len(gains)) < 0.8) * rng.standard_normal(len(gains)) * rng.random() * 0.2
             + 1).clip(0.3, 3.0)
    for i, k in enumerate(HYP_KEYS):
        gain, lo, hi = META[k]
        base = float(parent[len(RESULT_KEYS) + i])
        d[k] = round(float(np.clip(base * v[i], lo, hi)), 5) if gain else d[k]
    return Hyp.from_dict({k: v for k, v in d.items() if k != "label_smoothing"}, source="evolve")


def append_row(csv: Path, results, hyp: Hyp) -> None:
    """One generation: the final (P, R, mAP50, mAP50-95, val losses) and its hyperparameters."""
    csv = Path(csv)
    d = hyp.to_dict()
    vals = [float(x) for x in list(results)[:len(RESULT_KEYS)]] + [float(d[k]) for k in HYP_KEYS]
    header = ",".join(f"{k:>20s}" for k in RESULT_KEYS + HYP_KEYS) + "\n"
    body = "".join(",".join(f"{x:20.5g}" for x in r) + "\n" for r in read_rows(csv)) if csv.is_file() else ""
    text = header + body + ",".join(f"{x:20.5g}" for x in vals) + "\n"
    atomic_write(csv, lambda f: f.write(text.encode("utf-8")))  # never half a row, whenever it is killed


def best_hyp(rows: np.ndarray) -> tuple[int, dict]:
    """(index, hyperparameters) of the fittest generation."""
    i = int(np.argmax(fitness(rows)))
    return i, {k: float(rows[i, len(RESULT_KEYS) + j]) for j, k in enumerate(HYP_KEYS)}


def write_best(csv: Path, out: Path, base: Hyp) -> Path:
    """hyp_evolve.yaml: the fittest generation's hyperparameters, loadable with --hyp."""
    rows = read_rows(csv)
    i, hyp = best_hyp(rows)
    d = {**base.to_dict(), **hyp}
    d.pop("label_smoothing", None)
    head = (f"# Hyperparameter evolution: {len(rows)} generations, best generation {i} with fitness "
            f"{fitness(rows)[i]:.5f} (0.1 mAP50 + 0.9 mAP50-95)\n"
            f"# {', '.join(f'{k}={rows[i, j]:.5g}' for j, k in enumerate(RESULT_KEYS))}\n"
            f"# python train.py --hyp {Path(out).name} ...\n\n")
    Path(out).write_text(head + yaml.safe_dump({k: round(v, 5) for k, v in d.items()}, sort_keys=False))
    return Path(out)


def plot_evolve(csv: Path) -> Path | None:
    """evolve.png: fitness against each mutated hyperparameter, one panel each, the best marked."""
    rows = read_rows(csv)
    if len(rows) == 0:
        return None
    keys = [k for k in HYP_KEYS if META[k][0]]
    fit = fitness(rows)
    i = int(np.argmax(fit))
    cols = 6
    fig = new_figure(figsize=(2.5 * cols, 2.2 * ((len(keys) + cols - 1) // cols)))
    for n, k in enumerate(keys):
        j = len(RESULT_KEYS) + HYP_KEYS.index(k)
        ax = fig.add_subplot((len(keys) + cols - 1) // cols, cols, n + 1)
        ax.scatter(rows[:, j], fit, c=fit, cmap="viridis", s=12, alpha=0.8, edgecolors="none")
        ax.plot(rows[i, j], fit[i], "k+", markersize=12)
        ax.set_title(f"{k} = {rows[i, j]:.3g}", fontsize=8)
        ax.tick_params(labelsize=6)
    out = Path(csv).with_suffix(".png")
    save_figure(fig, out, dpi=120)
    LOGGER.info(f"Saved {out}")
    return out


def summary(csv: Path, save_dir: Path) -> str:
    rows = read_rows(csv)
    i, _ = best_hyp(rows)
    return (f"Hyperparameter evolution finished: {len(rows)} generations, best {i} (fitness "
            f"{fitness(rows)[i]:.4f})\nResults saved to {colorstr('bold', str(save_dir))}\n"
            f"Usage example: python train.py --hyp {Path(save_dir) / 'hyp_evolve.yaml'}")


def search(train_fn: Callable[[Hyp], tuple], base: Hyp, generations: int, save_dir: Path, seed: int = 0) -> tuple:
    """--evolve N: generations of `train_fn(hyp)` (the final (P, R, mAP50, mAP50-95, box, obj, cls)), each from a
    mutation of the fittest so far, into save_dir (evolve.csv, hyp_evolve.yaml, evolve.png). A generation that
    fails (a non-finite loss) is recorded with zero metrics and the search goes on; a search continues where its
    evolve.csv stopped. Returns the fittest generation's results."""
    if generations < 1:
        raise UserError(f"--evolve {generations}: the number of generations must be >= 1")
    save_dir.mkdir(parents=True, exist_ok=True)
    csv = save_dir / "evolve.csv"
    for g in range(len(read_rows(csv)), generations):
        hyp = mutate(base, read_rows(csv), np.random.default_rng([seed, g]))
        LOGGER.info(f"\n{colorstr('evolve:')} generation {g + 1}/{generations}: " +
                    ", ".join(f"{k}={v:g}" for k, v in hyp.to_dict().items() if META.get(k, (0,))[0]))
        try:
            results = train_fn(hyp)
        except FloatingPointError as e:  # one bad mutation does not end the search
            LOGGER.warning(f"WARNING: evolve generation {g + 1} failed ({e}); recorded with zero metrics")
            results = (0.0,) * len(RESULT_KEYS)
        append_row(csv, results, hyp)
        write_best(csv, save_dir / "hyp_evolve.yaml", base)
    plot_evolve(csv)
    rows = read_rows(csv)
    LOGGER.info(summary(csv, save_dir))
    return tuple(float(x) for x in rows[best_hyp(rows)[0], :len(RESULT_KEYS)])
