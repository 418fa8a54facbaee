"""Seeding: the whole process once (init_seeds), and each epoch from (seed, rank, epoch) so that a resumed run
repeats what the uninterrupted run did (seed_epoch)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["init_seeds", "seed_epoch"]


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
