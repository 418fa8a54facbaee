"""Export a trained model to TorchScript, ONNX, OpenVINO, TFLite, CoreML and ExecuTorch, as YOLOv5's export.py,
plug-ins included.

    python export.py --weights yolov5n.pt --include torchscript onnx openvino
    python export.py --weights runs/train/exp/weights/best.pt --include onnx --dynamic --simplify
    python export.py --weights best.pt --include tflite coreml executorch --imgsz 320   # edge: requirements-edge.txt

Files are written beside the weights: best.torchscript, best.onnx, best_openvino_model/ (best.xml, best.bin and
best.yaml). Each carries the model's stride and class names where YOLOv5 keeps them (TorchScript: the extra file
config.txt; ONNX: metadata_props; OpenVINO: the .yaml beside the .xml), so val.py and detect.py take the exported
file as --weights. The graphs hold standard ONNX operators only. The single output is YOLOv5's decoded
(batch, anchors, 5 + nc) tensor, boxes as pixel (cx, cy, w, h), before NMS.

--dynamic makes batch, height and width free (ONNX, OpenVINO; a traced TorchScript file is free in all three
anyway): the plug-ins' padding to their window grid is computed in the graph, so a model exported at 320 runs at
416, 256x384 or 640x480 and gives what PyTorch gives there. After writing each file the export runs it once on
the same input as PyTorch and prints max |diff| / max |output|.

The edge formats (utils.deploy.edge; `pip install -r requirements-edge.txt`) are written at one fixed size:
best.tflite (LiteRT, float32, metadata in an appended zip), best.mlpackage (CoreML ML Program, float32 or --half
float16; converted and read back here, run on Apple devices) and best_executorch_model/ (best.pte for XNNPACK and
metadata.yaml). val.py and detect.py run the .tflite and the ExecuTorch folder.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.backends.xnnpack

import models
from models import resolve_weights
from models.yolo import Detect
from models.user_modules import import_module_files
from utils.checks import check_finite, check_img_size
from utils.cli import cli_errors
from utils.data.config import load_data_config
from utils.data.images import list_image_files
from utils.deploy.edge import (EDGE_FORMATS, EDGE_PACKAGES, coreml_summary, export_coreml, export_executorch,
                               export_tflite, open_edge)
from utils.deploy.writers import (calibration_batches, export_metadata, export_onnx, export_openvino,
                                  export_torchscript, probe_image, run_exported)
from utils.errors import UserError
from utils.files import size_mb
from utils.log import LOGGER, colorstr, setup_logging
from utils.torch_utils import select_device

__all__ = ["FORMATS", "run", "export_formats", "parse_opt", "main", "cli"]

# format: (file suffix, needs a package)
FORMATS = {"torchscript": (".torchscript", None), "onnx": (".onnx", "onnx"),
           "openvino": ("_openvino_model", "openvino"), **EDGE_FORMATS}
# what YOLOv5's export.py also writes and this one does not
OTHER_YOLOV5_FORMATS = ("engine", "saved_model", "pb", "edgetpu", "tfjs", "paddle")
OPSETS = range(11, 21)  # what torch's TorchScript-based ONNX exporter writes, all of which ONNX Runtime runs


def export_formats() -> list[tuple[str, str]]:
    """(format, file suffix) of each export this script writes."""
    return [(k, v[0]) for k, v in FORMATS.items()]


def _check_options(include, device: torch.device, half: bool, dynamic: bool, optimize: bool, opset: int,
                   batch_size: int, int8: bool = False) -> list[str]:
    """The lower-cased formats to write; raises UserError on a format or option combination that cannot work."""
    if isinstance(include, str):
        include = [include]
    fmts = [str(f).lower().lstrip(".") for f in include]
    for f in fmts:
        if f not in FORMATS:
            extra = (f" ({f} is one of YOLOv5's formats that this export does not write)"
                     if f in OTHER_YOLOV5_FORMATS else "")
            raise UserError(f"--include {f!r} is not supported{extra}; valid formats: {', '.join(FORMATS)}")
    if not fmts:
        raise UserError(f"--include names no format; valid formats: {', '.join(FORMATS)}")
    fmts = list(dict.fromkeys(fmts))
    edge = [f for f in fmts if f in EDGE_FORMATS]
    if half and set(edge) - {"coreml"}:
        raise UserError(f"--half: the {', '.join(f for f in edge if f != 'coreml')} export is float32 (CoreML "
                        "takes --half); export it without --half")
    if half and device.type == "cpu" and set(fmts) - {"openvino", "coreml"}:
        raise UserError("--half on the CPU applies to OpenVINO (weights stored in fp16) and CoreML (computing in "
                        f"float16) only; an fp16 {', '.join(f for f in fmts if f not in ('openvino', 'coreml'))} "
                        "export needs a CUDA device (--device 0)")
    if edge and dynamic:
        raise UserError(f"--dynamic: {', '.join(edge)} exports are made at one fixed size (--imgsz); export them "
                        "without --dynamic")
    if int8 and set(fmts) - {"openvino", "executorch"}:
        raise UserError("--int8 applies to OpenVINO (NNCF post-training quantization) and ExecuTorch (XNNPACK's "
                        f"post-training quantization) only; got --include {' '.join(fmts)}")
    if int8 and half:
        raise UserError("--int8 and --half cannot be combined: choose one")
    if int8 and "openvino" in fmts:
        try:
            __import__("nncf")
        except ImportError as e:
            raise UserError(f"--int8 needs the package 'nncf' (pip install -r requirements.txt): {e}") from None
    if half and dynamic:
        raise UserError("--half and --dynamic cannot be combined (as in YOLOv5): choose one")
    if optimize and device.type != "cpu":
        raise UserError("--optimize (TorchScript for mobile) works on the CPU only: use --device cpu")
    if optimize and not has_xnnpack():
        raise UserError("--optimize (TorchScript for mobile) needs a PyTorch build with XNNPACK, and this one has "
                        "none; export without --optimize")
    if opset not in OPSETS:
        raise UserError(f"--opset {opset} is outside the supported {OPSETS.start}..{OPSETS.stop - 1}")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} must be >= 1")
    for f in fmts:
        pkg = FORMATS[f][1]
        if pkg:
            try:
                __import__(pkg)
            except ImportError as e:
                req = "requirements-edge.txt" if f in EDGE_FORMATS else "requirements.txt"
                raise UserError(f"--include {f} needs the package {EDGE_PACKAGES.get(pkg, pkg)!r} "
                                f"(pip install -r {req}): {e}") from None
    return list(dict.fromkeys(fmts))


def has_xnnpack() -> bool:
    """Whether this PyTorch build has XNNPACK, which TorchScript's mobile optimisation needs."""
    return bool(torch.backends.xnnpack.enabled)


def run(weights="yolov5n.pt", imgsz=(640, 640), batch_size=1, device="cpu", include=("torchscript", "onnx"),
        half=False, inplace=False, optimize=False, dynamic=False, simplify=False, opset=17, check=True, int8=False,
        data="coco128.yaml", modules=None):
    """Export `weights` to each format in `include`; returns {format: path written}.

    imgsz is (h, w) or one size for both; `check` runs each file once against PyTorch and logs the difference;
    `modules`: your Python file(s) registering blocks the model uses (as --modules), imported first.
    """
    t0 = time.time()
    import_module_files(modules)  # before the checkpoint is read
    dev = select_device(device)
    fmts = _check_options(include, dev, half, dynamic, optimize, int(opset), int(batch_size), int8)
    if isinstance(imgsz, (list, tuple)) and len(imgsz) not in (1, 2):
        raise UserError(f"--imgsz {' '.join(map(str, imgsz))}: give one size or two (height width)")
    if isinstance(weights, (list, tuple)) and len(weights) != 1:
        raise UserError(f"export.run exports one checkpoint, got {len(weights)}: {' '.join(map(str, weights))} "
                        "(export.py --weights a.pt b.pt exports each in turn)")
    w = resolve_weights(weights[0] if isinstance(weights, (list, tuple)) else weights)
    if w.suffix != ".pt":
        raise UserError(f"--weights {w}: export reads a PyTorch checkpoint (.pt), got {w.suffix or 'no suffix'}")
    model = models.load_model(w, device=dev, fuse=True)  # via the module, so patches apply
    check_finite(model, w)
    imgsz = list(imgsz) if isinstance(imgsz, (list, tuple)) else [imgsz]
    imgsz = check_img_size(imgsz * (2 if len(imgsz) == 1 else 1), s=int(model.stride.max()))
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, Detect):
            m.inplace, m.export = inplace, True  # one output: the decoded tensor
    im = torch.zeros(batch_size, 3, *imgsz, device=dev)
    if half and dev.type == "cuda":  # on the CPU --half is OpenVINO's: an fp32 graph, its weights stored in fp16
        im, model = im.half(), model.half()
    calibration = _calibration(data, imgsz, batch_size) if int8 else None
    with torch.no_grad():
        for _ in range(2):  # dry runs
            y = model(im)
    shape = tuple(y[0].shape)
    meta = export_metadata(model, imgsz, batch_size, dynamic)
    LOGGER.info(f"\n{colorstr('PyTorch:')} starting from {w} with output shape {shape} "
                f"({size_mb(w):.1f} MB)")

    written, rows = {}, []
    # a real image for the checks: the bundled bus photo when present, letterboxed to imgsz
    probe = probe_image(imgsz, batch_size, dev, im.dtype)
    with torch.no_grad():
        ref = model(probe)[0].float().cpu().numpy()
    for fmt in fmts:
        t = time.time()
        prefix = colorstr(f"{fmt}:")
        LOGGER.info(f"{prefix} exporting with torch {torch.__version__}...")
        if fmt == "torchscript":
            f = export_torchscript(model, im, w, meta, optimize)
        elif fmt == "onnx":
            f = export_onnx(model, im, w, meta, int(opset), dynamic, simplify)
        elif fmt == "openvino":
            f = export_openvino(model, im, w, meta, int(opset), dynamic, half, written.get("onnx"), calibration)
        else:
            f = _export_edge(fmt, model, im, w, meta, half, calibration)
        written[fmt] = f
        diff = ""
        if check and not (optimize and fmt == "torchscript") and fmt != "coreml":  # CoreML runs on Apple only
            out = open_edge(fmt, f).run(probe.float().cpu().numpy()) if fmt in EDGE_FORMATS else \
                run_exported(fmt, f, probe)
            diff = f"{np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12):.1e}"
        rows.append((fmt, f, size_mb(f), time.time() - t, diff))
        LOGGER.info(f"{prefix} export success ({time.time() - t:.1f}s), saved as {f} ({size_mb(f):.1f} MB)"
                    + (f", max |diff| / max |output| against PyTorch {diff}" if diff else ""))
    _summary(rows, w, imgsz, time.time() - t0)
    return written


def _export_edge(fmt: str, model, im: torch.Tensor, w: Path, meta: dict, half: bool,
                 calibration: list[np.ndarray] | None) -> Path:
    """TFLite, CoreML or ExecuTorch (utils.deploy.edge), converted on the CPU at im's size; ExecuTorch in int8
    where `calibration` batches are given."""
    model, im = copy.deepcopy(model).cpu().float(), im.cpu().float()  # the model may go on to a CUDA export
    if fmt == "tflite":
        return export_tflite(model, im, w, meta)
    if fmt == "executorch":
        return export_executorch(model, im, w, meta, calibration)
    f = export_coreml(model, im, w, meta, half)
    s = coreml_summary(f)
    LOGGER.info(f"{colorstr('coreml:')} {s['program']} with {len(s['ops'])} operator types, input "
                f"{s['inputs']}, output {s['outputs']}")
    return f


def _calibration(data, imgsz: list[int], batch_size: int) -> list[np.ndarray]:
    """--int8's calibration batches: up to 300 images of --data's train split (as YOLOv5's export), letterboxed."""
    cfg = load_data_config(data)
    files = list_image_files(cfg.train)
    LOGGER.info(f"{colorstr('int8:')} calibrating on {min(len(files), 300)} images of {data}'s train split")
    return calibration_batches(files, imgsz, batch_size)


def _summary(rows, w: Path, imgsz: list[int], seconds: float) -> None:
    LOGGER.info(f"\nExport complete ({seconds:.1f}s)")
    LOGGER.info(f"{'format':<12}{'size MB':>9}{'s':>7}{'diff':>10}  file")
    for fmt, f, mb, s, diff in rows:
        LOGGER.info(f"{fmt:<12}{mb:>9.1f}{s:>7.1f}{diff or '-':>10}  {f}")
    for fmt, f, *_ in rows:
        if fmt == "coreml":
            LOGGER.info(f"\n{fmt}:  {f} runs on Apple devices (Xcode, coremltools on macOS); not on this machine")
            continue
        LOGGER.info(f"\n{fmt}:  python detect.py --weights {f} --imgsz {imgsz[0]} {imgsz[1]}"
                    f"\n{' ' * (len(fmt) + 3)}python val.py --weights {f} --data coco128.yaml --imgsz {max(imgsz)}")


def parse_opt(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=str, default="coco128.yaml",
                   help="--int8: dataset.yaml whose train images calibrate the quantization (names come from the "
                        "weights)")
    p.add_argument("--weights", nargs="+", type=str, default="yolov5n.pt", help="model.pt path")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="image (h, w)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--half", action="store_true",
                   help="FP16 half-precision export (CUDA; on the CPU OpenVINO: weights stored in fp16, CoreML: "
                        "computing in fp16)")
    p.add_argument("--int8", action="store_true",
                   help="OpenVINO (NNCF), ExecuTorch (XNNPACK): int8 post-training quantization calibrated on --data")
    p.add_argument("--inplace", action="store_true", help="set YOLOv5 Detect() inplace=True")
    p.add_argument("--optimize", action="store_true", help="TorchScript: optimize for mobile")
    p.add_argument("--dynamic", action="store_true", help="ONNX/OpenVINO: dynamic batch, height and width")
    p.add_argument("--simplify", action="store_true", help="ONNX: simplify the graph (onnxslim)")
    p.add_argument("--opset", type=int, default=17, help="ONNX: opset version")
    p.add_argument("--include", nargs="+", default=["torchscript"], help=f"formats: {', '.join(FORMATS)}")
    p.add_argument("--modules", nargs="+", metavar="FILE", help="your Python file(s) registering blocks the model uses")
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> dict:
    """Export each of --weights in turn, as official YOLOv5 does; {checkpoint: {format: path written}}."""
    setup_logging()
    import_module_files(vars(opt).get("modules"))  # before any checkpoint is read
    kw = dict(vars(opt))  # a copy: the namespace keeps its --weights
    weights = kw.pop("weights")
    return {w: run(weights=w, **kw) for w in ([weights] if isinstance(weights, str) else weights)}


def cli(argv: list[str] | None = None) -> None:
    """The command line: user errors end as one `ERROR: ...` line and exit status 2."""
    cli_errors(main)(parse_opt(argv))


if __name__ == "__main__":
    cli()
