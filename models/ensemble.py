"""Several detectors as one, as YOLOv5's Ensemble (the "NMS ensemble"): val.py / detect.py --weights a.pt b.pt.

    model = load_detector(["a.pt", "b.pt"], device)   # an Ensemble; one file gives its DetectBackend
    pred = model(im)[0]                                # every member's decoded boxes, concatenated, for one NMS

Each member is a models.backends.DetectBackend, so an ensemble may mix .pt checkpoints and exports
(.torchscript, .onnx, *_openvino_model): they all return the same decoded tensor (B, n, 5 + nc). The members
must predict the same number of classes; class names are the first member's (a warning says where another's
differ). Inputs are letterboxed to a multiple of the largest stride (YOLOv5 takes the max stride), which must
be a multiple of every member's. Exports of fixed size must all share that size; the ensemble then runs at it.
`augment=True` runs each member's test-time augmentation (models.tta) before the concatenation, as YOLOv5.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.backends import DetectBackend
from utils.errors import UserError
from utils.log import LOGGER

__all__ = ["Ensemble", "load_detector", "weights_label"]


class Ensemble(nn.ModuleList):
    """DetectBackends whose decoded predictions are concatenated along the box dimension before NMS.

    Attributes as a DetectBackend's: stride (the largest), names (the first member's), nc, fixed_shape (the
    shared size of the fixed-size exports among the members, else None), fixed_batch (their shared batch, else
    None), fp16 (any member takes half inputs), pt (False: no raw maps for a loss), fmt ('ensemble'), model
    (None), weights (the members' paths).
    """

    def __init__(self, members: list[DetectBackend]):
        super().__init__(members)
        if len(members) < 2:
            raise UserError(f"an ensemble needs at least 2 models, got {len(members)}")
        files = [str(m.weights) for m in members]
        ncs = [m.nc for m in members]
        if len(set(ncs)) > 1:
            detail = ", ".join(f"{f} ({n} classes)" for f, n in zip(files, ncs))
            raise UserError(f"--weights: ensembled models must predict the same classes; got {detail}")
        self.stride = max(int(m.stride) for m in members)
        bad = [f"{f} (stride {m.stride})" for f, m in zip(files, members) if self.stride % int(m.stride)]
        if bad:
            raise UserError(f"--weights: the ensemble letterboxes to multiples of the largest stride {self.stride}, "
                            f"which is not a multiple of the stride of {', '.join(bad)}")
        shapes = {tuple(m.fixed_shape) for m in members if m.fixed_shape is not None}
        if len(shapes) > 1:
            detail = ", ".join(f"{f} ({m.fixed_shape[0]}x{m.fixed_shape[1]})" for f, m in zip(files, members)
                               if m.fixed_shape is not None)
            raise UserError(f"--weights: exports of fixed size in an ensemble must share their size (h x w); got "
                            f"{detail}. Export with --dynamic or at one --imgsz")
        self.fixed_shape = next(iter(shapes)) if shapes else None
        batches = {m.fixed_batch for m in members if m.fixed_batch is not None}
        self.fixed_batch = next(iter(batches)) if len(batches) == 1 else None  # each member chunks to its own
        self.names = list(members[0].names)
        for f, m in zip(files[1:], members[1:]):
            if list(m.names) != self.names:
                LOGGER.warning(f"WARNING: {f} names its classes differently from {files[0]}; using the names of "
                               f"{files[0]}")
        self.nc = ncs[0]
        self.fp16 = any(m.fp16 for m in members)
        self.pt = False
        self.fmt = "ensemble"
        self.model = None
        self.weights = files
        LOGGER.info(f"Ensemble created with {len(members)} models: {', '.join(files)}")

    def forward(self, im: torch.Tensor, augment: bool = False):
        """(every member's decoded predictions concatenated (B, sum of n, 5 + nc), None)."""
        ys = []
        for m in self:
            x = im.half() if m.fp16 else im.float()  # members may differ: a fp16 .pt beside an fp32 export
            ys.append(m(x, augment=augment)[0].to(im.dtype))
        return torch.cat(ys, 1), None

    def warmup(self, imgsz: tuple[int, int] = (640, 640)) -> None:
        """Each member's warm-up at the ensemble's input size."""
        for m in self:
            m.warmup(self.fixed_shape or imgsz)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, nc={self.nc}, fixed_shape={self.fixed_shape}"


def load_detector(weights, device: str | torch.device = "cpu", fp16: bool = False,
                  ov_precision: str = "f32") -> DetectBackend | Ensemble:
    """The DetectBackend of one weights file, or the Ensemble of several (a list or tuple of paths); OpenVINO
    members compute at `ov_precision` (f32 unless asked)."""
    ws = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    if len(ws) <= 1:
        return DetectBackend(ws[0] if ws else None, device=device, fp16=fp16, ov_precision=ov_precision)
    return Ensemble([DetectBackend(w, device=device, fp16=fp16, ov_precision=ov_precision) for w in ws])


def weights_label(weights) -> str:
    """The weights as a message names them: 'a.pt', or 'a.pt + b.pt' for an ensemble."""
    ws = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    return " + ".join(str(w) for w in ws)
