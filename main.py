"""The main job on the bundled data: the summary of every bundled config, then the official YOLOv5n weights
run on the bundled photos (data/images), printing what they find; annotated photos go to runs/detect/expN."""

from __future__ import annotations

from models.config import list_configs
from models.yolo import Model
from utils.log import LOGGER, setup_logging
from utils.paths import ROOT


def summaries() -> None:
    for path in list_configs():
        stem = path.stem
        name = f"{stem[:6]}n{stem[6:]}.yaml" if stem.startswith("yolov5") else path.name
        model = Model(name, verbose=False)
        model.info()
    LOGGER.info("")


def detect_photos() -> None:
    import detect

    weights, source = ROOT / "weights" / "yolov5n.pt", ROOT / "data" / "images"
    LOGGER.info(f"detect: {weights.relative_to(ROOT)} on {source.relative_to(ROOT)}")
    _, records = detect.run(weights=weights, source=source, project=ROOT / "runs" / "detect")
    total = sum(len(r.boxes) for r in records)
    LOGGER.info(f"{total} objects found in {len(records)} photos\n")


def main() -> None:
    setup_logging()
    summaries()
    detect_photos()


if __name__ == "__main__":
    main()
