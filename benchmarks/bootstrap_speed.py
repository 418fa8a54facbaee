"""How long the paired bootstrap behind compare's verdict takes: val.py --save-stats on a data set, then mAP on
B resamples of its validation images (utils.validation.image_stats.ImageStats.resampled_maps), timed.

    python -m benchmarks.bootstrap_speed                          # yolov5n.pt on COCO128 at 320, 1000 resamples
    python -m benchmarks.bootstrap_speed --imgsz 640 --resamples 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--weights", default="yolov5n.pt")
    p.add_argument("--data", default="coco128.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3, help="timings of the resampling, the median printed")
    a = p.parse_args()
    import val
    from utils.compare.bootstrap import Resamples
    from utils.validation.image_stats import IMAGE_STATS, load_image_stats

    with tempfile.TemporaryDirectory() as d:
        val.run(data=a.data, weights=a.weights, imgsz=a.imgsz, workers=0, project=d, plots=False, save_stats=True)
        s = load_image_stats(Path(d) / "exp" / IMAGE_STATS)
    res = Resamples(s.files, a.resamples, seed=0)
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        maps = s.resampled_maps(res.counts)
        times.append(time.perf_counter() - t)
    lo, hi = np.percentile(maps[:, 1], [2.5, 97.5])
    print(f"{a.weights} on {a.data} at {a.imgsz}: {s.n_images} images, {len(s.conf)} detections, "
          f"{len(np.unique(s.tcls))} classes; mAP50-95 {s.map()[1]:.4f} (bootstrap 95% [{lo:.4f}, {hi:.4f}])")
    each = ", ".join(f"{x:.2f}" for x in times)
    print(f"{a.resamples} resamples: {np.median(times):.2f} s (median of {a.repeats}; each {each})")


if __name__ == "__main__":
    main()
