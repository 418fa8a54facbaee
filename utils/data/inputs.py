"""One-call inference's inputs (utils.hub.AutoShape): a file path, an http(s) URL, a PIL image or a numpy
array, each to an HWC RGB uint8 array. Files are read as detect.py reads them (OpenCV, EXIF orientation applied,
the size limit), so both see the same pixels. `fetch_url_source`: detect.py's source given as the URL of an image
or video file, downloaded first as official YOLOv5's detect.py does."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from utils.data.images import IMG_FORMATS, VID_FORMATS, imread_bgr, oversize
from utils.errors import UserError
from utils.log import LOGGER

__all__ = ["INPUTS_HELP", "URL_TIMEOUT", "as_rgb", "fetch_url_source"]

URL_TIMEOUT = 10.0  # seconds to wait for an image URL before giving up
INPUTS_HELP = ("a file path, an http(s) URL, a PIL image, a numpy array (HWC, RGB), a list of those, or a "
                "torch tensor (B, 3, H, W) of 0-1 values")


def _url_bytes(url: str, what: str, advice: str) -> bytes:
    """The body at `url` (http(s), checked by the caller); when it cannot be fetched, a UserError
    "<what> (<why>: offline, refused, 404); is this machine offline? <advice>"."""
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as r:  # noqa: S310 (http(s) only, checked by caller)
            return r.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"{what} ({reason}); is this machine offline? {advice}") from None


def _read_url(url: str) -> np.ndarray:
    """The image at `url` as BGR; a UserError saying why when it cannot be fetched (offline, refused, 404)."""
    data = _url_bytes(url, f"cannot download image {url!r}",
                      "Pass a local file, a PIL image or a numpy array instead")
    with tempfile.TemporaryDirectory() as d:  # read through imread_bgr: its size limit and EXIF handling
        f = Path(d) / "image"
        f.write_bytes(data)
        im = imread_bgr(f)
        if im is None:
            raise UserError(f"{url!r}: {oversize(f) or 'the downloaded data is not an image that can be decoded'}")
    return im


def fetch_url_source(source: str, folder: str | Path = ".") -> str:
    """`source` unchanged, unless it is an http(s) URL whose path names an image or video file: then that file is
    downloaded into `folder` (the working directory, as official YOLOv5's detect.py does; a file already there is
    reused) and its path returned. Other URLs are streams. A failed download is a UserError naming the URL."""
    s = str(source)
    if not s.lower().startswith(("http://", "https://")):
        return source
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(s).path)).name
    if Path(name).suffix[1:].lower() not in IMG_FORMATS + VID_FORMATS:
        return source  # a stream (an MJPEG or HLS URL, say): cv2 opens it
    dest = Path(folder) / name
    if dest.is_file():
        LOGGER.info(f"Found {s} locally at {dest}")
        return str(dest)
    data = _url_bytes(s, f"--source {s}: cannot download it", "Pass a local file instead")
    tmp = dest.with_name(f".{name}.part{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    LOGGER.info(f"Downloaded {s} to {dest}")
    return str(dest)


def as_rgb(im: Any, i: int) -> tuple[np.ndarray, str]:
    """(HWC RGB uint8 array, where it came from: a path, URL or image{i}) of one input image."""
    if isinstance(im, (str, Path)):
        s = str(im)
        if s.startswith(("http://", "https://")):
            bgr, name = _read_url(s), s.split("?")[0].rstrip("/")
        else:
            if not Path(s).is_file():
                raise FileNotFoundError(f"image {s!r} not found")
            bgr, name = imread_bgr(s), s
            if bgr is None:
                raise UserError(f"image {s!r}: {oversize(s) or 'cannot be decoded as an image'}")
        return np.ascontiguousarray(bgr[..., ::-1]), name
    if isinstance(im, Image.Image):
        name = str(getattr(im, "filename", "") or f"image{i}")
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB")), name
    if isinstance(im, np.ndarray):
        return _array_rgb(im, i), f"image{i}"
    raise UserError(f"image {i} is a {type(im).__name__}; give {INPUTS_HELP}")


def _array_rgb(im: np.ndarray, i: int) -> np.ndarray:
    """A numpy image as HWC RGB uint8: HW (grey) and CHW are accepted, a 4th (alpha) channel is dropped, floats
    are read as 0-255 values."""
    if im.ndim == 3 and im.shape[0] < 5 and im.shape[2] >= 5:  # CHW, as a dataloader gives it
        im = im.transpose(1, 2, 0)
    if im.ndim == 2:
        im = im[..., None]
    if im.ndim != 3 or im.shape[2] not in (1, 3, 4) or 0 in im.shape:
        raise UserError(f"image {i}: a numpy image must be HxW, HxWx3 (RGB) or HxWx4, got shape {im.shape}")
    if im.dtype != np.uint8:
        if not np.issubdtype(im.dtype, np.floating):
            raise UserError(f"image {i}: a numpy image must be uint8 or float (0-255 values), got {im.dtype}")
        im = np.clip(np.nan_to_num(im), 0, 255).round().astype(np.uint8)
    im = np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im[..., :3]
    return np.ascontiguousarray(im)
