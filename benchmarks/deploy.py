"""Export a model to every format, validate each export and time it, as YOLOv5's benchmarks.py.

    python benchmarks.py --weights yolov5n.pt --imgsz 640 --data coco128.yaml --device cpu
    python benchmarks.py --weights best.pt --imgsz 320 --include onnx openvino     # a subset of the formats
    python benchmarks.py --weights yolov5n.pt --test                             # export only
    python benchmarks.py --weights yolov5n.pt --pt-only                          # PyTorch only
    python benchmarks.py --weights yolov5n.pt --hard-fail                        # exit 1 if a format fails
    python benchmarks.py --weights yolov5n.pt --hard-fail 0.25                   # ... or scores below 0.25
    python benchmarks.py --weights best.pt --include openvino openvino-fp16 openvino-bf16 openvino-int8  # precisions
    python benchmarks.py --weights best.pt --include tflite executorch coreml  # edge (requirements-edge.txt)

OpenVINO at lower precision on request: `openvino-fp16` (export --half: weights stored in fp16), `openvino-bf16`
(the fp32 export run with INFERENCE_PRECISION_HINT bf16; a row with its reason on a CPU without bf16) and
`openvino-int8` (export --int8: NNCF post-training quantization calibrated on --data's train images). The edge
formats on request: `tflite` (LiteRT interpreter), `executorch` (XNNPACK), `coreml` (exported and sized only: it
runs on Apple devices).

For each format (PyTorch, TorchScript, ONNX, OpenVINO): export.run writes the file beside the weights (fp32, or
fp16 with --half on CUDA; fixed --imgsz and --batch-size), then `val.run(weights=file, task='speed')` scores it on
the val split of --data (square letterboxed batches for every format, so the scores compare) and gives its
inference time in ms per image (val.py's "inference" time: the model call alone, without pre-processing and
NMS; ONNX Runtime and OpenVINO run on the CPU). The table: Format | Size (MB) | mAP50-95 | Inference time (ms);
a format that fails is a row with its error, and the others go on. `--hard-fail` turns a failure (or, given a
number, an mAP50-95 below it) into exit status 1 after the table is printed.

(`python benchmarks.py` runs this module; `import benchmarks` finds the benchmarks/ package, so Python code
imports `benchmarks.deploy`.)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from utils.errors import UserError  # noqa: E402
from utils.log import LOGGER, setup_logging  # noqa: E402

__all__ = ["FORMATS", "BenchRow", "BenchmarkFailure", "run", "table_lines", "parse_opt", "main", "cli"]

# (name in the table, export.py's --include name; None: the .pt itself)
FORMATS = (("PyTorch", None), ("TorchScript", "torchscript"), ("ONNX", "onnx"), ("OpenVINO", "openvino"),
           ("OpenVINO fp16", "openvino-fp16"), ("OpenVINO bf16", "openvino-bf16"), ("OpenVINO int8", "openvino-int8"),
           ("TFLite", "tflite"), ("ExecuTorch", "executorch"), ("CoreML", "coreml"))
_KEYS = {"pytorch": 0, "torchscript": 1, "onnx": 2, "openvino": 3, "openvino-fp16": 4, "openvino-bf16": 5,
         "openvino-int8": 6, "tflite": 7, "executorch": 8, "coreml": 9}
DEFAULT = 4  # without --include: the first four (fp32); the OpenVINO precisions and edge formats on request


class BenchmarkFailure(RuntimeError):
    """--hard-fail: a format failed, or scored below the floor. The message names them."""


@dataclass
class BenchRow:
    """One format's result; `error` is '' when it exported (and, unless --test, validated)."""

    format: str
    file: Path | None = None
    size_mb: float | None = None
    map: float | None = None  # mAP50-95 on the val split
    ms: float | None = None  # val.py's inference ms per image
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _formats(include, pt_only: bool) -> list[tuple[str, str | None]]:
    if pt_only:
        return [FORMATS[0]]
    if not include:
        return list(FORMATS[:DEFAULT])
    keys = [str(k).lower().lstrip(".") for k in ([include] if isinstance(include, str) else include)]
    bad = [k for k in keys if k not in _KEYS]
    if bad:
        raise UserError(f"--include {' '.join(bad)}: not a format; valid: {', '.join(_KEYS)}")
    return [FORMATS[i] for i in sorted({_KEYS[k] for k in keys})]


def _floor(hard_fail) -> float | None:
    """--hard-fail's mAP50-95 floor (None for a plain flag)."""
    if isinstance(hard_fail, bool) or hard_fail is None:
        return None
    try:
        return float(hard_fail)
    except (TypeError, ValueError):
        raise UserError(f"--hard-fail {hard_fail!r}: give no value (fail on any error) or an mAP50-95 floor "
                        "such as 0.25") from None


def _one(name: str, fmt: str | None, weights: Path, imgsz: int, batch_size: int, data: str, device: str,
         half: bool, test: bool, workers: int, project: str) -> BenchRow:
    """Export and validate one format; any Exception becomes the row's error (Ctrl-C and exits go through)."""
    import export
    import val
    from utils.deploy.runners import short_error
    from utils.deploy.runtimes import cpu_has_bf16

    from utils.files import size_mb

    row = BenchRow(name)
    base, _, precision = (fmt or "").partition("-")  # openvino-fp16 / -bf16 / -int8: OpenVINO at that precision
    try:
        if precision == "bf16" and not cpu_has_bf16():
            raise RuntimeError("this CPU has no bf16 (OpenVINO would run the model at f32)")
        f = weights if fmt is None else Path(export.run(
            weights=str(weights), imgsz=(imgsz, imgsz), batch_size=batch_size, device=device, include=(base,),
            half=half or precision == "fp16", int8=precision == "int8", data=data)[base])
        row.file, row.size_mb = f, size_mb(f)
        if not test and base != "coreml":  # a CoreML package runs on Apple devices only: its size, no score
            res, _, times = val.run(data=data, weights=str(f), batch_size=batch_size, imgsz=imgsz, task="speed",
                                    device=device, workers=workers, half=half, plots=False, project=project,
                                    name=name.lower().replace(" ", "_"), exist_ok=True,
                                    ov_precision="bf16" if precision == "bf16" else "f32")
            row.map, row.ms = float(res[3]), float(times[1])
    except Exception as e:  # noqa: BLE001  (a failed format is a row; --hard-fail decides the exit status)
        row.error = short_error(e, 300)
        LOGGER.warning(f"WARNING: benchmark of {name} failed: {row.error}")
    return row


def run(weights="yolov5n.pt", imgsz: int = 640, batch_size: int = 1, data: str = "coco128.yaml",
        device: str = "", half: bool = False, test: bool = False, pt_only: bool = False, hard_fail=False,
        include=None, workers: int = 2, project: str | Path = ROOT / "runs" / "benchmarks") -> list[BenchRow]:
    """Benchmark every format (or `include`, or PyTorch only); returns the rows, after logging the table.

    hard_fail: True raises BenchmarkFailure when a format failed; a number also when an mAP50-95 is below it.
    """
    import torch

    from models import resolve_weights
    from utils.torch_utils import select_device

    floor = _floor(hard_fail)
    fmts = _formats(include, pt_only)
    w = resolve_weights(weights[0] if isinstance(weights, (list, tuple)) else weights)
    if w.suffix != ".pt":
        raise UserError(f"--weights {w}: benchmarks start from a PyTorch checkpoint (.pt), got "
                        f"{w.suffix or 'no suffix'}")
    imgsz = int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz)
    if imgsz < 32 or batch_size < 1:
        raise UserError(f"--imgsz {imgsz} must be >= 32 and --batch-size {batch_size} >= 1")
    dev = select_device(device)
    if half and dev.type == "cpu":
        raise UserError("--half needs a CUDA device (--device 0): fp16 is not run on the CPU")
    t0 = time.time()
    rows = [_one(name, fmt, w, imgsz, batch_size, data, device, half, test, workers, str(project))
            for name, fmt in fmts]
    lines = table_lines(rows, test)
    LOGGER.info(f"\nBenchmarks complete ({time.time() - t0:.1f}s): {w}, {imgsz}x{imgsz}, batch {batch_size}, "
                f"{'fp16' if half else 'fp32'}, {_environment(dev, torch)}\n" + "\n".join(lines))
    _check(rows, hard_fail, floor)
    return rows


def _environment(dev, torch) -> str:
    from utils.compare.report import environment
    from utils.deploy.runners import runtime_versions

    v = runtime_versions()
    return (f"{environment(dev)[1]}, torch {torch.__version__}, onnxruntime {v['onnxruntime']}, openvino "
            f"{v['openvino']}")


def _check(rows: list[BenchRow], hard_fail, floor: float | None) -> None:
    if not hard_fail:
        return
    failed = [f"{r.format} ({r.error})" for r in rows if not r.ok]
    if failed:
        raise BenchmarkFailure(f"--hard-fail: {len(failed)} format(s) failed: {'; '.join(failed)}")
    low = [f"{r.format} {r.map:.4f}" for r in rows if floor is not None and r.map is not None and r.map < floor]
    if low:
        raise BenchmarkFailure(f"--hard-fail {floor}: mAP50-95 below the floor: {', '.join(low)}")


def table_lines(rows: list[BenchRow], test: bool = False) -> list[str]:
    """The table as markdown lines: Format | Size (MB) | mAP50-95 | Inference time (ms), with an Error column
    when a format failed (with --test: Format | Export | Size (MB))."""
    errors = any(not r.ok for r in rows)
    head = ["Format", "Export", "Size (MB)"] if test else ["Format", "Size (MB)", "mAP50-95", "Inference time (ms)"]
    head += ["Error"] if errors else []
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        size = "-" if r.size_mb is None else f"{r.size_mb:.1f}"
        if test:
            cells = [r.format, "yes" if r.ok else "no", size]
        else:
            cells = [r.format, size, "-" if r.map is None else f"{r.map:.4f}", "-" if r.ms is None else f"{r.ms:.2f}"]
        if errors:
            cells.append(r.error.replace("|", "\\|") or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_opt(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=str, default="yolov5n.pt", help="weights path (.pt)")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--data", type=str, default="coco128.yaml", help="dataset.yaml path")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu (default: the first GPU, "
                                                 "else the CPU, as official YOLOv5)")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    p.add_argument("--test", action="store_true", help="test exports only")
    p.add_argument("--pt-only", action="store_true", help="test PyTorch only")
    p.add_argument("--hard-fail", nargs="?", const=True, default=False,
                   help="exit 1 when a format fails; with a number, also when an mAP50-95 is below it")
    p.add_argument("--include", nargs="+", default=None, help=f"only these formats: {', '.join(_KEYS)}")
    p.add_argument("--workers", type=int, default=2, help="max dataloader workers of the validation")
    p.add_argument("--project", default=str(ROOT / "runs" / "benchmarks"), help="validation output folder")
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> list[BenchRow]:
    setup_logging()
    return run(**vars(opt))


def cli(argv: list[str] | None = None) -> None:
    """`python benchmarks.py`: a bad option exits 2 with one `ERROR:` line; --hard-fail failures exit 1."""
    from utils.cli import cli_errors

    try:
        cli_errors(main)(parse_opt(argv))
    except BenchmarkFailure as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
