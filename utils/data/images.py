"""A split's image files: listing them, checking them and decoding them.

Images must open with PIL, be at least 10 px on each side and at most MAX_PIXELS in all (PIL's decompression-bomb
limit: a 388 KB PNG may hold 20000x20000 pixels, 1.2 GB decoded), and have a supported suffix. Their shape is
recorded after EXIF orientation. `imread_bgr` reads any of them as 3-channel 8-bit BGR with the EXIF
orientation applied (grayscale replicated, alpha dropped, 16-bit scaled to 8-bit).

A split lists each real file once: folders are walked following symlinked sub-folders but entering each real
folder once (a link back up the tree is skipped with a warning), and further paths to a file already listed
(symlinks, hard links, a repeated line of a .txt list) are dropped with a warning.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.errors import UserError
from utils.log import LOGGER

__all__ = ["IMG_FORMATS", "VID_FORMATS", "MAX_PIXELS", "imread_bgr", "oversize", "exif_size", "verify_image",
           "list_image_files"]


IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")


VID_FORMATS = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv")


MAX_PIXELS = 2 * 89_478_485  # PIL's DecompressionBombError threshold (2 * its default Image.MAX_IMAGE_PIXELS)


_EXIF_ORIENTATION = 0x0112
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"  # JPEG start- and end-of-image markers


_EXIF_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error)


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
