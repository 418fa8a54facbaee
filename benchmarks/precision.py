"""What lower precision costs each model in OpenVINO: mAP50-95 and latency at f32, fp16 weights, bf16 and int8.

    python -m benchmarks.precision --job runs/compare/exp            # every model's seed-0 best.pt of a compare job
    python -m benchmarks.precision --weights a.pt b.pt --imgsz 320

Each checkpoint goes through `benchmarks.py --include openvino openvino-fp16 openvino-bf16 openvino-int8`
(benchmarks/deploy.py): export.py writes the OpenVINO model (fp32; --half: weights in fp16; --int8: NNCF on --data's
train images), val.py scores it on --data's val split at --imgsz (square letterboxed batches of 1, task='speed')
and gives its inference ms per image. bf16 is the fp32 file run with INFERENCE_PRECISION_HINT bf16, and is a row
with its reason on a CPU without bf16. One table row per model, the mAP50-95 drop against f32 in brackets.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks.deploy import run as bench
from utils.files import read_yaml
from utils.log import setup_logging

VARIANTS = (("f32", "OpenVINO"), ("fp16", "OpenVINO fp16"), ("bf16", "OpenVINO bf16"), ("int8", "OpenVINO int8"))


def job_weights(job: Path) -> list[Path]:
    """The seed-0 best.pt of every model in a compare.py job folder, in the job's order (its opt.yaml, baseline
    first); a model whose seed 0 did not finish is left out."""
    cfgs = (read_yaml(job / "opt.yaml") or {}).get("cfgs") or []
    runs = [job / f"{Path(c).stem}_seed0" / "weights" / "best.pt" for c in cfgs]
    return [w for w in runs if w.is_file()]


def measure(weights: Path, imgsz: int, data: str, workers: int) -> dict[str, tuple]:
    """variant -> (mAP50-95, ms per image, size MB, error) for one checkpoint (exported in a temporary copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp) / weights.name
        shutil.copy(weights, w)
        rows = bench(weights=str(w), imgsz=imgsz, data=data, workers=workers, project=Path(tmp) / "val",
                     include=["openvino", "openvino-fp16", "openvino-bf16", "openvino-int8"])
    by_name = {r.format: r for r in rows}
    return {v: (by_name[n].map, by_name[n].ms, by_name[n].size_mb, by_name[n].error) for v, n in VARIANTS}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--job", type=Path, default=None, help="a compare.py job folder (its seed-0 best.pt files)")
    p.add_argument("--weights", nargs="*", type=Path, default=[], help="checkpoints")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--data", default="coco128.yaml")
    p.add_argument("--workers", type=int, default=0)
    opt = p.parse_args(argv)
    setup_logging(verbose=False)
    weights = (job_weights(opt.job) if opt.job else []) + list(opt.weights)
    if not weights:
        p.error("give --job or --weights")
    out = ["| model | f32 mAP50-95 | fp16 | bf16 | int8 | f32 ms | fp16 ms | bf16 ms | int8 ms "
           "| MB f32 / fp16 / int8 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for w in weights:
        r = measure(w, opt.imgsz, opt.data, opt.workers)
        m32 = r["f32"][0]

        def cell(v):
            m, _, _, err = r[v]
            if err:
                return "n/a" if "no bf16" in err else "failed"
            return f"{m:.4f}" if v == "f32" or m32 is None else f"{m:.4f} ({m - m32:+.4f})"

        ms = [f"{r[v][1]:.1f}" if r[v][1] is not None else "n/a" for v, _ in VARIANTS]
        mb = " / ".join(f"{r[v][2]:.1f}" if r[v][2] else "-" for v in ("f32", "fp16", "int8"))
        name = w.parent.parent.name.removesuffix("_seed0") if w.name == "best.pt" else w.stem
        out.append(f"| {name} | " + " | ".join(cell(v) for v, _ in VARIANTS) + " | " + " | ".join(ms) + f" | {mb} |")
        print(out[-1], flush=True)
    print("\n".join(out))


if __name__ == "__main__":
    main()
