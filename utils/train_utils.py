"""Bookkeeping of a training run: seeds, frozen layers, image size, results.csv and the checkpoint files."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from utils.checkpoint import save_checkpoint
from utils.log import LOGGER

__all__ = ["RESULTS_KEYS", "init_seeds", "seed_epoch", "freeze_layers", "latest_run",
           "ResultsLog", "Checkpoints", "labels_to_class_weights", "image_weights",
           "sample_image_indices"]

RESULTS_KEYS = ("train/box_loss", "train/obj_loss", "train/cls_loss",
                "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
                "val/box_loss", "val/obj_loss", "val/cls_loss", "x/lr0", "x/lr1", "x/lr2")


def init_seeds(seed: int = 0, deterministic: bool = False) -> None:
    """Seed random, NumPy and torch; with `deterministic` on CUDA also ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        if deterministic:
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)


def seed_epoch(loader, seed: int, rank: int, epoch: int) -> None:
    """Make epoch `epoch` depend on (seed, rank, epoch) only: its data order, the augmentations drawn in the
    loader's workers or in this process, and anything else random. A resumed run then repeats exactly what
    the uninterrupted run did in that epoch."""
    s = int(np.random.SeedSequence([seed, max(rank, 0) + 1, epoch]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(s)  # sampler order and the workers' base seed
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)  # DistributedSampler: the same order on every rank
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        # persistent workers carry their random state over from the previous epoch; start them afresh so
        # that they are seeded from this epoch's generator state
        it._shutdown_workers()
        loader._iterator = None


def freeze_layers(model: nn.Module, freeze: list[int]) -> list[str]:
    """--freeze: one number N freezes layers 0..N-1, several numbers freeze those layers. Returns the frozen names."""
    prefixes = [f"model.{x}." for x in (freeze if len(freeze) > 1 else range(freeze[0]))]
    frozen = []
    for k, v in model.named_parameters():
        v.requires_grad = True
        if any(x in k for x in prefixes):
            LOGGER.info(f"freezing {k}")
            v.requires_grad = False
            frozen.append(k)
    return frozen


def latest_run(project: str | Path) -> Path | None:
    """The most recently written weights/last.pt under `project` (for a bare --resume)."""
    runs = list(Path(project).glob("*/weights/last.pt"))
    return max(runs, key=os.path.getmtime) if runs else None


class ResultsLog:
    """results.csv with YOLOv5's columns, one row per epoch."""

    def __init__(self, file: Path):
        self.file = Path(file)

    def append(self, epoch: int, vals: list) -> None:
        vals = [float(v) for v in vals]
        n = len(RESULTS_KEYS) + 1
        header = "" if self.file.exists() else ("%20s," * n % ("epoch", *RESULTS_KEYS)).rstrip(",") + "\n"
        with open(self.file, "a", encoding="utf-8") as f:
            f.write(header + ("%20.5g," * n % (epoch, *vals)).rstrip(",") + "\n")

    def truncate(self, start_epoch: int) -> None:
        """Drop the rows of epochs >= start_epoch (a resumed run writes them again)."""
        if not self.file.exists():
            return
        if start_epoch <= 0:
            self.file.unlink()
            return
        lines = self.file.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = lines[:1] + [ln for ln in lines[1:] if ln.strip() and float(ln.split(",")[0]) < start_epoch]
        self.file.write_text("".join(keep), encoding="utf-8")

    def read(self) -> dict[str, np.ndarray]:
        """Column name -> float array; a missing or empty cell reads as NaN, an empty file as {}."""
        import csv

        with open(self.file, newline="", encoding="utf-8") as f:
            rows = [[c.strip() for c in r] for r in csv.reader(f) if r and any(c.strip() for c in r)]
        if not rows:
            return {}
        header, body = rows[0], rows[1:]
        return {name: np.array([float(r[j]) if j < len(r) and r[j] else np.nan for r in body], dtype=np.float64)
                for j, name in enumerate(header) if name}


class Checkpoints:
    """weights/last.pt, best.pt and epochN.pt of a run, and its results.csv."""

    def __init__(self, weights_dir: Path, results_file: Path):
        self.dir = Path(weights_dir)
        self.last, self.best = self.dir / "last.pt", self.dir / "best.pt"
        self.results = ResultsLog(results_file)
        for f in self.dir.glob(".*.pt.*.tmp"):  # left by a save that was killed half-way
            LOGGER.info(f"removing {f}, an unfinished checkpoint of a killed save")
            f.unlink(missing_ok=True)

    def check_writable(self, checkpoint_bytes: int) -> None:
        """Before the first epoch: the weights folder takes a file, and has room for last.pt and best.pt with
        their temporary copies (4 x checkpoint_bytes). Raises OSError naming the folder otherwise."""
        probe = self.dir / ".write_probe.tmp"
        try:
            probe.write_bytes(b"0")
            probe.unlink()
        except OSError as e:
            raise OSError(f"cannot write checkpoints into {self.dir}: {e.strerror or e}") from None
        free = shutil.disk_usage(self.dir).free
        if free < 4 * checkpoint_bytes:
            raise OSError(f"{self.dir}: {free / 1e6:.1f} MB free, checkpoints need about "
                          f"{4 * checkpoint_bytes / 1e6:.1f} MB; free some space or pass another --project")

    def save(self, ckpt: dict, is_best: bool, period: int, epoch: int) -> None:
        save_checkpoint(ckpt, self.last)
        if is_best:
            save_checkpoint(ckpt, self.best)
        if period > 0 and epoch % period == 0:
            save_checkpoint(ckpt, self.dir / f"epoch{epoch}.pt")


def labels_to_class_weights(labels: list[np.ndarray], nc: int) -> np.ndarray:
    """Inverse class frequencies of the training labels, normalised to sum 1 (a class without labels counts 1)."""
    classes = np.concatenate([lb[:, 0] for lb in labels if len(lb)]).astype(int) if any(len(lb) for lb in labels) \
        else np.zeros(0, dtype=int)
    counts = np.bincount(classes, minlength=nc)[:nc].astype(np.float64)
    w = 1 / np.where(counts == 0, 1, counts)
    return w / w.sum()


def image_weights(labels: list[np.ndarray], nc: int, maps: np.ndarray) -> np.ndarray:
    """--image-weights: per image, the sum over its labels of class weight (1 - class mAP)^2, YOLOv5's rule:
    images of rare and badly detected classes are drawn more often. An image without labels weighs 0 unless
    every image does."""
    cw = labels_to_class_weights(labels, nc) * (1 - np.asarray(maps, dtype=np.float64)[:nc]) ** 2
    w = np.array([cw[lb[:, 0].astype(int)].sum() if len(lb) else 0.0 for lb in labels])
    return w if w.sum() > 0 else np.ones(len(labels))


def sample_image_indices(labels: list[np.ndarray], nc: int, maps: np.ndarray, seed: int, epoch: int) -> list[int]:
    """The images of one --image-weights epoch: len(labels) draws with replacement, by `image_weights`, from a
    generator seeded by (seed, epoch) so that a resumed run draws the same."""
    w = image_weights(labels, nc, maps)
    rng = np.random.default_rng([seed, epoch])
    return rng.choice(len(labels), size=len(labels), p=w / w.sum()).tolist()
