"""The runtimes opened in one place each: ONNX Runtime sessions (`ort_session`) and OpenVINO, at f32 unless the
caller asks for less (`compile_openvino`).

Why f32 is pinned: OpenVINO's CPU plugin runs an f32 model in bf16 on a CPU with native bf16 (Intel Sapphire
Rapids and later, AMD Zen 4 and later) unless INFERENCE_PRECISION_HINT says f32. The same file then gives other
boxes and another mAP on another machine, silently. So:

- `compile_openvino` (used by models.backends for val.py / detect.py / hubconf / benchmarks.py, by export.py's
  check and by the deployed-latency runners) always passes INFERENCE_PRECISION_HINT, f32 by default;
- `pin_f32` marks an exported IR so that a plain `openvino.Core().compile_model(xml, "CPU")` keeps f32 too: every
  operation carries OpenVINO's `precise` attribute (DisablePrecisionConversion, which the CPU plugin honours by
  keeping the operation in its original precision), and the model's rt_info records
  runtime_options/INFERENCE_PRECISION_HINT = f32 for tools that read it. A caller who asks `compile_openvino`
  for bf16 or f16 gets the marks removed in memory first, so the lower precision is really used.

    compiled = compile_openvino("best_openvino_model")            # f32 on every CPU
    compiled = compile_openvino(xml, precision="bf16")            # bf16 where the CPU has it (f32 elsewhere)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from utils.errors import UserError

__all__ = ["ORT_LEVELS", "ort_session", "OV_PRECISIONS", "PRECISE_ATTRIBUTE", "openvino_xml", "openvino_config",
           "check_precision", "compile_openvino", "pin_f32", "unpin", "is_pinned_f32", "compiled_precision",
           "cpu_has_bf16"]

ORT_LEVELS = ("disable", "basic", "extended", "all")  # onnxruntime.GraphOptimizationLevel, by name
OV_PRECISIONS = ("f32", "bf16", "f16")  # INFERENCE_PRECISION_HINT values a caller may ask for
PRECISE_ATTRIBUTE = "precise"  # the IR name of ov::DisablePrecisionConversion (read back as ..._0)
_RT_KEY = "DisablePrecisionConversion_0"  # its key in a node's rt_info once read
_HINT_PATH = ["runtime_options", "INFERENCE_PRECISION_HINT"]


def ort_session(path: str | Path, threads: int | None = None, level: str = "all", cuda: bool = False,
                sequential: bool = False, profile: str | Path | None = None,
                optimized_model: str | Path | None = None):
    """An ONNX Runtime session on `path`: `threads` intra-op threads (default: PyTorch's count, so runtimes
    compare), graph optimisation `level` ('disable', 'basic', 'extended', 'all': ORT's default), the CUDA provider
    first when `cuda` and ORT has it, one inter-op thread and sequential execution with `sequential` (as the timing
    runners use), ORT's JSON operator profile under the prefix `profile`, the optimised graph saved to
    `optimized_model`."""
    import onnxruntime as ort  # optional: only for ONNX models

    if level not in ORT_LEVELS:
        raise UserError(f"ONNX Runtime graph optimisation level {level!r}; valid: {', '.join(ORT_LEVELS)}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    so.log_severity_level = 3
    if sequential:
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile)
    if optimized_model:
        so.optimized_model_filepath = str(optimized_model)
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=so, providers=providers)


def openvino_xml(path: str | Path) -> Path:
    """The .xml of an OpenVINO model given as its folder or its .xml; FileNotFoundError names what is missing."""
    path = Path(path)
    if path.is_dir():
        xml = sorted(path.glob("*.xml"))
        if not xml:
            raise FileNotFoundError(f"weights {str(path)!r}: the folder holds no OpenVINO .xml model")
        path = xml[0]
    if not path.is_file():
        raise FileNotFoundError(f"OpenVINO model {str(path)!r}: no such file")
    if not path.with_suffix(".bin").is_file():
        raise FileNotFoundError(f"weights {str(path)!r}: its weights file {path.with_suffix('.bin').name} is missing")
    return path


def check_precision(precision: str) -> str:
    """`precision` lower-cased if OpenVINO can be asked for it (OV_PRECISIONS); a UserError naming the valid ones."""
    p = str(precision).lower()
    if p not in OV_PRECISIONS:
        raise UserError(f"OpenVINO precision {precision!r}; valid: {', '.join(OV_PRECISIONS)}")
    return p


def openvino_config(threads: int | None = None, precision: str = "f32", latency: bool = False) -> dict[str, str]:
    """The CPU plugin's compile options: `threads` intra-op threads (default: PyTorch's count, so runtimes compare),
    the precision hint, and with `latency` one stream under the LATENCY hint (as the timing runners use)."""
    cfg = {"INFERENCE_NUM_THREADS": str(int(threads or torch.get_num_threads())),
           "INFERENCE_PRECISION_HINT": check_precision(precision)}
    if latency:
        cfg.update({"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"})
    return cfg


def compile_openvino(model, threads: int | None = None, precision: str = "f32", latency: bool = False, core=None):
    """An OpenVINO model (folder, .xml, .onnx path, or an openvino.Model) compiled for the CPU at `precision`.

    For bf16 / f16 the per-operation f32 marks `pin_f32` wrote are removed from the in-memory model first (the
    file is untouched); the CPU plugin falls back to f32 where the CPU lacks the lower precision."""
    import openvino as ov  # optional: only for OpenVINO models

    precision = check_precision(precision)
    core = core or ov.Core()
    if isinstance(model, (str, Path)):
        p = Path(model)
        model = core.read_model(str(p if p.suffix == ".onnx" else openvino_xml(p)))
    if precision != "f32":
        model = unpin(model.clone())
        model.set_rt_info(precision, _HINT_PATH)
    return core.compile_model(model, "CPU", openvino_config(threads, precision, latency))


def unpin(model):
    """`model` (an openvino.Model, changed in place and returned) without pin_f32's per-operation marks."""
    for op in model.get_ops():
        rt = op.get_rt_info()
        if _RT_KEY in rt:
            del rt[_RT_KEY]
    return model


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 on this CPU (BF16 among its optimization capabilities)."""
    import openvino as ov  # optional: only for OpenVINO models

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compiled_precision(compiled) -> str:
    """'f32', 'bf16' or 'f16': the precision a compiled model runs at (its INFERENCE_PRECISION_HINT)."""
    return precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))


def precision_name(t) -> str:
    """'f32', 'bf16' or 'f16' for an OpenVINO element type or its printed forms ("<Type: 'bfloat16'>", 'float32')."""
    if hasattr(t, "get_type_name"):
        t = t.get_type_name()
    t = str(t)
    t = t.split("'")[1] if "'" in t else t
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(t, t)


def pin_f32(xml: str | Path) -> Path:
    """Mark the IR `xml` (as ov.save_model wrote it) f32: a `precise` attribute on every layer and
    runtime_options/INFERENCE_PRECISION_HINT = f32 in the model's rt_info. Rewrites the file in place."""
    xml = Path(xml)
    tree = ET.parse(xml)
    net = tree.getroot()
    for layer in net.iter("layer"):
        rt = layer.find("rt_info")
        if rt is None:
            rt = ET.SubElement(layer, "rt_info")
        if not any(a.get("name") == PRECISE_ATTRIBUTE for a in rt.findall("attribute")):
            ET.SubElement(rt, "attribute", {"name": PRECISE_ATTRIBUTE, "version": "0"})
    rt = net.find("rt_info")
    if rt is None:
        rt = ET.SubElement(net, "rt_info")
    opts = rt.find(_HINT_PATH[0])
    if opts is None:
        opts = ET.SubElement(rt, _HINT_PATH[0])
    hint = opts.find(_HINT_PATH[1])
    if hint is None:
        hint = ET.SubElement(opts, _HINT_PATH[1])
    hint.set("value", "f32")
    tmp = xml.with_name(xml.name + ".tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(xml)
    return xml


def is_pinned_f32(model) -> bool:
    """Whether an openvino.Model read from an IR carries `pin_f32`'s marks: the f32 hint in its runtime options
    and the precise attribute on every operation."""
    try:
        hint = model.get_rt_info(_HINT_PATH).astype(str)
    except RuntimeError:  # no such rt_info entry
        return False
    return hint == "f32" and all(_RT_KEY in op.get_rt_info() for op in model.get_ops())
