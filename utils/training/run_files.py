"""The files of a training run: results.csv (ResultsLog), weights/last.pt, best.pt, epochN.pt (Checkpoints), and
the latest run to --resume."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np

from utils.checkpoint import save_checkpoint
from utils.log import LOGGER

__all__ = ["RESULTS_KEYS", "latest_run", "ResultsLog", "Checkpoints"]

RESULTS_KEYS = ("train/box_loss", "train/obj_loss", "train/cls_loss",
                "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
                "val/box_loss", "val/obj_loss", "val/cls_loss", "x/lr0", "x/lr1", "x/lr2")


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
