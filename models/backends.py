"""One model interface over a PyTorch checkpoint and the files export.py writes, as YOLOv5's DetectMultiBackend.

    model = DetectBackend("best.onnx", device)   # or best.pt, best.torchscript, best_openvino_model/ (or its .xml),
                                                   # best.tflite, best_executorch_model/ (or its .pte)
    pred = model(im)[0]                            # im (B, 3, H, W) float in 0..1; pred (B, anchors, 5 + nc)
    pred = model(im, augment=True)[0]              # test-time augmentation (models.tta), before NMS

For a .pt the call is the model's own: (decoded, raw maps) in eval mode. An exported file gives (decoded, None):
the same decoded tensor, boxes as pixel (cx, cy, w, h), before NMS, as a torch tensor on the input's device.
Stride and class names come from the metadata export.py stores (TorchScript: the extra file config.txt; ONNX:
metadata_props; OpenVINO: the .yaml beside the .xml; TFLite: metadata.json in the zip appended to it; ExecuTorch:
metadata.yaml beside the .pte). A CoreML package is refused with a clear error (it runs on Apple devices only).
`fixed_shape` and `fixed_batch` say what an export without
--dynamic accepts: callers letterbox to that size; a batch of another size is run in chunks of the fixed batch.
`augment=True` runs YOLOv5's test-time augmentation (models.tta: three scaled / flipped passes, concatenated) on
a .pt or on an export that takes any input size; an export of fixed size cannot take the scaled inputs
(UserError). Several weights make an ensemble: models.ensemble.load_detector.
"""

from __future__ import annotations

import ast
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import yaml

import models
from models import WEIGHTS_DIR, resolve_weights
from models.tta import augmented_forward
from utils.checks import check_finite
from utils.deploy.edge import open_edge
from utils.deploy.runtimes import check_precision, compile_openvino, openvino_xml, ort_session
from utils.errors import UserError
from utils.log import LOGGER
from utils.torch_utils import select_device

__all__ = ["DetectBackend", "DetectMultiBackend", "SUFFIXES", "weights_format"]

# format: what names it on the command line
SUFFIXES = {"pt": ".pt", "torchscript": ".torchscript", "onnx": ".onnx",
            "openvino": "a folder *_openvino_model (or its .xml)", "tflite": ".tflite",
            "executorch": "a folder *_executorch_model (or its .pte)", "coreml": ".mlpackage (Apple devices only)"}
_META_KEYS = ("stride", "names", "imgsz", "batch", "dynamic")
_STRIDES = (8, 16, 32, 64, 128)  # a detector's largest stride: P3 to P7 heads


def weights_format(path: str | Path) -> str:
    """'pt', 'torchscript', 'onnx', 'openvino', 'tflite', 'executorch' or 'coreml' from the file name; a UserError
    names the valid ones."""
    p = Path(path)
    if p.suffix == ".pt":
        return "pt"
    if p.suffix == ".torchscript":
        return "torchscript"
    if p.suffix == ".onnx":
        return "onnx"
    if p.name.endswith("_openvino_model") or p.suffix == ".xml":
        return "openvino"
    if p.suffix == ".tflite":
        return "tflite"
    if p.name.endswith("_executorch_model") or p.suffix == ".pte":
        return "executorch"
    if p.suffix in (".mlpackage", ".mlmodel"):
        return "coreml"
    raise UserError(f"--weights {str(path)!r}: unknown model format {p.suffix or '(no suffix)'!r}; valid: "
                    f"{', '.join(SUFFIXES.values())}")


def _resolve(path: Path, fmt: str) -> Path:
    """The exported file or folder as given; a bare name also finds it in weights/. FileNotFoundError names it."""
    folder = (fmt == "openvino" and path.suffix != ".xml") or (fmt == "executorch" and path.suffix != ".pte") \
        or fmt == "coreml"
    ok = (lambda p: p.is_dir()) if folder else (lambda p: p.is_file())
    if ok(path):
        return path
    if path.parent == Path(".") and ok(WEIGHTS_DIR / path.name):
        return WEIGHTS_DIR / path.name
    kind = "folder" if folder else "file"
    raise FileNotFoundError(f"weights {str(path)!r} not found (no such {kind})")


def _names_list(names) -> list[str]:
    """Class names from a {index: name} mapping (keys int or str, as JSON writes them) or a list."""
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names]


def _torch_dtype(np_or_ov_type: str) -> torch.dtype:
    return torch.float16 if "16" in np_or_ov_type else torch.float32


class DetectBackend(nn.Module):
    """A detector from `weights`: a .pt checkpoint (loaded fused, weights checked finite), a .torchscript, an
    .onnx (ONNX Runtime) or an OpenVINO folder *_openvino_model / its .xml. `fp16` applies to .pt and
    TorchScript on CUDA (the caller feeds half inputs); ONNX and OpenVINO files get the dtype their graph declares.
    OpenVINO computes at `ov_precision`: f32 unless asked ('bf16' / 'f16' where the CPU has them), on every CPU
    (utils.deploy.runtimes says why it is pinned).

    Attributes: fmt, pt (a .pt checkpoint), stride (int), names (list), nc, nl (detection levels: the Detect
    head's for .pt, log2(stride) - 2 for exports, as P5 / P6 models have), model (the nn.Module for .pt, else
    None), fixed_shape ((h, w) an export without --dynamic requires, None when any size runs), fixed_batch (its
    batch, or None), fp16 (whether callers should feed half inputs), weights (the resolved path).
    """

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu", fp16: bool = False,
                 ov_precision: str = "f32"):
        super().__init__()
        if isinstance(weights, (list, tuple)):
            if len(weights) > 1:
                raise UserError(f"DetectBackend takes one weights file, got {len(weights)}: {list(map(str, weights))}; "
                                "for an ensemble use models.ensemble.load_detector (val.py / detect.py --weights a b)")
            weights = weights[0] if weights else None
        w = weights
        if w is None:
            raise UserError("--weights is needed: a checkpoint (.pt) or an exported model "
                            f"({', '.join(SUFFIXES.values())})")
        self.device = select_device(device)
        self.fmt = weights_format(w)
        self.pt = self.fmt == "pt"
        self.model: nn.Module | None = None
        self.fixed_shape: tuple[int, int] | None = None
        self.fixed_batch: int | None = None
        self.fp16 = bool(fp16) and self.device.type == "cuda" and self.fmt in ("pt", "torchscript")
        self._in_dtype = torch.float32  # what an ONNX / OpenVINO graph takes
        self.ov_precision = check_precision(ov_precision)  # what OpenVINO computes in (f32 unless asked)
        meta = {}
        if self.pt:
            self.weights = self._load_pt(w)
        else:
            self.weights = _resolve(Path(w), self.fmt)
            meta = getattr(self, f"_load_{self.fmt}")(self.weights)
        if not self.pt:
            self._apply_meta(meta)

    # ------------------------------------------------------------------------------------------- loading
    def _load_pt(self, w) -> Path:
        path = resolve_weights(w)
        model = models.load_model(path, device=self.device, fuse=True)  # via the module, so patches apply
        check_finite(model, w)
        if self.fp16:
            model.half()
        self.model = model
        self.stride = int(model.stride.max())
        self.names = list(model.names)
        self.nc = int(model.model[-1].nc)
        self.nl = int(model.model[-1].nl)
        return path

    def _load_torchscript(self, path: Path) -> dict:
        extra = {"config.txt": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            try:
                ts = torch.jit.load(str(path), _extra_files=extra, map_location=self.device)
            except RuntimeError as e:
                raise UserError(f"--weights {path}: not a TorchScript file torch.jit.load can read (one written "
                                f"with export.py --optimize is for the mobile lite interpreter): {e}") from None
        ts.eval()
        params = list(ts.parameters())
        if self.fp16:
            ts.half()
        elif params and params[0].dtype == torch.float16:
            self.fp16 = self.device.type == "cuda"
            if not self.fp16:
                raise UserError(f"--weights {path}: an fp16 TorchScript export runs on CUDA only; use --device 0 "
                                "or an fp32 export")
        self.ts = ts
        cfg = extra["config.txt"]
        try:
            return json.loads(cfg) if cfg else {}  # a traced file runs at any size and batch: no fixed shape
        except ValueError as e:
            raise UserError(f"--weights {path}: its metadata config.txt is not JSON ({e})") from None

    def _load_onnx(self, path: Path) -> dict:
        try:
            sess = ort_session(path, cuda=self.device.type == "cuda")  # PyTorch's thread count, so timings compare
        except Exception as e:  # onnxruntime raises its own exception types for a file it cannot parse
            raise UserError(f"--weights {path}: ONNX Runtime cannot load it: {e}") from None
        inp = sess.get_inputs()[0]
        self._in_dtype = _torch_dtype(inp.type)
        self._fixed_dims([d if isinstance(d, int) else None for d in inp.shape])
        self.session, self._in_name = sess, inp.name
        meta = {}
        for k, v in sess.get_modelmeta().custom_metadata_map.items():
            meta[k] = v
            if k in _META_KEYS:
                try:
                    meta[k] = ast.literal_eval(v)  # written as str(value): a literal, never code
                except (ValueError, SyntaxError):
                    raise UserError(f"--weights {path}: metadata {k}={v[:60]!r} is not a Python literal") from None
        return meta

    def _load_openvino(self, path: Path) -> dict:
        import openvino as ov  # optional: only for OpenVINO weights

        xml = openvino_xml(path)
        core = ov.Core()
        ov_model = core.read_model(str(xml))
        inp = ov_model.inputs[0]
        self._in_dtype = _torch_dtype(str(inp.element_type))
        self._fixed_dims([d.get_length() if d.is_static else None for d in inp.partial_shape])
        self.compiled = compile_openvino(ov_model, precision=self.ov_precision, core=core)
        meta_file = xml.with_suffix(".yaml")
        if not meta_file.is_file():
            meta_file = next(iter(sorted(xml.parent.glob("*.yaml"))), meta_file)
        if meta_file.is_file():
            try:
                with open(meta_file, encoding="utf-8") as f:
                    return yaml.safe_load(f) or {}
            except yaml.YAMLError as e:  # a !!python tag or broken YAML: refused, never run
                raise UserError(f"--weights {path}: its metadata {meta_file.name} is not plain YAML: "
                                f"{' '.join(str(e).split())[:200]}") from None
        return {}

    def _load_tflite(self, path: Path) -> dict:
        return self._load_edge(path)

    def _load_executorch(self, path: Path) -> dict:
        return self._load_edge(path)

    def _load_coreml(self, path: Path) -> dict:
        return self._load_edge(path)  # a UserError: CoreML runs on Apple devices only

    def _load_edge(self, path: Path) -> dict:
        try:
            self.edge = open_edge(self.fmt, path)
        except (RuntimeError, ValueError) as e:  # the runtimes' own errors for a file they cannot read
            raise UserError(f"--weights {path}: the {self.fmt} runtime cannot load it: {e}") from None
        self._fixed_dims(list(self.edge.shape))
        return self.edge.meta

    def _fixed_dims(self, dims: list[int | None]) -> None:
        """Record the fixed batch and (h, w) of an input shaped (batch, 3, h, w); None dims are free."""
        if len(dims) != 4:
            raise UserError(f"--weights {self.weights}: the model input has "
                            f"{len(dims)} dimensions; a detector takes (batch, 3, height, width)")
        b, _, h, w = dims
        self.fixed_batch = b
        self.fixed_shape = (h, w) if h is not None and w is not None else None

    def _apply_meta(self, meta: dict) -> None:
        """stride, names and nc from the export's metadata (defaults, with a warning, where it has none), checked
        against the model's output: a value that cannot be the model's is a UserError naming it."""
        if not isinstance(meta, dict):
            raise UserError(f"--weights {self.weights}: its metadata is a {type(meta).__name__}, not a mapping")
        stride = meta.get("stride", 32)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride not in _STRIDES:
            raise UserError(f"--weights {self.weights}: metadata stride={stride!r}; valid: one of {list(_STRIDES)}")
        self.stride = stride
        self.nl = max(1, round(math.log2(self.stride)) - 2)  # 32: P3-P5 (3 levels), 64: P3-P6 (4)
        nc = self._output_nc()
        names = meta.get("names")
        if names is None:
            LOGGER.warning(f"WARNING: {self.weights} carries no class names (not written by export.py?); using "
                           f"class0..class{nc - 1} and stride {self.stride}")
            names = [f"class{i}" for i in range(nc)]
        if not isinstance(names, (dict, list, tuple)):
            raise UserError(f"--weights {self.weights}: metadata names={str(names)[:60]!r}; valid: a list or an "
                            "{index: name} mapping")
        try:
            names = _names_list(names)
        except (TypeError, ValueError):
            raise UserError(f"--weights {self.weights}: metadata names has keys that are not class indices") from None
        if len(names) > nc:
            raise UserError(f"--weights {self.weights}: metadata names {len(names)} classes but the model outputs "
                            f"{nc}; the metadata belongs to another model")
        if len(names) < nc:
            LOGGER.warning(f"WARNING: {self.weights}: metadata names {len(names)} classes but the model outputs {nc}; "
                           f"the others are called class{len(names)}..class{nc - 1}")
            names += [f"class{i}" for i in range(len(names), nc)]
        self.names = names
        self.nc = len(self.names)

    def _output_nc(self) -> int:
        """nc from the output's last dimension (5 + nc): the graph's static shape where it has one, else by
        running a blank input."""
        if self.fmt == "onnx":
            last = self.session.get_outputs()[0].shape[-1]
            if isinstance(last, int):
                return last - 5
        elif self.fmt == "openvino":
            last = self.compiled.output(0).get_partial_shape()[-1]
            if last.is_static:
                return last.get_length() - 5
        h, w = self.fixed_shape or (self.stride * 2, self.stride * 2)
        return int(self.forward(torch.zeros(self.fixed_batch or 1, 3, h, w, device=self.device))[0].shape[-1]) - 5

    # ------------------------------------------------------------------------------------------- inference
    def forward(self, im: torch.Tensor, augment: bool = False):
        """(decoded (B, anchors, 5 + nc), raw maps) for .pt, (decoded, None) for exports; on `im`'s device.
        `augment`: YOLOv5's test-time augmentation (models.tta), (decoded of all passes, None)."""
        if augment:
            return self._augmented(im), None
        if self.pt:
            return self.model(im)
        b, _, h, w = im.shape
        if self.fixed_shape is not None and (h, w) != tuple(self.fixed_shape):
            fh, fw = self.fixed_shape
            raise UserError(f"{self.weights} was exported for {fh}x{fw} images (h x w), got {h}x{w}; letterbox to "
                            f"{fh}x{fw} or export with --dynamic")
        fb = self.fixed_batch
        if fb is None or b == fb:
            y = self._run(im)
        else:  # a fixed-batch export: chunks of its batch, the last padded with blank images
            ys = []
            for i in range(0, b, fb):
                chunk = im[i:i + fb]
                n = len(chunk)
                if n < fb:
                    chunk = torch.cat((chunk, chunk.new_zeros((fb - n, *chunk.shape[1:]))), 0)
                ys.append(self._run(chunk)[:n])
            y = torch.cat(ys, 0)
        return y.to(im.device, im.dtype if im.is_floating_point() else torch.float32), None

    def _augmented(self, im: torch.Tensor) -> torch.Tensor:
        if self.fixed_shape is not None:
            fh, fw = self.fixed_shape
            raise UserError(f"--augment runs the model on rescaled inputs, and {self.weights} was exported for "
                            f"{fh}x{fw} images only; use the .pt or an export made with --dynamic")
        return augmented_forward(self.forward, im, gs=self.stride, nl=self.nl)

    def _run(self, im: torch.Tensor) -> torch.Tensor:
        if self.fmt == "torchscript":
            y = self.ts(im.half() if self.fp16 else im.float())
            return y[0] if isinstance(y, (list, tuple)) else y
        x = im.detach().to("cpu", self._in_dtype).numpy()
        if self.fmt == "onnx":
            y = self.session.run(None, {self._in_name: x})[0]
        elif self.fmt in ("tflite", "executorch"):
            y = self.edge.run(x)
        else:
            y = self.compiled([x])[self.compiled.output(0)]
        return torch.from_numpy(np.ascontiguousarray(y))

    def warmup(self, imgsz: tuple[int, int] = (640, 640)) -> None:
        """One forward on a blank input, so the first real batch's time is not a start-up time."""
        h, w = self.fixed_shape or imgsz
        dtype = torch.float16 if self.fp16 else torch.float32
        self.forward(torch.zeros(self.fixed_batch or 1, 3, h, w, device=self.device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"fmt={self.fmt}, weights={self.weights}, fixed_shape={self.fixed_shape}, fixed_batch={self.fixed_batch}"


DetectMultiBackend = DetectBackend  # YOLOv5's name
