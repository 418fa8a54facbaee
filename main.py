"""The main job on the bundled data: the summary of every bundled config, then the comparison of every
attention plug-in against the YOLOv5n baseline (compare.py with its defaults and routing figures).

    ./run.sh main                 # set-up, then this
    .venv/bin/python main.py --epochs 10 --seeds 3     # any compare.py flag
"""

from __future__ import annotations

import sys

from models.config import list_configs
from models.yolo import Model
from utils.log import LOGGER, setup_logging


def summaries() -> None:
    for path in list_configs():
        stem = path.stem
        name = f"{stem[:6]}n{stem[6:]}.yaml" if stem.startswith("yolov5") else path.name
        Model(name, verbose=False).info()
    LOGGER.info("")


def main(argv: list[str] | None = None) -> None:
    import compare
    from utils.inference import cli_errors

    setup_logging()
    summaries()
    argv = sys.argv[1:] if argv is None else argv
    opt = compare.parse_opt(args=[*argv, "--visualize-routing"] if "--visualize-routing" not in argv else argv)
    cli_errors(compare.main)(opt)


if __name__ == "__main__":
    main()
