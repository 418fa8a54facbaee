"""How long the paired bootstrap behind compare's verdict takes: val.py --save-stats on a data set, then mAP on
B resamples of its validation images (utils.validation.image_stats.ImageStats.resampled_maps), timed; then the
same for COCO's AP small, medium and large (utils.compare.size_stats.SizeStats.resampled_maps).

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
    from utils.compare.size_stats import SizeStats
    from utils.compare.sizes import build_size_gt, detections_from_txt
    from utils.data.config import load_data_config
    from utils.validation.image_stats import IMAGE_STATS, load_image_stats

    data = load_data_config(a.data)
    with tempfile.TemporaryDirectory() as d:
        val.run(data=a.data, weights=a.weights, imgsz=a.imgsz, workers=0, project=d, plots=False, save_stats=True,
                save_txt=True, save_conf=True)
        s = load_image_stats(Path(d) / "exp" / IMAGE_STATS)
        size_gt = build_size_gt(data.val, data.names, data.nc)
        t = time.perf_counter()
        sizes = SizeStats.from_coco(size_gt, detections_from_txt(Path(d) / "exp" / "labels", size_gt))
        t_match = time.perf_counter() - t
    res = Resamples(s.files, a.resamples, seed=0)
    sizes = sizes.reordered(s.files)
    print(f"{a.weights} on {a.data} at {a.imgsz}: {s.n_images} images, {len(s.conf)} detections, "
          f"{len(np.unique(s.tcls))} classes, {_points(s)} points of the precision-recall curves (fp_runs)")
    for what, stats, names in (("mAP50, mAP50-95", s, {"mAP50-95": 1}),
                               (f"AP small/medium/large (COCOeval matching {t_match:.2f} s)", sizes,
                                {"AP small": 0, "AP medium": 1, "AP large": 2})):
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            maps = stats.resampled_maps(res.counts)
            times.append(time.perf_counter() - t)
        each = ", ".join(f"{x:.2f}" for x in times)
        print(f"{a.resamples} resamples of {what}: {np.median(times):.2f} s (median of {a.repeats}; each {each})")
        for name, j in names.items():
            lo, hi = np.nanpercentile(maps[:, j], [2.5, 97.5])
            print(f"  {name} {stats.map()[j]:.4f} (bootstrap 95% [{lo:.4f}, {hi:.4f}])")
def _points(s) -> int:
    """How many points the resampling reads: each detection that is a true positive at some IoU threshold, and each
    run of false positives between them, per class."""
    from utils.validation.image_stats import fp_runs

    order = np.argsort(-s.conf, kind="stable")
    correct, pcls, pimg = s.correct[order], s.pcls[order], s.pimg[order]
    return sum(len(fp_runs(correct[pcls == c].any(1), pimg[pcls == c], s.n_images)[0]) for c in np.unique(s.tcls))


if __name__ == "__main__":
    main()
