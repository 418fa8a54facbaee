"""train.py --image-weights: images drawn by the class weights of their labels and (1 - class mAP)^2."""

from __future__ import annotations

import numpy as np

__all__ = ["labels_to_class_weights", "image_weights", "sample_image_indices"]


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
