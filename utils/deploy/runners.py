"""A model as it is deployed on the CPU: exported in memory to ONNX / OpenVINO and run by ONNX Runtime / OpenVINO.

Used by compare.py (deployed latency columns), benchmarks/deploy.py (`python benchmarks.py`) and
benchmarks/deploy_latency.py. The export is export.py's own (utils.deploy.writers' `export_onnx`, `export_openvino`):
fp32, a fixed input size and batch, Detect's single decoded output, ONNX opset 17.

Runners (`OrtRunner`, `OpenVINORunner`) time like a PyTorch model in `utils.deploy.latency.measure_latency`: each has
`batch` (the fixed batch size it was exported for), `prepare(x)` (the torch input as the runtime takes it,
made once before the timed calls) and `__call__(prepared)`. Threads: both runtimes get `threads` intra-op
threads (default: torch.get_num_threads(), so all three runtimes use the same count) and no inter-op pool;
OpenVINO runs one stream with the LATENCY hint.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import tempfile
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from models.yolo import Detect
from utils.deploy.runtimes import ORT_LEVELS, compile_openvino, openvino_xml, ort_session
from utils.deploy.writers import export_metadata, export_onnx, export_openvino
from utils.errors import UserError

__all__ = ["RUNTIMES", "RUNTIME_LABELS", "ORT_LEVELS", "runtime_versions", "export_for_deploy", "OrtRunner",
           "OpenVINORunner", "DeployRunners", "deploy_runners", "open_runner", "short_error", "temp_deploy_dir"]

RUNTIMES = ("onnxruntime", "openvino")  # the deployed CPU runtimes, each with the format it runs
RUNTIME_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino"}
RUNTIME_LABELS = {"onnxruntime": "ORT", "openvino": "OV"}


def short_error(e: BaseException, limit: int = 200) -> str:
    """'Type: message' on one line, cut to `limit` characters: what a table cell or report line can hold."""
    msg = " ".join(str(e).split())
    text = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def runtime_versions(load: bool = True) -> dict[str, str]:
    """runtime -> version, or 'missing (...)' where the package cannot be imported. With `load` False the versions
    are read from the installed packages' metadata, without loading the runtimes into this process."""
    out = {}
    for name in RUNTIMES:
        try:
            if load:
                mod = __import__(name)
                out[name] = str(getattr(mod, "__version__", "?")).split("-")[0]
            else:
                out[name] = importlib.metadata.version(name).split("-")[0]
        except Exception as e:  # noqa: BLE001  (a broken install reads as missing, with its reason)
            out[name] = f"missing ({short_error(e)})"
    return out


def _as_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    if len(imgsz) not in (1, 2):
        raise UserError(f"imgsz {imgsz!r}: give one size or (h, w)")
    return (int(imgsz[0]),) * 2 if len(imgsz) == 1 else (int(imgsz[0]), int(imgsz[1]))


def _export_copy(model: nn.Module) -> nn.Module:
    """A CPU fp32 eval copy of `model` whose Detect returns only the decoded tensor (as export.py sets it)."""
    m = deepcopy(model).float().cpu().eval()
    for p in m.parameters():
        p.requires_grad_(False)
    for d in m.modules():
        if isinstance(d, Detect):
            d.inplace, d.export = False, True
    return m


@contextlib.contextmanager
def _quiet_export():
    """Keep the exporters' chatter (torch.onnx prints, OpenVINO's conversion log) out of the caller's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def export_for_deploy(model: nn.Module, imgsz: int | Sequence[int], out_dir: str | Path, name: str,
                      formats: Sequence[str] = ("onnx", "openvino"), batch: int = 1, opset: int = 17,
                      simplify: bool = False) -> dict[str, Path | BaseException]:
    """Export an in-memory model as export.py does (fp32, fixed (batch, 3, h, w)) into out_dir/name.*.

    Returns format -> written path, or the exception that format's export raised (OpenVINO is converted from the
    ONNX file when that was written). The model is copied; the caller's stays as it was.
    """
    bad = [f for f in formats if f not in ("onnx", "openvino")]
    if bad:
        raise UserError(f"formats {bad}: export_for_deploy writes 'onnx' and 'openvino' only")
    h, w = _as_hw(imgsz)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = _export_copy(model)
    im = torch.zeros(batch, 3, h, w)
    if not getattr(m, "names", None):
        m.names = [str(i) for i in range(getattr(m.model[-1], "nc", 0))]
    meta = export_metadata(m, [h, w], batch, dynamic=False)
    file = out_dir / f"{name}.pt"  # only its stem and folder are used
    written: dict[str, Path | BaseException] = {}
    with torch.no_grad(), _quiet_export():
        for fmt in formats:
            try:
                if fmt == "onnx":
                    written[fmt] = export_onnx(m, im, file, meta, opset, False, simplify)
                else:
                    onnx_file = written.get("onnx")
                    written[fmt] = export_openvino(m, im, file, meta, opset, False, False,
                                                          onnx_file if isinstance(onnx_file, Path) else None)
            except Exception as e:  # noqa: BLE001  (a format that fails is reported, the others go on)
                written[fmt] = e
    return written


class OrtRunner:
    """An ONNX file in an ONNX Runtime CPU session: `runner(runner.prepare(x))` returns the first output.

    level: graph optimisation ('disable', 'basic', 'extended', 'all'; ORT's default is 'all').
    profile: a file prefix to write ORT's JSON operator profile under (`end_profiling()` returns the path).
    """

    def __init__(self, path: str | Path, threads: int | None = None, level: str = "all",
                 profile: str | Path | None = None, optimized_model: str | Path | None = None):
        self.session = ort_session(path, threads, level, sequential=True, profile=profile,
                                   optimized_model=optimized_model)
        self.path, self.threads, self.level = Path(path), int(threads or torch.get_num_threads()), level
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def prepare(self, x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().float().cpu().numpy())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def end_profiling(self) -> str:
        return self.session.end_profiling()


class OpenVINORunner:
    """An OpenVINO model (an IR folder or .xml, or an .onnx file) compiled for the CPU with `threads` threads,
    one stream, the LATENCY hint and `precision` (f32 unless asked); `runner(runner.prepare(x))` returns the first
    output."""

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "f32"):
        path = Path(path)
        try:
            model_file = path if path.suffix == ".onnx" else openvino_xml(path)
        except FileNotFoundError as e:
            raise UserError(f"OpenVINO model {path}: {e}") from None
        if not model_file.is_file():
            raise UserError(f"OpenVINO model {path}: no such file")
        self.path, self.threads, self.precision = model_file, int(threads or torch.get_num_threads()), precision
        self.compiled = compile_openvino(model_file, self.threads, precision, latency=True)
        self.request = self.compiled.create_infer_request()
        shape = self.compiled.input(0).get_partial_shape()
        self.batch = shape[0].get_length() if shape[0].is_static else None

    def prepare(self, x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().float().cpu().numpy())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x})[self.compiled.output(0)]


def open_runner(runtime: str, path: str | Path, threads: int | None = None):
    """The runner of `runtime` ('onnxruntime' or 'openvino') on an exported file or folder."""
    if runtime == "onnxruntime":
        return OrtRunner(path, threads)
    if runtime == "openvino":
        return OpenVINORunner(path, threads)
    raise UserError(f"runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")


@dataclass
class DeployRunners:
    """What `deploy_runners` made of one model: runtime -> runner, and runtime -> why it has none."""

    runners: dict[str, object]
    errors: dict[str, str]
    files: dict[str, Path]


def deploy_runners(model: nn.Module, imgsz: int | Sequence[int], out_dir: str | Path, name: str,
                   runtimes: Sequence[str] = RUNTIMES, threads: int | None = None,
                   versions: Mapping[str, str] | None = None) -> DeployRunners:
    """Export `model` (fixed size, batch 1, fp32) and open one runner per runtime; never raises for a runtime
    that is missing or a format that fails to export or load: its reason goes into `errors`."""
    versions = versions or runtime_versions()
    runners, errors, files = {}, {}, {}
    usable = []
    for rt in runtimes:
        if rt not in RUNTIMES:
            raise UserError(f"runtime {rt!r}; valid: {', '.join(RUNTIMES)}")
        if versions.get(rt, "").startswith("missing"):
            errors[rt] = f"{rt} {versions[rt]}"
        else:
            usable.append(rt)
    fmts = list(dict.fromkeys(["onnx"] + [RUNTIME_FORMAT[rt] for rt in usable])) if usable else []
    try:
        __import__("onnx")  # optional, probed here: both formats go through ONNX
    except Exception as e:  # noqa: BLE001
        for rt in usable:
            errors[rt] = f"export needs the package 'onnx': {short_error(e)}"
        usable, fmts = [], []
    written = export_for_deploy(model, imgsz, out_dir, name, fmts) if fmts else {}
    for rt in usable:
        f = written.get(RUNTIME_FORMAT[rt])
        if isinstance(f, BaseException):
            errors[rt] = f"{RUNTIME_FORMAT[rt]} export failed: {short_error(f)}"
            continue
        try:
            runners[rt] = open_runner(rt, f, threads)
            files[rt] = f
        except Exception as e:  # noqa: BLE001
            errors[rt] = f"{rt} could not load {Path(f).name}: {short_error(e)}"
    return DeployRunners(runners, errors, files)


def temp_deploy_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder for exported files that are only timed."""
    return tempfile.TemporaryDirectory(prefix="deploy_")
