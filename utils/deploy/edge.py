"""Edge formats: LiteRT (TFLite), CoreML and ExecuTorch, written from a model in memory and (TFLite, ExecuTorch)
run here on the CPU. Each is exported at one fixed input size, as phones and boards take it.

- TFLite: PyTorch's own path to LiteRT (litert-torch: torch.export, then the LiteRT converter), float32; the
  metadata (stride, names, imgsz, batch) rides in a zip appended to the flatbuffer as metadata.json, which the
  interpreter ignores and YOLOv5-style loaders read with zipfile. Run by ai-edge-litert's Interpreter.
- CoreML: an ML Program (.mlpackage) converted by coremltools from torch.export's program, computing at float32
  (float16 with --half), the input an image scaled by 1/255 as YOLOv5's CoreML export takes it, the metadata in
  its user-defined metadata. It runs on Apple devices only; here it is converted and its spec read back.
- ExecuTorch: torch.export lowered to the XNNPACK backend, a folder *_executorch_model holding the .pte and
  metadata.yaml (as ultralytics lays it out); with --int8 quantized by XNNPACK's PT2E quantizer on calibration
  images first (*_int8_executorch_model). Run by ExecuTorch's runtime.

    f = export_tflite(model, im, Path("best.pt"), meta)       # best.tflite
    run = open_edge("tflite", f)                               # EdgeModel: run(x (B, 3, H, W) np.float32)
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from utils.errors import UserError
from utils.files import atomic_output, read_yaml, yaml_save

__all__ = ["EDGE_FORMATS", "EDGE_PACKAGES", "export_tflite", "export_coreml", "export_executorch", "EdgeModel",
           "open_edge", "tflite_metadata", "coreml_summary", "executorch_pte"]

# format: (what the export is called beside the weights, the package it needs)
EDGE_FORMATS = {"tflite": (".tflite", "litert_torch"), "coreml": (".mlpackage", "coremltools"),
                "executorch": ("_executorch_model", "executorch")}
EDGE_PACKAGES = {"litert_torch": "litert-torch", "coremltools": "coremltools", "executorch": "executorch",
                 "ai_edge_litert": "ai-edge-litert"}
_TFLITE_META = "metadata.json"


def _need(module: str, what: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise UserError(f"{what} needs the package {EDGE_PACKAGES.get(module.split('.')[0], module)!r} "
                        f"(pip install -r requirements-edge.txt): {e}") from None


def _exported_program(model, im: torch.Tensor):
    """torch.export of the model at im's fixed size (strict=False: the Python shape logic runs once, as eager)."""
    with torch.no_grad():
        return torch.export.export(model, (im,), strict=False)


def export_tflite(model, im: torch.Tensor, file: Path, meta: dict) -> Path:
    litert_torch = _need("litert_torch", "--include tflite")
    f = file.with_suffix(".tflite")
    with tempfile.TemporaryDirectory() as tmp:
        edge = litert_torch.convert(model.cpu(), (im.cpu(),))
        edge.export(str(Path(tmp) / f.name))
        data = (Path(tmp) / f.name).read_bytes()
    buf = io.BytesIO(data)
    buf.seek(len(data))
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as z:  # appended after the flatbuffer
        z.writestr(_TFLITE_META, json.dumps(meta))
    with atomic_output(f) as out:
        out.write_bytes(buf.getvalue())
    return f


def tflite_metadata(path: Path) -> dict:
    """The metadata export_tflite appended; {} for a .tflite written elsewhere."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(_TFLITE_META)) if _TFLITE_META in z.namelist() else {}
    except zipfile.BadZipFile:
        return {}
    except ValueError as e:
        raise UserError(f"--weights {path}: its {_TFLITE_META} is not JSON ({e})") from None


def export_coreml(model, im: torch.Tensor, file: Path, meta: dict, half: bool = False) -> Path:
    ct = _need("coremltools", "--include coreml")
    if im.shape[0] != 1:
        raise UserError(f"--include coreml takes one image at a time (--batch-size 1), got --batch-size {im.shape[0]}")
    f = file.with_suffix(".mlpackage")
    program = _exported_program(model.cpu(), im.cpu().float()).run_decompositions({})
    ml = ct.convert(program, inputs=[ct.ImageType(name="images", shape=tuple(im.shape), scale=1 / 255,
                                                  bias=[0.0, 0.0, 0.0])],
                    outputs=[ct.TensorType(name="output0")], convert_to="mlprogram",
                    compute_precision=ct.precision.FLOAT16 if half else ct.precision.FLOAT32,
                    minimum_deployment_target=ct.target.iOS16)
    ml.short_description = meta.get("description", "")
    ml.user_defined_metadata.update({k: str(v) for k, v in meta.items() if k != "description"})
    with atomic_output(f, folder=True) as out:  # coremltools saves only under a name ending in .mlpackage
        ml.save(str(out / f.name))
        for part in (out / f.name).iterdir():
            part.rename(out / part.name)
        (out / f.name).rmdir()
    return f


def coreml_summary(path: Path) -> dict:
    """What a converted .mlpackage holds, read back from its spec (no Apple runtime needed): inputs and outputs
    with their shapes, the user-defined metadata, and the ML Program's operator types."""
    ct = _need("coremltools", "reading a CoreML package")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()

    def shape(t):
        kind = t.type.WhichOneof("Type")
        if kind == "imageType":
            return ("image", int(t.type.imageType.height), int(t.type.imageType.width))
        return (kind, *(int(d) for d in t.type.multiArrayType.shape))

    ops = set()
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            ops.update(op.type for op in block.operations)
    return {"inputs": {t.name: shape(t) for t in spec.description.input},
            "outputs": {t.name: shape(t) for t in spec.description.output},
            "metadata": dict(spec.description.metadata.userDefined), "ops": sorted(ops),
            "program": spec.WhichOneof("Type")}


def export_executorch(model, im: torch.Tensor, file: Path, meta: dict,
                      calibration: list[np.ndarray] | None = None) -> Path:
    """An ExecuTorch program for XNNPACK in *_executorch_model/; with `calibration` batches, quantized to int8 first
    (PyTorch's PT2E flow with XNNPACK's quantizer: per-channel symmetric weights, activations observed on the
    batches) into *_int8_executorch_model/."""
    exir = _need("executorch.exir", "--include executorch")
    xnnpack = _need("executorch.backends.xnnpack.partition.xnnpack_partitioner", "--include executorch")
    tag = "_int8" if calibration is not None else ""
    d = Path(str(file.with_suffix("")) + f"{tag}_executorch_model")
    model, im = model.cpu(), im.cpu().float()
    if calibration is not None:
        model = _quantized_xnnpack(model, im, calibration)
    program = exir.to_edge_transform_and_lower(_exported_program(model, im),
                                               partitioner=[xnnpack.XnnpackPartitioner()]).to_executorch()
    with atomic_output(d, folder=True) as out:
        (out / file.with_suffix(".pte").name).write_bytes(program.buffer)
        yaml_save(out / "metadata.yaml", {**meta, "int8": calibration is not None})
    return d


def _quantized_xnnpack(model, im: torch.Tensor, calibration: list[np.ndarray]):
    """The model quantized for XNNPACK (PT2E: prepare, observe the calibration batches, convert); the Detect head
    is kept in float32, since one int8 scale cannot hold pixel coordinates and 0..1 scores at once."""
    quantizer = _need("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "--int8 --include executorch")
    pt2e = _need("torchao.quantization.pt2e.quantize_pt2e", "--int8 --include executorch")
    if not calibration:
        raise UserError("--int8: no calibration images (the --data split is empty)")
    from models.yolo import Detect

    q = quantizer.XNNPACKQuantizer().set_global(quantizer.get_symmetric_quantization_config(is_per_channel=True))
    q.set_module_type(Detect, None)  # the head stays float: boxes in pixels and scores in 0..1 share its output
    prepared = pt2e.prepare_pt2e(_exported_program(model, im).module(), q)
    with torch.no_grad():
        for batch in calibration:
            prepared(torch.from_numpy(batch))
    return pt2e.convert_pt2e(prepared)


def executorch_pte(path: Path) -> Path:
    """The .pte of an ExecuTorch export given as its folder or the file; FileNotFoundError names what is missing."""
    if path.is_dir():
        pte = sorted(path.glob("*.pte"))
        if not pte:
            raise FileNotFoundError(f"weights {str(path)!r}: the folder holds no ExecuTorch .pte program")
        return pte[0]
    return path


@dataclass
class EdgeModel:
    """An edge export opened for running: run(x) takes (B, 3, H, W) float32 at `shape` and gives the decoded
    output (B, anchors, 5 + nc) as float32; meta is what export wrote beside it."""

    run: Callable[[np.ndarray], np.ndarray]
    shape: tuple[int, int, int, int]
    meta: dict


def open_edge(fmt: str, path: Path, threads: int | None = None) -> EdgeModel:
    """A TFLite or ExecuTorch export, opened in its runtime on the CPU with `threads` (default: PyTorch's)."""
    threads = int(threads or torch.get_num_threads())
    if fmt == "tflite":
        interpreter = _need("ai_edge_litert.interpreter", "running a .tflite")
        it = interpreter.Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]

        def run(x: np.ndarray) -> np.ndarray:
            it.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
            it.invoke()
            return it.get_tensor(out["index"]).astype(np.float32)

        return EdgeModel(run, tuple(int(d) for d in inp["shape"]), tflite_metadata(path))
    if fmt == "executorch":
        runtime = _need("executorch.runtime", "running an ExecuTorch program")
        pte = executorch_pte(path)
        method = runtime.Runtime.get().load_program(str(pte)).load_method("forward")
        shape = tuple(int(d) for d in method.metadata.input_tensor_meta(0).sizes())
        meta_file = pte.parent / "metadata.yaml"
        meta = (read_yaml(meta_file) or {}) if meta_file.is_file() else {}

        def run(x: np.ndarray) -> np.ndarray:
            return method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])[0].numpy()

        return EdgeModel(run, shape, meta)
    if fmt == "coreml":
        raise UserError(f"--weights {path}: a CoreML package runs on Apple devices (macOS, iOS) only; on this "
                        "machine use the .pt, ONNX, OpenVINO, TFLite or ExecuTorch export of the same model")
    raise UserError(f"unknown edge format {fmt!r}; valid: {', '.join(EDGE_FORMATS)}")
