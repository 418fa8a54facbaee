"""Finding, reading and checking a split's images and YOLO-format labels, with a cache of the result.

Labels are found by YOLOv5's rule: the last `/images/` in an image path becomes `/labels/` and the suffix
`.txt` (`data/coco128/images/train2017/x.jpg` -> `data/coco128/labels/train2017/x.txt`).

A label file holds one object per line, `class cx cy w h`, coordinates normalized to [0, 1]. Checks:
  * 5 columns (a polygon line `class x1 y1 x2 y2 ...` with >= 3 points becomes its bounding box, as in YOLOv5);
  * the class id is a non-negative integer, and below nc when the number of classes is known;
  * cx, cy, w, h in [0, 1]. Unlike YOLOv5, an overshoot up to COORD_TOL (1e-3, float rounding in converters)
    is clipped rather than rejected; anything further out makes the file corrupt;
  * duplicate rows are dropped with a warning. A missing or empty file makes the image a background.
A corrupt label file or image skips that image with a warning naming the file and the reason.

Images must open with PIL, be at least 10 px on each side and at most MAX_PIXELS in all (PIL's decompression-bomb
limit: a 388 KB PNG may hold 20000x20000 pixels, 1.2 GB decoded), and have a supported suffix. Their shape is
recorded after EXIF orientation. `imread_bgr` reads any of them as 3-channel 8-bit BGR with the EXIF
orientation applied (grayscale replicated, alpha dropped, 16-bit scaled to 8-bit).

A split lists each real file once: folders are walked following symlinked sub-folders but entering each real
folder once (a link back up the tree is skipped with a warning), and further paths to a file already listed
(symlinks, hard links, a repeated line of a .txt list) are dropped with a warning.

The result of a scan is cached beside the labels (`labels/train2017.cache`) as a NumPy .npz archive of plain
arrays (read with allow_pickle=False), keyed by a hash of every image and label file's path, size and mtime. It
records the number of classes the split was last checked against, so that a loader given no nc (train.py's
validation loader of the training split) applies the same class check as the one that was.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.files import atomic_write
from utils.log import LOGGER
from utils.errors import UserError

__all__ = [
    "IMG_FORMATS", "VID_FORMATS", "COORD_TOL", "CACHE_VERSION", "MAX_PIXELS", "LabelError", "LabelScan",
    "imread_bgr", "oversize", "exif_size", "img2label_paths", "list_image_files", "read_label_file", "verify_image",
    "verify_image_label", "scan_labels", "label_cache_path", "files_hash",
]

IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
VID_FORMATS = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv")
COORD_TOL = 1e-3  # normalized coordinates up to this far outside [0, 1] are clipped instead of rejected
CACHE_VERSION = 2  # 2: records the number of classes the labels were last checked against
MAX_PIXELS = 2 * 89_478_485  # PIL's DecompressionBombError threshold (2 * its default Image.MAX_IMAGE_PIXELS)
NUM_THREADS = min(8, max(2, os.cpu_count() or 1))  # scanning waits on files as much as on the CPU
_EXIF_ORIENTATION = 0x0112
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"  # JPEG start- and end-of-image markers
_EXIF_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error)


class LabelError(ValueError):
    """A label file that cannot be used; the message says why."""


# ----------------------------------------------------------------------------------------------- images
def _pil_to_bgr(im: Image.Image) -> np.ndarray:
    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16"):
        gray = (np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8)  # 16-bit -> 8-bit keeps the top byte
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])


def oversize(path: str | Path) -> str:
    """Why the image at `path` is too large to decode (more than MAX_PIXELS by its header), or ''.

    Only the header is read; a file PIL cannot identify is left to the decoder."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(str(path)) as im:
                w, h = im.size
    except Image.DecompressionBombError as e:  # PIL's own limit (the same unless someone lowered it)
        n = re.search(r"\((\d+) pixels\)", str(e))
        return f"image too large: {int(n[1]):,} pixels, over the limit of {MAX_PIXELS:,}" if n else f"{e}"
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return ""
    if w * h > MAX_PIXELS:
        return f"image too large: {w}x{h} = {w * h:,} pixels, over the limit of {MAX_PIXELS:,}"
    return ""


def _imdecode(buf: np.ndarray) -> np.ndarray | None:
    """OpenCV's decode (EXIF orientation applied, 16 -> 8 bit); a JPEG cut before its end-of-image marker, which
    OpenCV's libjpeg rejects outright, is decoded with the marker appended: the same pixels when only the marker
    was lost, grey below the cut otherwise (as YOLOv5 restores such files)."""
    if not buf.size:
        return None
    im = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if im is None and buf[:2].tobytes() == _JPEG_SOI and buf[-2:].tobytes() != _JPEG_EOI:
        im = cv2.imdecode(np.concatenate((buf, np.frombuffer(_JPEG_EOI, np.uint8))), cv2.IMREAD_COLOR)
    return im


def imread_bgr(path: str | Path) -> np.ndarray | None:
    """The image at `path` as (H, W, 3) uint8 BGR with EXIF orientation applied, or None if unreadable or
    larger than MAX_PIXELS (checked from the header, before decoding)."""
    if oversize(path):
        return None
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    im = _imdecode(buf)
    if im is not None:
        return im
    try:  # formats OpenCV was built without
        with Image.open(str(path)) as pim:
            return _pil_to_bgr(pim)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def exif_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of a PIL image after its EXIF orientation is applied."""
    w, h = img.size
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except _EXIF_ERRORS:
        return w, h
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def verify_image(im_file: str) -> tuple[tuple[int, int], str]:
    """((width, height), warning or '') for a usable image; raises ValueError saying why one is not."""
    try:
        with Image.open(im_file) as im:
            im.verify()  # checks the file's structure; the image cannot be used after this
            fmt = (im.format or "").lower()
        with Image.open(im_file) as im:
            shape = exif_size(im)
    except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError, *_EXIF_ERRORS) as e:
        raise UserError(oversize(im_file) or f"cannot read image: {e}") from e
    if fmt not in IMG_FORMATS:
        raise UserError(f"unsupported image format {fmt or '?'}; supported: {', '.join(IMG_FORMATS)}")
    if shape[0] < 10 or shape[1] < 10:
        raise UserError(f"image size {shape[0]}x{shape[1]} is under 10 pixels")
    if shape[0] * shape[1] > MAX_PIXELS:  # when PIL's own limit was raised or switched off
        raise UserError(oversize(im_file))
    note = ""
    if fmt in ("jpeg", "jpg", "mpo"):
        with open(im_file, "rb") as f:
            f.seek(-2, 2)
            if f.read() != _JPEG_EOI:
                if imread_bgr(im_file) is None:
                    raise UserError("truncated JPEG that cannot be decoded")
                note = "truncated JPEG (no end marker), used as decoded"
    return shape, note


# ----------------------------------------------------------------------------------------------- files
def img2label_paths(im_files: list[str]) -> list[str]:
    """YOLOv5's rule: the last /images/ becomes /labels/, the suffix .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return [sb.join(x.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt" for x in im_files]


def _read_list_file(txt: Path) -> list[str]:
    """Image paths listed one per line; relative ones are relative to the list's folder ('./x' as YOLOv5)."""
    out = []
    for line in txt.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            p = Path(line).expanduser()
            out.append(str(p if p.is_absolute() else (txt.parent / p).resolve()))
    return out


def _folder_files(root: Path, prefix: str) -> list[str]:
    """Files under `root` (hidden ones excepted), following symlinked folders but entering each real folder once:
    a link back up the tree (a loop) would otherwise list every image again at every level."""
    files, seen = [], set()
    for folder, subs, names in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            LOGGER.warning(f"{prefix}WARNING: skipping {folder}: a link to a folder already listed (a symlink loop?)")
            subs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        subs[:] = sorted(d for d in subs if not d.startswith("."))
        files += [os.path.join(folder, n) for n in names if not n.startswith(".") and "." in n]
    return files


def _unique_files(files: list[str], prefix: str) -> list[str]:
    """`files` with each real file once (the first path to it), a warning naming what was dropped."""
    out, seen, dropped = [], {}, []
    for f in files:
        try:
            st = os.stat(f)
            key = (st.st_dev, st.st_ino)
        except OSError:  # a dangling link: kept, the scan reports it
            key = f
        if key in seen:
            dropped.append(f"{f} (= {seen[key]})")
        else:
            seen[key] = f
            out.append(f)
    if dropped:
        more = " ..." if len(dropped) > 3 else ""
        LOGGER.warning(f"{prefix}WARNING: {len(dropped)} image paths skipped, each the same file as one listed before "
                       f"(symlinks, hard links or a repeated line): {', '.join(dropped[:3])}{more}")
    return out


def list_image_files(path: str | Path | list | tuple, prefix: str = "") -> list[str]:
    """Sorted image files of a split: folders (searched recursively), .txt lists, image files, or a list.
    Each real file is listed once, however many paths (symlinks, loops, repeated lines) lead to it."""
    entries = path if isinstance(path, (list, tuple)) else [path]
    files: list[str] = []
    for entry in entries:
        p = Path(entry).expanduser()
        if p.is_dir():
            files += _folder_files(p, prefix)
        elif p.is_file() and p.suffix.lower() == ".txt":
            files += _read_list_file(p)
        elif p.is_file():
            files.append(str(p))
        else:
            raise FileNotFoundError(f"{prefix}{p} does not exist; a split is a folder of images, a .txt list of "
                                    f"image paths, or an image file")
    im_files = _unique_files(sorted(x.replace("/", os.sep) for x in files
                                    if x.rsplit(".", 1)[-1].lower() in IMG_FORMATS), prefix)
    if not im_files:
        where = ", ".join(str(e) for e in entries)
        raise FileNotFoundError(f"{prefix}no images found in {where}; supported formats: {', '.join(IMG_FORMATS)}")
    return im_files


# ----------------------------------------------------------------------------------------------- labels
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
