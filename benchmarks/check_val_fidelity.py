"""Check that val.py reproduces official YOLOv5's numbers for yolov5n on the bundled COCO128.

    python -m benchmarks.check_val_fidelity            # 640 and 320 (about 1-2 min each on a shared CPU)
    python -m benchmarks.check_val_fidelity --imgsz 320

The reference values are what official YOLOv5 (v7.0 val.py) prints for
`python val.py --weights yolov5n.pt --data coco128.yaml --imgsz N` on this data. Exit status 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REFERENCE = {  # imgsz -> (P, R, mAP50, mAP50-95); None where the reference was not given
    640: (0.572, 0.508, 0.560, 0.361),
    320: (None, None, 0.453, 0.290),
}
TOLERANCE = 0.002


def check(imgsz: int, workers: int) -> bool:
    import val
    from utils.log import setup_logging

    setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        (mp, mr, map50, map_, *_), _, _ = val.run(data="coco128.yaml", weights="yolov5n.pt", imgsz=imgsz,
                                                  project=tmp, workers=workers, plots=False, device="cpu")
    ok = True
    print(f"\nimgsz {imgsz}:  {'':9}{'P':>8}{'R':>8}{'mAP50':>8}{'mAP50-95':>10}")
    print(f"{'':14}ours     {mp:8.4f}{mr:8.4f}{map50:8.4f}{map_:10.4f}")
    ref = REFERENCE[imgsz]
    print(f"{'':14}YOLOv5   " + "".join(f"{'-' if r is None else f'{r:.3f}':>{w}}" for r, w in zip(ref, (8, 8, 8, 10))))
    for name, got, want in zip(("P", "R", "mAP50", "mAP50-95"), (mp, mr, map50, map_), ref):
        if want is not None and abs(got - want) > TOLERANCE:
            print(f"MISMATCH {name}: {got:.4f} vs {want:.3f} (tolerance {TOLERANCE})")
            ok = False
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description="val.py against official YOLOv5's printed numbers", allow_abbrev=False)
    p.add_argument("--imgsz", type=int, nargs="+", default=[640, 320], choices=sorted(REFERENCE))
    p.add_argument("--workers", type=int, default=2)
    opt = p.parse_args()
    results = [check(s, opt.workers) for s in opt.imgsz]
    print("\nall within tolerance" if all(results) else "\nFAILED")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
