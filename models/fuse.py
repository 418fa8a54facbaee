"""BatchNorm fusion for inference: each Conv's BatchNorm folded into its convolution (`Model.fuse()`).

Model code, so it lives in models/ (it needs models.common.Conv); utils/ does not import models.
"""

from __future__ import annotations

import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.common import Conv

__all__ = ["fuse_conv_and_bn", "fuse_model"]


def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution that computes conv then bn (eval-mode statistics), frozen (YOLOv5's name for it)."""
    return fuse_conv_bn_eval(conv, bn).requires_grad_(False)


def fuse_model(model: nn.Module) -> nn.Module:
    """Fold each Conv's BatchNorm into its conv (eval-mode statistics) and call `fuse()` on plug-ins that have one."""
    model.eval()
    for m in model.modules():
        if isinstance(m, Conv) and hasattr(m, "bn"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
        elif m is not model and hasattr(m, "fuse") and callable(m.fuse) and not isinstance(m, Conv):
            m.fuse()
    return model
