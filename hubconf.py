"""torch.hub entries: YOLOv5's (`custom`, `yolov5n` ... `yolov5x`) and one per bundled config and scale
(`yolov5n_biformer`, `yolov5s_hilo`, `yolov5m_slide`, `yolov5n_control`, `yolov5n_transformer`, ...).

    import torch
    model = torch.hub.load("path/to/this/repo", "custom", path="best.pt", source="local")
    model = torch.hub.load("path/to/this/repo", "custom", path="best.onnx", source="local")  # an export
    model = torch.hub.load("path/to/this/repo", "yolov5n_biformer", source="local")
    results = model("data/images/bus.jpg")  # a path, URL, PIL image, RGB numpy array, or a list of them
    results = model("data/images/bus.jpg", augment=True)  # YOLOv5's test-time augmentation
    results.print(); results.save(); results.xyxy[0]  # (n, 6): x1, y1, x2, y2, conf, cls in image pixels

Named entries start from the bundled weights of their scale (weights/yolov5n.pt for yolov5n and every
yolov5n_* config; the plug-in configs get them transferred by structure, as train.py does with --weights and
--cfg, their plug-ins start as the identity); where no such file is bundled the weights are random and a
warning says so. Nothing is ever downloaded. See utils/hub.py for the inputs and the results object.
"""

from __future__ import annotations

import pathlib

import yaml

dependencies = ["torch", "torchvision", "numpy", "cv2", "yaml", "PIL"]


def _create(name: str, pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            verbose: bool = True, device=None, custom: bool = False):
    # deferred: utils.hub pulls in cv2, PIL, torchvision and the models (seconds), which torch.hub.list / help do
    # not need, and torch.hub checks `dependencies` only after importing this file
    from utils.hub import create

    return create(name, pretrained, channels, classes, autoshape, verbose, device, custom=custom)


def custom(path: str = "path/to/model.pt", autoshape: bool = True, _verbose: bool = True, device=None):
    """A trained checkpoint (.pt, this project's or official YOLOv5's) or one of export.py's files (.torchscript,
    .onnx, *_openvino_model or its .xml, run through models.backends.DetectBackend); a bare name also finds weights/.

    An export made without --dynamic runs at the size it was exported for (images letterboxed to it; a warning
    when `size` differs) and cannot take augment=True.
    autoshape: wrap for images in, results out (else the raw Model, or the DetectBackend of an export);
    device: '', 'cpu', '0', ...
    """
    return _create(path, autoshape=autoshape, verbose=_verbose, device=device, custom=True)


def _entry(name: str, scale: str):
    def entry(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
              _verbose: bool = True, device=None):
        return _create(name, pretrained, channels, classes, autoshape, _verbose, device)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{name} (configs/, scale {scale}): bundled weights of its scale where they exist, else "
                     f"random weights (with a warning).\n\n    pretrained, channels, classes, autoshape, _verbose, "
                     f"device: as YOLOv5's hub entries")
    return entry


def _names() -> list[tuple[str, str]]:
    """(name, scale): yolov5n ... yolov5x, yolov5n_<plug-in> ... for every config in configs/ and scale it lists."""
    out = []
    for cfg in sorted((pathlib.Path(__file__).resolve().parent / "configs").glob("yolov*.yaml")):
        arch, _, rest = cfg.stem.partition("_")
        scales = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("scales") or {}
        out += [(f"{arch}{s}{'_' + rest if rest else ''}", s) for s in scales]
    return out


for _name, _scale in _names():
    globals()[_name] = _entry(_name, _scale)
