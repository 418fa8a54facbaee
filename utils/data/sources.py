"""Inference sources for detect.py: image files, folders, globs, .txt lists, videos, webcams and streams.

Iterating either loader gives (path, im, im0s, vid_cap, s):
  * LoadImages: im (3, H, W) RGB uint8 letterboxed, im0s the (H0, W0, 3) BGR original, vid_cap the
    cv2.VideoCapture of a video (None for images), s `image 1/5 path: ` or `video 1/1 (frame 3/30) path: `.
  * LoadStreams: one frame of every stream at a time: path the list of sources, im (n, 3, H, W), im0s the
    list of BGR frames, vid_cap None, s ''. Frames are read in a thread per stream; the newest is used.
"""

from __future__ import annotations

import glob
import math
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from utils.data.augment import letterbox
from utils.data.images import IMG_FORMATS, VID_FORMATS, imread_bgr, oversize
from utils.errors import UserError
from utils.log import LOGGER

__all__ = ["LoadImages", "LoadStreams", "is_stream_source", "cv2_reason", "STREAM_SCHEMES"]

STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
_FORMATS_HELP = f"images: {', '.join(IMG_FORMATS)}; videos: {', '.join(VID_FORMATS)}"


def is_stream_source(source) -> bool:
    """True for a webcam index ('0'), a URL (rtsp/rtmp/http/...), or a .streams file listing such sources."""
    s = str(source).strip()
    return s.isnumeric() or s.lower().startswith(STREAM_SCHEMES) or s.endswith(".streams")


def cv2_reason(e: cv2.error) -> str:
    """OpenCV's message without its version and source location."""
    return str(e).strip().split(" error: ", 1)[-1]


def _suffix(path: str) -> str:
    return path.rsplit(".", 1)[-1].lower() if "." in os.path.basename(path) else ""


def _expand(entry: str, base: Path | None) -> tuple[list[str], bool]:
    """Files an entry names (a file, a folder, or a glob) and whether it named one file explicitly.

    Relative entries are relative to the working directory; entries of a .txt list that are not found
    there are tried relative to the list's folder.
    """
    p = Path(entry).expanduser()
    if base is not None and not p.is_absolute() and not p.exists() and not glob.glob(str(p)):
        p = base / p
    if p.is_dir():
        return sorted(glob.glob(os.path.join(str(p.resolve()), "*.*"))), False
    if p.is_file():
        return [str(p.resolve())], True
    if any(c in entry for c in "*?["):
        found = sorted(glob.glob(str(p), recursive=True))
        if not found:
            raise FileNotFoundError(f"source {entry!r}: no files match this pattern")
        return [str(Path(f).resolve()) for f in found], False
    raise FileNotFoundError(f"source {entry!r} does not exist")


def _list_sources(path) -> list[str]:
    """Files for a path, glob, folder, .txt list (one path per line) or a list of those."""
    if isinstance(path, (str, Path)) and str(path).endswith(".txt"):
        txt = Path(path)
        if not txt.is_file():
            raise FileNotFoundError(f"source list {str(path)!r} does not exist")
        entries = [x.strip() for x in txt.read_text(encoding="utf-8").splitlines() if x.strip()]
        if not entries:
            raise UserError(f"source list {txt} is empty; write one image, video, folder or glob per line")
        base = txt.parent
    else:
        entries, base = [str(p) for p in (path if isinstance(path, (list, tuple)) else [path])], None
    files = []
    for entry in entries:
        found, explicit = _expand(entry, base)
        if explicit and _suffix(found[0]) not in IMG_FORMATS + VID_FORMATS:
            LOGGER.warning(f"WARNING: skipping {found[0]}: not a supported format ({_FORMATS_HELP})")
        files += found
    return files


class LoadImages:
    """Images and videos from a file, folder, glob, .txt list, or a list of those (images first, then videos)."""

    def __init__(self, path, img_size: int = 640, stride: int = 32, auto: bool = True, vid_stride: int = 1):
        files = _list_sources(path)
        images = [x for x in files if _suffix(x) in IMG_FORMATS]
        videos = [x for x in files if _suffix(x) in VID_FORMATS]
        if not images and not videos:
            raise FileNotFoundError(f"no images or videos found in {path}; supported formats: {_FORMATS_HELP}")
        if vid_stride < 1:
            raise UserError(f"vid_stride must be >= 1, got {vid_stride}")
        self.img_size, self.stride, self.auto, self.vid_stride = img_size, stride, auto, vid_stride
        self.files = images + videos
        self.nf = len(self.files)
        self.video_flag = [False] * len(images) + [True] * len(videos)
        self.mode = "image"
        self.cap: cv2.VideoCapture | None = None
        self.frame, self.frames, self.fps = 0, 0, 0.0
        self.count, self.n_read, self.skipped = 0, 0, []

    def __iter__(self):
        self.count, self.n_read, self.skipped = 0, 0, []
        self._release()
        return self

    def __len__(self) -> int:
        return self.nf

    def _release(self) -> None:
        if self.cap is not None:
            self.cap.release()
        self.cap = None

    def _skip(self, path: str, reason: str) -> None:
        LOGGER.warning(f"WARNING: skipping {path}: {reason}")
        self.skipped.append(path)

    def _open_video(self, path: str) -> bool:
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            cap.release()
            return False
        self.cap, self.frame = cap, 0
        self.frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) / self.vid_stride)
        self.fps = cap.get(cv2.CAP_PROP_FPS)
        return True

    def _next_frame(self, path: str) -> np.ndarray | None:
        """The next frame of the current video (opening it first), or None when it is done or unreadable."""
        if self.cap is None and not self._open_video(path):
            self._skip(path, "cannot open as a video")
            return None
        ok = all(self.cap.grab() for _ in range(self.vid_stride))  # stops at the first failed grab
        ok, im0 = self.cap.retrieve() if ok else (False, None)
        if not ok:
            if self.frame == 0:
                self._skip(path, "no frame could be decoded")
            self._release()
            return None
        return im0

    def _read_image(self, path: str) -> np.ndarray | None:
        """The image at `path`, or None (with a warning) when its header says it is too large or it will not decode."""
        too_large = oversize(path)
        im0 = None if too_large else imread_bgr(path)
        if im0 is None:
            self._skip(path, too_large or "cannot be decoded as an image")
        return im0

    def _letterbox(self, path: str, im0: np.ndarray) -> np.ndarray | None:
        """im0 letterboxed as (3, H, W) RGB, or None (with a warning) when OpenCV cannot resize it."""
        try:
            im = letterbox(im0, self.img_size, stride=self.stride, auto=self.auto)[0]
        except cv2.error as e:
            self._skip(path, f"cannot letterbox a {im0.shape[1]}x{im0.shape[0]} image ({cv2_reason(e)})")
            return None
        return np.ascontiguousarray(im.transpose((2, 0, 1))[::-1])  # HWC BGR -> CHW RGB

    def __next__(self):
        while self.count < self.nf:
            path = self.files[self.count]
            if self.video_flag[self.count]:
                self.mode = "video"
                im0 = self._next_frame(path)
                if im0 is None:
                    self.count += 1
                    continue
                self.frame += 1
                s = f"video {self.count + 1}/{self.nf} (frame {self.frame}/{self.frames}) {path}: "
                cap = self.cap
            else:
                self.mode = "image"
                self.count += 1
                im0 = self._read_image(path)
                if im0 is None:
                    continue
                s, cap = f"image {self.count}/{self.nf} {path}: ", None
            im = self._letterbox(path if cap is None else f"{path} frame {self.frame}", im0)
            if im is None:
                continue
            self.n_read += 1
            return path, im, im0, cap, s
        if self.n_read == 0:
            raise UserError(f"none of the {self.nf} source file(s) could be decoded: {', '.join(self.skipped)}")
        raise StopIteration


class LoadStreams:
    """Webcams (an index such as '0') and streams cv2.VideoCapture opens (rtsp://, http://, a video path);
    several at once from a .streams/.txt file or a list. Each is read in its own thread, keeping every
    vid_stride-th frame."""

    def __init__(self, sources="0", img_size: int = 640, stride: int = 32, auto: bool = True, vid_stride: int = 1):
        if isinstance(sources, (list, tuple)):
            sources = [str(s) for s in sources]
        elif str(sources).endswith((".streams", ".txt")) and os.path.isfile(str(sources)):
            sources = [x.strip() for x in Path(sources).read_text(encoding="utf-8").splitlines() if x.strip()]
        else:
            sources = [str(sources)]
        if vid_stride < 1:
            raise UserError(f"vid_stride must be >= 1, got {vid_stride}")
        self.mode, self.img_size, self.stride, self.vid_stride = "stream", img_size, stride, vid_stride
        self.sources = sources
        n = len(sources)
        self.imgs: list[np.ndarray | None] = [None] * n
        self.fps, self.frames, self.threads = [30.0] * n, [0] * n, [None] * n
        self._seq, self._seen, self._stop = [0] * n, [0] * n, threading.Event()
        self.frame = 0
        for i, s in enumerate(sources):
            self._open(i, s)
        shapes = np.stack([letterbox(x, img_size, stride=stride, auto=auto)[0].shape for x in self.imgs])
        self.rect = np.unique(shapes, axis=0).shape[0] == 1  # same shape for all: rectangular inference
        self.auto = auto and self.rect
        if not self.rect:
            LOGGER.warning("WARNING: stream shapes differ; letterboxing all to square for batched inference")

    def _open(self, i: int, s: str) -> None:
        st = f"{i + 1}/{len(self.sources)}: {s}... "
        cap = cv2.VideoCapture(int(s) if s.isnumeric() else s)
        if not cap.isOpened():
            raise ConnectionError(f"{st}failed to open {s!r} (webcam index, stream URL or video path expected)")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)  # may be 0 or nan for some streams
        self.frames[i] = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0) or float("inf")
        self.fps[i] = max((fps if math.isfinite(fps) else 0) % 100, 0) or 30.0
        ok, self.imgs[i] = cap.read()
        if not ok or self.imgs[i] is None:
            raise ConnectionError(f"{st}opened {s!r} but could not read a frame from it")
        self._seq[i] = 1
        self.threads[i] = threading.Thread(target=self._update, args=(i, cap, s), daemon=True)
        LOGGER.info(f"{st}Success ({self.frames[i]} frames {w}x{h} at {self.fps[i]:.2f} FPS)")
        self.threads[i].start()

    def _update(self, i: int, cap: cv2.VideoCapture, stream: str) -> None:
        """Read frames in the background, keeping the newest of every vid_stride."""
        n, f = 1, self.frames[i]
        while cap.isOpened() and n < f and not self._stop.is_set():
            n += 1
            cap.grab()
            if n % self.vid_stride == 0:
                ok, im = cap.retrieve()
                if ok:
                    self.imgs[i] = im
                    self._seq[i] += 1
                elif f == float("inf"):  # a live stream dropped: blank frame, try to reconnect
                    LOGGER.warning(f"WARNING: stream {stream} unresponsive, reconnecting")
                    self.imgs[i] = np.zeros_like(self.imgs[i])
                    self._seq[i] += 1
                    cap.open(stream)
                else:
                    break
            time.sleep(0.0)
        cap.release()

    def __iter__(self):
        self.frame = 0
        return self

    def __next__(self):
        """The newest frame of each stream; waits for new frames, stops when every stream has ended."""
        while True:
            alive = [t.is_alive() for t in self.threads]
            fresh = [q > seen for q, seen in zip(self._seq, self._seen)]
            if all(fr or not a for fr, a in zip(fresh, alive)) and any(fresh):
                break
            if not any(alive) and not any(fresh):
                self.close()
                raise StopIteration
            time.sleep(0.001)
        self._seen = list(self._seq)
        self.frame += 1
        im0 = [x.copy() for x in self.imgs]
        im = np.stack([letterbox(x, self.img_size, stride=self.stride, auto=self.auto)[0] for x in im0])
        im = np.ascontiguousarray(im[..., ::-1].transpose((0, 3, 1, 2)))  # BHWC BGR -> BCHW RGB
        return self.sources, im, im0, None, ""

    def close(self) -> None:
        """Stop the reader threads."""
        self._stop.set()

    def __len__(self) -> int:
        return len(self.sources)  # the batch size, as YOLOv5's detect.py reads it
