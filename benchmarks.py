"""YOLOv5's benchmarks.py: export to every format, validate and time each. See benchmarks/deploy.py.

    python benchmarks.py --weights yolov5n.pt --imgsz 320 --data coco128.yaml --device cpu

(Python code imports `benchmarks.deploy`: the benchmarks/ package shadows this file on import.)
"""

from benchmarks.deploy import cli

if __name__ == "__main__":
    cli()
