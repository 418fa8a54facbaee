"""What precision OpenVINO really computes in on this CPU, for each way a model can be compiled.

    python -m benchmarks.ov_precision                                # yolov5n.pt and the plug-in configs, 320
    python -m benchmarks.ov_precision --weights best.pt --imgsz 640

Each model is exported by export.py (fixed size, the f32 pin written into the IR) and run on the bundled photos
by OpenVINO's CPU plugin in four ways; each row is max |output - PyTorch| / max |PyTorch output| over the decoded
tensor (boxes, objectness, class scores):

- `f32`: compile_openvino(..., precision='f32'), what val.py / detect.py / hubconf / benchmarks.py do;
- `plain`: `openvino.Core().compile_model(xml, "CPU")` with no options, on the pinned file (what a user's own
  OpenVINO code does);
- `plain-unpinned`: the same on the file with the pin taken off (what an IR without it gives);
- `bf16`: compile_openvino(..., precision='bf16'), the lower precision asked for.

On a CPU without bf16 (no BF16 in OPTIMIZATION_CAPABILITIES) every row is f32 and within ~1e-6. On a CPU with
bf16, `plain-unpinned` and `bf16` show bf16's error (~1e-2); `f32` must stay ~1e-6, and `plain` shows whether
the pin holds for a plain compile on this CPU and OpenVINO version.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

import export
from models import load_model
from models.backends import DetectBackend
from models.yolo import Model
from utils.checkpoint import save_checkpoint
from utils.deploy.runtimes import compile_openvino, compiled_precision, unpin
from utils.deploy.writers import probe_image
from utils.log import setup_logging
from utils.paths import ROOT

CONFIGS = ("yolov5n_biformer.yaml", "yolov5n_hilo.yaml", "yolov5n_slide.yaml")
MODES = ("f32", "plain", "plain-unpinned", "bf16")


def _inputs(imgsz: int) -> torch.Tensor:
    return probe_image([imgsz, imgsz], 1, torch.device("cpu"), torch.float32)


def _checkpoint(cfg: str, folder: Path) -> Path:
    """A 80-class model of `cfg` with yolov5n's trained weights where the layers match, plug-ins switched on."""
    from models.common import Residual
    from utils.transfer import transfer_weights

    torch.manual_seed(0)
    model = Model(cfg, nc=80, verbose=False)
    src = load_model(ROOT / "weights" / "yolov5n.pt", fuse=False)
    transfer_weights(model, {"model": src.state_dict(), "yaml": src.yaml})
    for m in model.modules():
        if isinstance(m, Residual):
            m.gamma.data.fill_(1.0)
    model.names = list(src.names)
    return save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": model.names},
                           folder / f"{Path(cfg).stem}.pt")


def measure(weights: Path, imgsz: int) -> dict[str, tuple[float, str]]:
    """mode -> (relative error against PyTorch, the precision the compiled model reports)."""
    import openvino as ov

    x = _inputs(imgsz)
    with torch.no_grad():
        ref = DetectBackend(weights)(x)[0].numpy()
    folder = export.run(weights=str(weights), imgsz=imgsz, include=("openvino",), check=False)["openvino"]
    xml = next(folder.glob("*.xml"))
    core = ov.Core()
    unpinned = unpin(core.read_model(str(xml)))
    compiled = {"f32": compile_openvino(folder), "plain": core.compile_model(str(xml), "CPU"),
                "plain-unpinned": core.compile_model(unpinned, "CPU"),
                "bf16": compile_openvino(folder, precision="bf16")}
    out = {}
    for mode, c in compiled.items():
        y = np.asarray(c(x.numpy())[0], dtype=np.float32)
        out[mode] = (float(np.abs(y - ref).max() / np.abs(ref).max()), compiled_precision(c))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", nargs="*", default=None, help="checkpoints (default: yolov5n.pt and the plug-ins)")
    p.add_argument("--imgsz", type=int, default=320)
    opt = p.parse_args(argv)
    setup_logging(verbose=False)
    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    name = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    print(f"CPU: {name}; OpenVINO {ov.__version__.split('-')[0]}; capabilities {', '.join(caps)}; --imgsz {opt.imgsz}")
    print(f"| model | {' | '.join(MODES)} |\n|---|{'---|' * len(MODES)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if opt.weights:  # copies, so the exports land in the temporary folder, not beside the user's files
            weights = [Path(shutil.copy(w, tmp / Path(w).name)) for w in opt.weights]
        else:
            shutil.copy(ROOT / "weights" / "yolov5n.pt", tmp / "yolov5n.pt")
            weights = [tmp / "yolov5n.pt"] + [_checkpoint(c, tmp) for c in CONFIGS]
        for w in weights:
            r = measure(w, opt.imgsz)
            print(f"| {w.stem} | " + " | ".join(f"{r[m][0]:.1e} ({r[m][1]})" for m in MODES) + " |")


if __name__ == "__main__":
    main()
