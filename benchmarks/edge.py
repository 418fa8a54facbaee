"""The edge formats for every bundled config: does it convert, how far is it from PyTorch, what does it score and
how long does it take, against the baseline in the same runtime.

    python -m benchmarks.edge                                   # the six configs at 320 on COCO128, 2 threads
    python -m benchmarks.edge --cfgs yolov5n.yaml yolov5n_biformer.yaml --imgsz 640

Each config is built with yolov5n.pt's weights carried in (utils.transfer) and every plug-in's gate set to --gamma
(0.1), so the attention is in the path and the detections are near yolov5n's. export.run writes ONNX (the server
reference), TFLite, ExecuTorch and CoreML at --imgsz (fixed size, batch 1, fp32); each is then run on the bundled
bus.jpg against PyTorch (max |diff| / max |output|), and val.py (task 'speed': square batches of one image, the
same for every format) gives its mAP50-95 on --data and its inference ms per image (the model call alone). CoreML is
converted and sized only (it runs on Apple devices). The overhead column is the config's ms over yolov5n's in the
same runtime. Rows go to benchmarks/results/edge_formats.csv.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("yolov5n.yaml", "yolov5n_biformer.yaml", "yolov5n_hilo.yaml", "yolov5n_slide.yaml",
           "yolov5n_control.yaml", "yolov5n_transformer.yaml")
FORMATS = ("pt", "onnx", "tflite", "executorch", "coreml")


def _checkpoint(cfg: str, gamma: float, out: Path) -> Path:
    import torch

    from models.common import Residual
    from models.yolo import Model
    from utils.checkpoint import load_checkpoint, save_checkpoint
    from utils.transfer import transfer_weights

    ckpt = load_checkpoint(ROOT / "weights" / "yolov5n.pt")
    torch.manual_seed(0)
    model = Model(cfg, nc=80, verbose=False)
    transfer_weights(model, ckpt)
    for m in model.modules():
        if isinstance(m, Residual):
            with torch.no_grad():
                m.gamma.fill_(gamma)
    names = ckpt.get("names") if isinstance(ckpt, dict) else ckpt.names
    return save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": list(names)}, out)


def _output(fmt: str, f: Path, x):
    import numpy as np
    import torch

    from models import load_model
    from utils.deploy.edge import open_edge
    from utils.deploy.runtimes import ort_session

    if fmt == "pt":
        with torch.no_grad():
            return load_model(f, fuse=True)(x)[0].numpy()
    if fmt == "onnx":
        s = ort_session(f)
        return s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]
    return np.asarray(open_edge(fmt, f).run(x.numpy()))


def bench(cfg: str, imgsz: int, data: str, gamma: float, work: Path) -> list[dict]:
    import export
    import val
    from utils.deploy.runners import short_error
    from utils.deploy.writers import probe_image
    from utils.files import size_mb

    pt = _checkpoint(cfg, gamma, work / Path(cfg).with_suffix(".pt").name)
    x = probe_image([imgsz, imgsz], 1, "cpu", None).float()
    ref = _output("pt", pt, x)
    rows = []
    for fmt in FORMATS:
        row = {"config": Path(cfg).stem, "format": fmt, "converts": "yes", "convert_s": "", "max_rel_err": "",
               "map50_95": "", "ms": "", "size_mb": "", "error": ""}
        try:
            t = time.perf_counter()
            f = pt if fmt == "pt" else Path(export.run(weights=str(pt), imgsz=(imgsz, imgsz), include=(fmt,),
                                                       check=False)[fmt])
            row["convert_s"] = "" if fmt == "pt" else f"{time.perf_counter() - t:.1f}"
            row["size_mb"] = f"{size_mb(f):.1f}"
            if fmt != "coreml":
                out = _output(fmt, f, x)
                row["max_rel_err"] = f"{abs(out - ref).max() / abs(ref).max():.1e}"
                res, _, times = val.run(data=data, weights=str(f), batch_size=1, imgsz=imgsz, task="speed",
                                        workers=0, plots=False, project=work / "val", name=f"{row['config']}_{fmt}")
                row["map50_95"], row["ms"] = f"{res[3]:.4f}", f"{times[1]:.1f}"
        except Exception as e:  # noqa: BLE001  (a format that fails is a row with its reason)
            row["converts"], row["error"] = "no", short_error(e, 300)
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cfgs", nargs="+", default=list(CONFIGS))
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--data", default="coco128.yaml")
    p.add_argument("--gamma", type=float, default=0.1, help="every plug-in's Residual gate")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--csv", default=str(ROOT / "benchmarks" / "results" / "edge_formats.csv"))
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="edge_bench_"))
    try:
        rows = [r for cfg in a.cfgs for r in bench(cfg, a.imgsz, a.data, a.gamma, work)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = {r["format"]: r["ms"] for r in rows if r["config"] == "yolov5n" and r["ms"]}
    for r in rows:
        r["overhead_vs_yolov5n"] = (f"{float(r['ms']) / float(base[r['format']]):.2f}x"
                                    if r["ms"] and base.get(r["format"]) else "")
    cols = list(rows[0])
    Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(a.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
