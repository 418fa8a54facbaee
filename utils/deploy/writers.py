"""The export writers: a model in memory to TorchScript, ONNX and OpenVINO files, each with YOLOv5's metadata,
written atomically beside the weights; and each file run once in its own runtime (for export.py's check).

export.py's command line and compare.py's deployed latency (utils.deploy.runners) both write through these.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch.utils.mobile_optimizer import optimize_for_mobile

from models.tracing import fixed_shape_trace
from utils.data.augment import letterbox
from utils.data.images import imread_bgr
from utils.deploy.runtimes import compile_openvino, ort_session, pin_f32
from utils.errors import UserError
from utils.files import atomic_output
from utils.paths import ROOT

__all__ = ["export_metadata", "quiet", "export_torchscript", "export_onnx", "export_openvino", "quantize_int8",
           "calibration_batches", "run_exported", "probe_image"]


def export_metadata(model, imgsz: list[int], batch_size: int, dynamic: bool) -> dict:
    """The metadata every export carries (stride, class names, size, batch, dynamic), as YOLOv5 writes it."""
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    return {"description": "YOLOv5 with efficient attention in the neck", "stride": int(model.stride.max()),
            "names": names, "imgsz": list(imgsz), "batch": batch_size, "dynamic": bool(dynamic)}


def quiet():
    """The TorchScript-based exporters warn about every Python shape branch they freeze; those are taken care of
    (the plug-ins pad in the graph when traced), so the warnings would only bury the summary."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


def export_torchscript(model, im, file: Path, meta: dict, optimize: bool) -> Path:
    f = file.with_suffix(".torchscript")
    ctx = quiet()
    try:
        ts = torch.jit.trace(model, im, strict=False, check_trace=False)
    finally:
        ctx.__exit__(None, None, None)
    extra = {"config.txt": json.dumps({"shape": list(im.shape), **meta})}
    with atomic_output(f) as tmp:  # a killed export leaves the previous file, never half of one
        if optimize:
            optimize_for_mobile(ts)._save_for_lite_interpreter(str(tmp), _extra_files=extra)
        else:
            ts.save(str(tmp), _extra_files=extra)
    return f


def export_onnx(model, im, file: Path, meta: dict, opset: int, dynamic: bool, simplify: bool) -> Path:
    import onnx  # optional: only for ONNX (and OpenVINO) exports

    f = file.with_suffix(".onnx")
    with atomic_output(f) as tmp:  # a killed export leaves the previous file, never half of one
        _write_onnx(onnx, model, im, tmp, meta, opset, dynamic, simplify)
    return f


def _write_onnx(onnx, model, im, f: Path, meta: dict, opset: int, dynamic: bool, simplify: bool) -> None:
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}}
    ctx = quiet()
    try:
        with contextlib.nullcontext() if dynamic else fixed_shape_trace():  # a fixed size: no any-size steps
            torch.onnx.export(model.cpu() if dynamic else model, im.cpu() if dynamic else im, str(f), dynamo=False,
                              verbose=False, opset_version=opset, do_constant_folding=True, input_names=["images"],
                              output_names=["output0"], dynamic_axes=axes if dynamic else None)
    finally:
        ctx.__exit__(None, None, None)
    model_onnx = onnx.load(str(f))
    onnx.checker.check_model(model_onnx)
    if simplify:
        try:
            import onnxslim  # optional: only for --simplify
        except ImportError as e:
            raise UserError(f"--simplify needs the package 'onnxslim' (pip install -r requirements.txt): {e}")
        model_onnx = onnxslim.slim(model_onnx)
        onnx.checker.check_model(model_onnx)
    for k, v in meta.items():
        entry = model_onnx.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.save(model_onnx, str(f))


def export_openvino(model, im, file: Path, meta: dict, opset: int, dynamic: bool, half: bool,
                    onnx_file: Path | None, calibration: list[np.ndarray] | None = None) -> Path:
    """OpenVINO IR converted from the ONNX graph (exported to a temporary file when --include has no onnx).

    `half`: weights stored in fp16 (OpenVINO's compress_to_fp16; the model still computes at f32 unless the runtime
    is asked for less). `calibration`: input batches for NNCF's post-training int8 quantization (weights and
    activations of convolutions and matrix products in int8), written to *_int8_openvino_model. Either way the
    model is pinned to f32 wherever it is not quantized (see utils.deploy.runtimes)."""
    import openvino as ov  # optional: only for --include openvino

    tag = "_int8" if calibration is not None else ""
    d = Path(str(file.with_suffix("")) + f"{tag}_openvino_model")
    with tempfile.TemporaryDirectory() as tmp, atomic_output(d, folder=True) as out:  # the old folder stays until
        src = onnx_file or export_onnx(model, im, Path(tmp) / file.name, meta, opset, dynamic, simplify=False)
        ov_model = ov.convert_model(str(src))  # the new one is complete
        if calibration is not None:
            ov_model = quantize_int8(ov_model, calibration)
        xml = out / file.with_suffix(".xml").name
        ov.save_model(ov_model, str(xml), compress_to_fp16=half)
        pin_f32(xml)  # a plain compile_model runs it at f32 on a CPU with bf16 too
        with open(out / file.with_suffix(".yaml").name, "w") as fh:
            yaml.safe_dump(meta, fh, sort_keys=False)
    return d


def quantize_int8(ov_model, calibration: list[np.ndarray]):
    """NNCF post-training quantization of an OpenVINO model on `calibration` batches (the mixed preset: symmetric
    weights, asymmetric activations), as YOLOv5's export --int8 does."""
    try:
        import nncf  # optional: only for --int8
    except ImportError as e:
        raise UserError(f"--int8 needs the package 'nncf' (pip install -r requirements.txt): {e}") from None
    if not calibration:
        raise UserError("--int8: no calibration images (the --data split is empty)")
    return nncf.quantize(ov_model, nncf.Dataset(calibration), preset=nncf.QuantizationPreset.MIXED,
                         subset_size=len(calibration))


def calibration_batches(files: list[str], imgsz: list[int], batch_size: int, n: int = 300) -> list[np.ndarray]:
    """Up to `n` images of `files` (evenly spread over the list), letterboxed to imgsz (h, w) as detect.py does,
    float 0..1 NCHW, grouped in batches of `batch_size` (the last one filled with repeats)."""
    step = max(1, len(files) // n)
    ims = []
    for f in files[::step][:n]:
        img = imread_bgr(f)  # EXIF-rotated, too large or undecodable: None, left out of the calibration
        if img is not None:
            ims.append(_letterboxed(img, imgsz))
    batches = []
    for i in range(0, len(ims), batch_size):
        chunk = ims[i:i + batch_size]
        chunk += [chunk[-1]] * (batch_size - len(chunk))
        batches.append(np.stack(chunk))
    return batches


def run_exported(fmt: str, path: Path, im: torch.Tensor) -> np.ndarray:
    """The exported file's output on `im` (its own runtime, CPU for ONNX Runtime and OpenVINO)."""
    x = im.float().cpu().numpy() if fmt != "torchscript" else im
    if fmt == "torchscript":
        ts = torch.jit.load(str(path), map_location=im.device)
        with torch.no_grad():
            y = ts(im)
        return (y[0] if isinstance(y, (list, tuple)) else y).float().cpu().numpy()
    if fmt == "onnx":
        sess = ort_session(path)
        return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float16 if im.dtype == torch.float16
                                                                     else np.float32)})[0].astype(np.float32)
    compiled = compile_openvino(path)  # f32, as val.py and detect.py run it
    return np.asarray(compiled(x)[0], dtype=np.float32)


def probe_image(imgsz: list[int], batch_size: int, device, dtype) -> torch.Tensor:
    """The bundled bus.jpg letterboxed to imgsz (repeated over the batch); noise if the photo is missing."""
    path = ROOT / "data" / "images" / "bus.jpg"
    img = cv2.imread(str(path)) if path.is_file() else None
    if img is None:
        x = torch.rand(1, 3, *imgsz, generator=torch.Generator().manual_seed(0))
    else:
        x = torch.from_numpy(_letterboxed(img, imgsz))[None]
    return x.repeat(batch_size, 1, 1, 1).to(device, dtype)


def _letterboxed(img: np.ndarray, imgsz: list[int]) -> np.ndarray:
    """A BGR image letterboxed to imgsz (h, w) as detect.py does: float32 RGB (3, h, w) in 0..1."""
    img = letterbox(img, tuple(imgsz), auto=False)[0]
    return np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255
