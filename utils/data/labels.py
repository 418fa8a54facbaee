"""Reading and checking a split's YOLO-format labels, with a cache of the result.

Labels are found by YOLOv5's rule: the last `/images/` in an image path becomes `/labels/` and the suffix
`.txt` (`data/coco128/images/train2017/x.jpg` -> `data/coco128/labels/train2017/x.txt`).

A label file holds one object per line, `class cx cy w h`, coordinates normalized to [0, 1]. Checks:
  * 5 columns (a polygon line `class x1 y1 x2 y2 ...` with >= 3 points becomes its bounding box, as in YOLOv5);
  * the class id is a non-negative integer, and below nc when the number of classes is known;
  * cx, cy, w, h in [0, 1]. Unlike YOLOv5, an overshoot up to COORD_TOL (1e-3, float rounding in converters)
    is clipped rather than rejected; anything further out makes the file corrupt;
  * duplicate rows are dropped with a warning. A missing or empty file makes the image a background.
A corrupt label file or image (utils.data.images.verify_image) skips that image with a warning naming the file
and the reason.

The result of a scan is cached beside the labels (`labels/train2017.cache`) as a NumPy .npz archive of plain
arrays (read with allow_pickle=False), keyed by a hash of every image and label file's path, size and mtime. It
records the number of classes the split was last checked against, so that a loader given no nc (train.py's
validation loader of the training split) applies the same class check as the one that was.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from utils.boxes import xyxy2xywh
from utils.data.images import list_image_files, verify_image
from utils.files import atomic_write
from utils.log import LOGGER

__all__ = [
    "COORD_TOL", "CACHE_VERSION", "LabelError", "LabelScan", "img2label_paths", "read_label_file",
    "verify_image_label", "scan_labels", "label_cache_path", "files_hash", "save_one_txt", "classes_present",
]

COORD_TOL = 1e-3  # normalized coordinates up to this far outside [0, 1] are clipped instead of rejected
CACHE_VERSION = 2  # 2: records the number of classes the labels were last checked against
NUM_THREADS = min(8, max(2, os.cpu_count() or 1))  # scanning waits on files as much as on the CPU


class LabelError(ValueError):
    """A label file that cannot be used; the message says why."""


def img2label_paths(im_files: list[str]) -> list[str]:
    """YOLOv5's rule: the last /images/ becomes /labels/, the suffix .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return [sb.join(x.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt" for x in im_files]


def _parse_row(parts: list[str], line_no: int) -> list[float]:
    try:
        values = [float(v) for v in parts]
    except ValueError as e:
        raise LabelError(f"line {line_no}: non-numeric value ({e})") from e
    if len(values) == 5:
        return values
    if len(values) >= 7 and len(values) % 2 == 1:  # polygon: class x1 y1 x2 y2 ... -> its box
        xy = np.array(values[1:]).reshape(-1, 2)
        (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
        return [values[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    raise LabelError(f"line {line_no}: {len(values)} columns, expected 5 (class cx cy w h)")


def read_label_file(lb_file: str) -> tuple[np.ndarray | None, str]:
    """(labels float32 (n, 5) [cls, cx, cy, w, h], warning or '') from a label file; None if it is missing.

    Raises LabelError for a file that cannot be used.
    """
    if not os.path.isfile(lb_file):
        return None, ""
    with open(lb_file, encoding="utf-8", errors="replace") as f:
        rows = [(i + 1, line.split()) for i, line in enumerate(f.read().splitlines()) if line.strip()]
    if not rows:
        return np.zeros((0, 5), np.float32), ""
    lb = np.array([_parse_row(parts, i) for i, parts in rows], dtype=np.float32)
    if not np.isfinite(lb).all():
        raise LabelError("non-finite values (nan/inf)")
    cls = lb[:, 0]
    bad = (cls < 0) | (cls != np.round(cls))
    if bad.any():
        raise LabelError(f"class ids must be non-negative integers, got {cls[bad].tolist()}")
    xywh = lb[:, 1:]
    out = (xywh < -COORD_TOL) | (xywh > 1 + COORD_TOL)
    if out.any():
        raise LabelError(f"non-normalized or out of bounds coordinates {xywh[out].tolist()} (valid: 0..1)")
    np.clip(xywh, 0, 1, out=xywh)
    _, keep = np.unique(lb, axis=0, return_index=True)
    if len(keep) < len(lb):
        note = f"{len(lb) - len(keep)} duplicate labels removed"
        return lb[np.sort(keep)], note
    return lb, ""


class ScanItem(NamedTuple):
    im_file: str
    labels: np.ndarray | None  # None when the image is corrupt
    shape: tuple[int, int]  # (w, h)
    missing: int
    found: int
    empty: int
    corrupt: int
    msg: str


def verify_image_label(im_file: str, lb_file: str) -> ScanItem:
    """Check one image and its label file; never raises for a bad file, it reports it as corrupt."""
    try:
        shape, note = verify_image(im_file)
        lb, lb_note = read_label_file(lb_file)
    except ValueError as e:  # LabelError is a ValueError
        what = lb_file if isinstance(e, LabelError) else im_file
        return ScanItem(im_file, None, (0, 0), 0, 0, 0, 1, f"WARNING: {what}: ignoring corrupt image/label: {e}")
    notes = "; ".join(n for n in (note, lb_note) if n)
    msg = f"WARNING: {im_file}: {notes}" if notes else ""
    if lb is None:
        return ScanItem(im_file, np.zeros((0, 5), np.float32), shape, 1, 0, 0, 0, msg)
    return ScanItem(im_file, lb, shape, 0, 1, int(len(lb) == 0), 0, msg)


# ----------------------------------------------------------------------------------------------- scan + cache
@dataclass
class LabelScan:
    """The usable images of a split with their labels and (w, h) shapes, and what was found on the way."""

    im_files: list[str]
    labels: list[np.ndarray]
    shapes: np.ndarray  # int (n, 2) of (w, h) after EXIF orientation
    missing: int = 0
    found: int = 0
    empty: int = 0
    corrupt: int = 0
    msgs: list[str] = field(default_factory=list)
    nc: int = -1  # the number of classes these labels were last checked against (-1: never)

    @property
    def backgrounds(self) -> int:
        return sum(len(lb) == 0 for lb in self.labels)


def files_hash(files: list[str]) -> str:
    """A hash of the files' paths, sizes and modification times (a missing file hashes as such)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()


def label_cache_path(split: str | Path | list | tuple, label_files: list[str]) -> Path:
    """`labels/train2017.cache` beside the first label folder (or `list.cache` beside a .txt list)."""
    entries = [Path(e) for e in (split if isinstance(split, (list, tuple)) else [split])]
    if len(entries) == 1:
        p = entries[0]
        own = p.is_file() and p.suffix.lower() == ".txt"
        return (p if own else Path(label_files[0]).parent).with_suffix(".cache")
    tag = hashlib.sha256("\n".join(str(e.resolve()) for e in entries).encode()).hexdigest()[:8]
    return Path(label_files[0]).parent.with_suffix(f".{tag}.cache")  # several entries: one cache per list


def _save_cache(path: Path, scan: LabelScan, key: str, prefix: str) -> None:
    counts = np.array([len(lb) for lb in scan.labels], np.int64)
    arrays = dict(
        version=np.array(CACHE_VERSION), hash=np.array(key), im_files=np.array(scan.im_files, dtype=str),
        counts=counts, labels=np.concatenate(scan.labels, 0) if scan.labels else np.zeros((0, 5), np.float32),
        shapes=np.asarray(scan.shapes, np.int64).reshape(-1, 2), msgs=np.array(scan.msgs, dtype=str),
        results=np.array([scan.missing, scan.found, scan.empty, scan.corrupt], np.int64), nc=np.array(scan.nc),
    )
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:
        LOGGER.warning(f"{prefix}WARNING: cache folder {path.parent} is not writeable: {e}")


def _load_cache(path: Path, key: str) -> LabelScan | None:
    """The cached scan if it exists, is readable, and matches `key`; otherwise None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION or str(z["hash"]) != key:
                return None
            splits = np.cumsum(z["counts"])[:-1]
            labels = np.split(z["labels"].astype(np.float32), splits) if len(z["counts"]) else []
            missing, found, empty, corrupt = (int(v) for v in z["results"])
            return LabelScan([str(f) for f in z["im_files"]], labels, z["shapes"].astype(np.int64),
                             missing, found, empty, corrupt, [str(m) for m in z["msgs"]], int(z["nc"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _scan(im_files: list[str], label_files: list[str]) -> LabelScan:
    scan = LabelScan([], [], np.zeros((0, 2), np.int64))
    shapes = []
    with ThreadPool(NUM_THREADS) as pool:
        for item in pool.imap(lambda a: verify_image_label(*a), zip(im_files, label_files), chunksize=16):
            scan.missing += item.missing
            scan.found += item.found
            scan.empty += item.empty
            scan.corrupt += item.corrupt
            if item.msg:
                scan.msgs.append(item.msg)
            if item.labels is not None:
                scan.im_files.append(item.im_file)
                scan.labels.append(item.labels)
                shapes.append(item.shape)
    scan.shapes = np.array(shapes, np.int64).reshape(-1, 2)
    return scan


def _drop_bad_classes(scan: LabelScan, nc: int, prefix: str) -> None:
    """Move images whose labels hold class ids >= nc to the corrupt count, with a warning each."""
    keep = []
    for i, lb in enumerate(scan.labels):
        bad = lb[:, 0] >= nc
        if bad.any():
            lb_file = img2label_paths([scan.im_files[i]])[0]
            msg = (f"WARNING: {lb_file}: ignoring corrupt image/label: class ids "
                   f"{sorted(set(lb[bad, 0].astype(int).tolist()))} out of range; valid: 0..{nc - 1}")
            LOGGER.warning(f"{prefix}{msg}")
            scan.msgs.append(msg)
            scan.corrupt += 1
        else:
            keep.append(i)
    if len(keep) < len(scan.labels):
        scan.im_files = [scan.im_files[i] for i in keep]
        scan.labels = [scan.labels[i] for i in keep]
        scan.shapes = scan.shapes[keep]


def scan_labels(im_files: list[str], cache_path: Path | None = None, prefix: str = "",
                nc: int | None = None, check_classes: bool = True) -> LabelScan:
    """Check every image and label file of a split (from the cache when nothing changed) and report.

    Prints `Scanning <labels dir>... N images, M backgrounds, K corrupt` and one warning per corrupt file.
    `nc`: when given, label files with class ids >= nc make their image corrupt, and the cache records nc.
    Without it, the nc the cache recorded is applied: a split that training scanned with nc is read with
    the same check by a loader that was not given nc (a validation loader of the same split).
    `check_classes=False` (single-class training: every class becomes 0) checks no class ids against nc.
    """
    label_files = img2label_paths(im_files)
    key = files_hash(im_files + label_files)
    scan = _load_cache(cache_path, key) if cache_path else None
    from_cache = scan is not None
    stale = scan is None or (check_classes and nc is not None and nc != scan.nc)
    if scan is None:
        scan = _scan(im_files, label_files)
    if check_classes and nc is not None:
        scan.nc = nc
    if stale and cache_path:
        _save_cache(cache_path, scan, key, prefix)
    for msg in scan.msgs:  # stored without the prefix: a cache may serve several splits' loaders
        LOGGER.warning(f"{prefix}{msg}")
    if check_classes and scan.nc > 0:
        _drop_bad_classes(scan, scan.nc, prefix)
    where = cache_path.with_suffix("") if cache_path else Path(label_files[0]).parent
    LOGGER.info(f"{prefix}Scanning {where}... {len(scan.im_files)} images, {scan.backgrounds} backgrounds, "
                f"{scan.corrupt} corrupt{' (cached)' if from_cache else ''}")
    return scan


def save_one_txt(predn: torch.Tensor, save_conf: bool, shape: tuple[int, int], file: str | Path,
                 voc: bool = False) -> None:
    """Write detections (n, 6) [x1, y1, x2, y2, conf, cls] in pixels of an image of `shape` (h, w) to `file`
    as YOLO lines `cls cx cy w h [conf]`, normalized, or with `voc` as Pascal-VOC lines `cls x1 y1 x2 y2 [conf]` in
    pixels (detect.py --save-format 1). The file is written afresh: a run rewrites the labels an earlier run
    (--exist-ok) left there."""
    gn = torch.tensor(shape, dtype=torch.float32)[[1, 0, 1, 0]]
    lines = []
    for *xyxy, conf, cls in predn.tolist():
        box = xyxy if voc else (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
        line = (cls, *box, conf) if save_conf else (cls, *box)
        lines.append(("%g " * len(line)).rstrip() % line + "\n")
    Path(file).parent.mkdir(parents=True, exist_ok=True)
    with open(file, "w") as f:
        f.writelines(lines)


def classes_present(split) -> list[int]:
    """Class ids with at least one label in a split (folders / .txt lists / files, as DataConfig gives them); a
    label file that does not parse is skipped, as the loader skips it."""
    present: set[int] = set()
    for lb_file in img2label_paths(list_image_files(split)):
        try:
            lb, _ = read_label_file(lb_file)
        except LabelError:
            continue
        if lb is not None:
            present.update(int(c) for c in lb[:, 0])
    return sorted(present)
