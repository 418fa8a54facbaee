"""The main job on the bundled data: the summary of every bundled config, then the comparison of every
attention plug-in against the YOLOv5n baseline (compare.py with its defaults and routing figures).

    ./run.sh main                 # set-up, then this
    .venv/bin/python main.py --epochs 10 --seeds 3     # any compare.py flag
    .venv/bin/python main.py --resume runs/compare/exp3   # finish an interrupted or partly failed job

Exits with 1 when a fine-tuning run failed (the report of the others is still written), as compare.py does.
"""

from __future__ import annotations

import sys

import compare
from models.config import list_configs, scaled_name
from models.yolo import Model
from utils.log import LOGGER, setup_logging


def summaries() -> None:
    for path in list_configs():
        Model(scaled_name(path, "n"), verbose=False).info()
    LOGGER.info("")


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    summaries()
    argv = sys.argv[1:] if argv is None else argv
    keep = "--visualize-routing" in argv or any(a.startswith("--resume") for a in argv)  # a job keeps its options
    compare.cli(compare.parse_opt(args=argv if keep else [*argv, "--visualize-routing"]))


if __name__ == "__main__":
    main()
