"""The main job on the bundled data. For now: the summary of every bundled config."""

from __future__ import annotations

from models.config import list_configs
from models.yolo import Model
from utils.log import LOGGER, setup_logging


def main() -> None:
    setup_logging()
    for path in list_configs():
        stem = path.stem
        name = f"{stem[:6]}n{stem[6:]}.yaml" if stem.startswith("yolov5") else path.name
        model = Model(name, verbose=False)
        model.info()
    LOGGER.info("")


if __name__ == "__main__":
    main()
