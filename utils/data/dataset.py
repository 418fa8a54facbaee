"""The training/validation dataset and its DataLoader, with YOLOv5's behaviour.

Each item is (img uint8 (3, H, W) RGB, labels float32 (n, 6) [0, cls, cx, cy, w, h] normalized to img, path,
shapes); `collate_fn` writes the image's index in the batch into column 0. `shapes` is
((h0, w0), ((h / h0, w / w0), (padw, padh))) for letterboxed images (what val needs to map boxes back to the
original) and None for mosaics.

Training (augment=True): with probability hyp.mosaic a 4-image mosaic (then random perspective), else the
image letterboxed to img_size (or its batch shape with rect) then random perspective; HSV, up-down and
left-right flips; MixUp on mosaics with probability hyp.mixup. Validation: letterbox only, never upscaled.
Rectangular batches (rect=True) sort images by aspect ratio and give each batch the smallest stride-multiple
shape that holds its images, exactly as YOLOv5 computes it, so validation reproduces YOLOv5's mAP.
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
from collections import OrderedDict
from contextlib import contextmanager
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.data.augment import augment_hsv, flip_lr, flip_ud, letterbox, mixup, mosaic, random_perspective
from utils.data.images import imread_bgr, list_image_files
from utils.data.labels import NUM_THREADS, img2label_paths, label_cache_path, scan_labels
from utils.errors import UserError
from utils.files import atomic_write
from utils.hyp import Hyp, load_hyp
from utils.log import LOGGER

__all__ = ["LoadImagesAndLabels", "create_dataloader", "rect_batch_shapes", "seed_worker", "distributed_zero_first"]

_CACHE_MODES = (None, False, True, "ram", "disk")
RECENT_BYTES = 512 * 2**20  # per process: recently decoded images kept when no cache is asked for (0: off)


def rect_batch_shapes(shapes_wh: np.ndarray, batch_size: int, img_size: int, stride: int, pad: float = 0.0):
    """(order, batch index per sorted image, batch shapes (nb, 2) int [h, w]) for rectangular batches.

    Images are sorted by aspect ratio h/w; a batch whose ratios are all < 1 (wide) gets [max ratio, 1] of
    img_size, all > 1 (tall) gets [1, 1 / min ratio], mixed gets [1, 1]; then
    ceil(shape * img_size / stride + pad) * stride, as YOLOv5 computes it.
    """
    s = np.asarray(shapes_wh)
    ar = s[:, 1] / s[:, 0]  # aspect ratio h/w
    order = ar.argsort()
    ar = ar[order]
    bi = np.floor(np.arange(len(s)) / batch_size).astype(int)
    nb = bi[-1] + 1
    shapes = [[1, 1]] * nb
    for i in range(nb):
        ari = ar[bi == i]
        mini, maxi = ari.min(), ari.max()
        if maxi < 1:
            shapes[i] = [maxi, 1]
        elif mini > 1:
            shapes[i] = [1, 1 / mini]
    batch_shapes = np.ceil(np.array(shapes) * img_size / stride + pad).astype(int) * stride
    return order, bi, batch_shapes


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class LoadImagesAndLabels(Dataset):
    """Images and labels of one split (folders, .txt lists, image files, or a list of them).

    Without `cache`, each process (the main one or a DataLoader worker) keeps its most recently decoded and
    resized images up to RECENT_BYTES: a mosaic reads 4 images, so on a small dataset most reads become
    hits, and the pixels are exactly those a fresh decode gives. Cached arrays are read-only.
    """

    def __init__(self, path, img_size: int = 640, batch_size: int = 16, augment: bool = False,
                 hyp: Hyp | dict | str | None = None, rect: bool = False, cache: str | bool | None = None,
                 single_cls: bool = False, stride: int = 32, pad: float = 0.0, prefix: str = "",
                 nc: int | None = None):
        if cache not in _CACHE_MODES:
            raise UserError(f"cache={cache!r} is not valid; use None, 'ram' or 'disk'")
        self.img_size, self.augment, self.hyp, self.rect = img_size, augment, load_hyp(hyp), rect
        self.mosaic = augment and not rect  # a mosaic is square; rect batches load one image each
        self.mosaic_border = (-img_size // 2, -img_size // 2)
        self.stride, self.path, self.prefix = int(stride), path, prefix
        if augment and self.hyp.copy_paste > 0:
            LOGGER.warning(f"{prefix}WARNING: copy_paste={self.hyp.copy_paste} needs segment labels; ignored")
        files = list_image_files(path, prefix)
        scan = scan_labels(files, label_cache_path(path, img2label_paths(files)), prefix,
                           nc=None if single_cls else nc, check_classes=not single_cls)
        if not scan.im_files:
            raise UserError(f"{prefix}no usable images in {path}: all {scan.corrupt} are corrupt (see warnings)")
        if augment and not any(len(lb) for lb in scan.labels):
            raise UserError(f"{prefix}no labels found for the images in {path}; training needs labels")
        self.im_files, self.labels, self.shapes = scan.im_files, scan.labels, scan.shapes
        if single_cls:
            for lb in self.labels:
                lb[:, 0] = 0
        n = len(self.im_files)
        self.n, self.indices = n, range(n)
        self.batch = np.floor(np.arange(n) / batch_size).astype(int)  # batch index of each image
        self.batch_shapes = None
        if rect:
            order, self.batch, self.batch_shapes = rect_batch_shapes(self.shapes, batch_size, img_size, self.stride,
                                                                     pad)
            self.im_files = [self.im_files[i] for i in order]
            self.labels = [self.labels[i] for i in order]
            self.shapes = self.shapes[order]
        self.label_files = img2label_paths(self.im_files)
        self.npy_files = [Path(f).with_suffix(".npy") for f in self.im_files]
        self.ims: list[np.ndarray | None] = [None] * n
        self.im_hw0: list[tuple | None] = [None] * n
        self.im_hw: list[tuple | None] = [None] * n
        self.cache = "ram" if cache is True else (cache or None)
        self._recent: OrderedDict[int, tuple] = OrderedDict()
        self._recent_bytes = 0
        if self.cache:
            self._cache_images()

    def __len__(self) -> int:
        return len(self.im_files)

    # ------------------------------------------------------------------------------------------- caching
    def _resized_bytes(self) -> int:
        r = self.img_size / self.shapes.max(1)
        return int((np.ceil(self.shapes[:, 0] * r) * np.ceil(self.shapes[:, 1] * r) * 3).sum())

    def _cache_images(self) -> None:
        if self.cache == "ram":
            need, avail = self._resized_bytes() * 1.1, _available_memory()
            if avail is not None and need > avail:
                LOGGER.warning(f"{self.prefix}WARNING: caching images needs {need / 1e9:.1f} GB of RAM, "
                               f"{avail / 1e9:.1f} GB available; not caching")
                self.cache = None
                return
        if self.cache == "disk" and (bad := self._unwritable_folder()) is not None:
            LOGGER.warning(f"{self.prefix}WARNING: --cache disk writes .npy files beside the images, and {bad[0]} "
                           f"takes no file ({bad[1]}); training without an image cache (--cache ram caches in memory)")
            self.cache = None
            return
        fn = self._save_npy if self.cache == "disk" else self.load_image
        gb = 0.0
        with ThreadPool(NUM_THREADS) as pool:
            for i, x in enumerate(pool.imap(fn, range(self.n))):
                if self.cache == "disk":
                    gb += self.npy_files[i].stat().st_size / 1e9
                else:
                    x[0].setflags(write=False)
                    self.ims[i], self.im_hw0[i], self.im_hw[i] = x
                    gb += x[0].nbytes / 1e9
        size = f"{gb:.1f}GB" if gb >= 0.1 else f"{gb * 1e3:.0f}MB"
        LOGGER.info(f"{self.prefix}Caching images ({size} {self.cache})")

    def _unwritable_folder(self) -> tuple[Path, str] | None:
        """(folder, reason) of the first image folder that takes no new file, else None."""
        for d in sorted({f.parent for f in self.npy_files}):
            try:
                fd, tmp = tempfile.mkstemp(dir=d, suffix=".npy.tmp")
            except OSError as e:
                return d, e.strerror or str(e)
            os.close(fd)
            os.remove(tmp)
        return None

    def _save_npy(self, i: int) -> None:
        """Write the decoded original image beside it as .npy (atomically) unless a fresh one is there."""
        f, npy = self.im_files[i], self.npy_files[i]
        if npy.exists() and npy.stat().st_mtime_ns >= os.stat(f).st_mtime_ns:
            return
        im = self._read(f)
        atomic_write(npy, lambda fh: np.save(fh, im))

    @staticmethod
    def _read(f: str) -> np.ndarray:
        im = imread_bgr(f)
        if im is None:
            raise FileNotFoundError(f"image {f} can no longer be read (it was readable when the split was scanned)")
        return im

    def load_image(self, i: int):
        """(image resized so its long side is img_size, (h0, w0) original, (h, w) resized) of image i."""
        if self.ims[i] is not None:
            return self.ims[i], self.im_hw0[i], self.im_hw[i]
        if i in self._recent:
            self._recent.move_to_end(i)
            return self._recent[i]
        im = None
        if self.cache == "disk" and self.npy_files[i].exists():
            try:
                im = np.load(self.npy_files[i], allow_pickle=False)
            except (OSError, ValueError):
                im = None
        if im is None:
            im = self._read(self.im_files[i])
        h0, w0 = im.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_LINEAR if (self.augment or r > 1) else cv2.INTER_AREA
            im = cv2.resize(im, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=interp)
        out = im, (h0, w0), im.shape[:2]
        if self.cache is None and RECENT_BYTES:
            self._remember(i, out)
        return out

    def _remember(self, i: int, item: tuple) -> None:
        item[0].setflags(write=False)  # shared with later calls: nobody may draw on it
        self._recent[i] = item
        self._recent_bytes += item[0].nbytes
        while self._recent_bytes > RECENT_BYTES and len(self._recent) > 1:
            _, (old, _, _) = self._recent.popitem(last=False)
            self._recent_bytes -= old.nbytes

    # ------------------------------------------------------------------------------------------- items
    def load_mosaic(self, index: int):
        """A 4-image mosaic around image `index` and 3 random others; labels [cls, x1, y1, x2, y2] pixels."""
        indices = [index] + random.choices(self.indices, k=3)
        random.shuffle(indices)
        ims = [self.load_image(i)[0] for i in indices]
        h = self.hyp
        return mosaic(ims, [self.labels[i] for i in indices], self.img_size, degrees=h.degrees,
                      translate=h.translate, scale=h.scale, shear=h.shear, perspective=h.perspective)

    def _load_letterboxed(self, index: int):
        img, (h0, w0), (h, w) = self.load_image(index)
        shape = self.batch_shapes[self.batch[index]] if self.rect else self.img_size  # final (h, w)
        img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment)
        shapes = (h0, w0), ((h / h0, w / w0), pad)  # for mapping predictions back to the original
        labels = self.labels[index].copy()
        if labels.size:  # normalized xywh -> pixel xyxy
            labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
        if self.augment:
            hp = self.hyp
            img, labels = random_perspective(img, labels, degrees=hp.degrees, translate=hp.translate,
                                             scale=hp.scale, shear=hp.shear, perspective=hp.perspective)
        return img, labels, shapes

    def __getitem__(self, index: int):
        index = self.indices[index]
        hyp = self.hyp
        if self.mosaic and random.random() < hyp.mosaic:
            img, labels = self.load_mosaic(index)
            shapes = None
            if random.random() < hyp.mixup:
                img, labels = mixup(img, labels, *self.load_mosaic(random.randint(0, self.n - 1)))
        else:
            img, labels, shapes = self._load_letterboxed(index)
        nl = len(labels)
        if nl:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        if self.augment:
            augment_hsv(img, hgain=hyp.hsv_h, sgain=hyp.hsv_s, vgain=hyp.hsv_v)
            if random.random() < hyp.flipud:
                img, labels = flip_ud(img, labels)
            if random.random() < hyp.fliplr:
                img, labels = flip_lr(img, labels)
        labels_out = torch.zeros((nl, 6))
        if nl:
            labels_out[:, 1:] = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        img = np.ascontiguousarray(img.transpose((2, 0, 1))[::-1])  # HWC BGR -> CHW RGB
        return torch.from_numpy(img), labels_out, self.im_files[index], shapes

    @staticmethod
    def collate_fn(batch):
        """Stack images; concatenate labels with column 0 set to each label's image index in the batch."""
        im, label, path, shapes = zip(*batch)
        for i, lb in enumerate(label):
            lb[:, 0] = i
        return torch.stack(im, 0), torch.cat(label, 0), path, shapes


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and `random` in each DataLoader worker from torch's per-worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    cv2.setNumThreads(0)  # one thread per worker: the workers already use the cores


@contextmanager
def distributed_zero_first(rank: int):
    """Let rank 0 go first (it writes the label cache) while the other ranks wait, then release them."""
    active = rank != -1 and dist.is_available() and dist.is_initialized()
    if active and rank != 0:
        dist.barrier()
    yield
    if active and rank == 0:
        dist.barrier()


def create_dataloader(path, imgsz: int, batch_size: int, stride: int, single_cls: bool = False,
                      hyp: Hyp | None = None, augment: bool = False, cache: str | None = None, pad: float = 0.0,
                      rect: bool = False, rank: int = -1, workers: int = 8, prefix: str = "",
                      shuffle: bool = False, seed: int = 0, nc: int | None = None):
    """(DataLoader, LoadImagesAndLabels) for a split. `nc`, when given, rejects label files with class >= nc;
    without it, the nc an earlier scan of the split recorded in its label cache is applied (see scan_labels).

    Workers: min(cpu count, batch size, workers), persistent between epochs. rank != -1 uses a
    DistributedSampler (call `loader.sampler.set_epoch(epoch)` each epoch when shuffling).
    """
    if rect and shuffle:
        LOGGER.warning(f"{prefix}WARNING: --rect is incompatible with DataLoader shuffle, setting shuffle=False")
        shuffle = False
    if rank != -1 and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"rank={rank} needs an initialized torch.distributed process group (run under "
                           "torchrun); use rank=-1 for a single process")
    with distributed_zero_first(rank):
        dataset = LoadImagesAndLabels(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect, cache=cache,
                                      single_cls=single_cls, stride=int(stride), pad=pad, prefix=prefix, nc=nc)
    batch_size = min(batch_size, len(dataset))
    nw = min(os.cpu_count() or 1, batch_size if batch_size > 1 else 0, workers)
    sampler = None if rank == -1 else DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    generator = torch.Generator()
    generator.manual_seed(6148914691236517205 + seed + rank)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, num_workers=nw,
                        sampler=sampler, pin_memory=torch.cuda.is_available(),
                        collate_fn=LoadImagesAndLabels.collate_fn, worker_init_fn=seed_worker, generator=generator,
                        persistent_workers=nw > 0, multiprocessing_context=worker_start_method() if nw else None)
    return loader, dataset


FORK_UNSAFE = ("openvino", "onnxruntime")  # native thread pools that a fork of this process can crash on


def worker_start_method() -> str | None:
    """How DataLoader workers start: forked (the platform's default, fastest) unless ONNX Runtime or OpenVINO
    is loaded in this process (an exported model in val.py, compare's deployed timing): a fork then killed the
    whole process with SIGSEGV now and then, so workers are spawned instead."""
    return "spawn" if any(m in sys.modules for m in FORK_UNSAFE) else None
