"""ConvControl: a plain convolutional plug-in sized like Bi-Level Routing Attention, to tell attention from capacity.

configs/yolov5_control.yaml is configs/yolov5_biformer.yaml with `[-1, 1, Residual, [ConvControl]]` in place of
each BRA: same places, same Residual wrapper, about the same parameters. A gain that BRA shows and this block
shows too comes from the added capacity, not from attention.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.blocks import Conv
from models.registry import inserts_dim, register
from utils.errors import UserError

__all__ = ["ConvControl"]


@register(channels=inserts_dim)
class ConvControl(nn.Module):
    """1x1 expand to e*c, k x k depthwise, 1x1 project back to c (an inverted bottleneck, no attention).

    x (Tensor[B, c, H, W]) -> Tensor[B, c, H, W], any H and W. Each step is a Conv (conv + BatchNorm + SiLU);
    the projection has no activation (linear, as BRA's output projection `wo` is).

    Why e=2, k=3: BRA holds 4c^2 weights in its projections (qkv: c -> 3c, wo: c -> c) plus a 3x3 depthwise
    LePE; the two 1x1 convolutions here hold 2ec^2 = 4c^2 and the depthwise 3x3 mirrors the LePE. In
    yolov5n_control this gives 69,248 / 269,568 parameters at layers 20 / 24 (Residual's gamma included) against
    BRA's 67,456 / 265,984 (+2.7% / +1.3%); the whole model has 2,210,973 against 2,205,597 (+0.24%).
    FLOPs cannot match per layer at equal parameters: a convolution costs 2*H*W FLOPs per weight, while BRA adds
    activation-by-activation products (token attention) and works on the map padded to multiples of n_win = 7.
    So layer 20 (40x40 at 640) costs 0.22 GFLOPs against BRA's 0.37, layer 24 (20x20) 0.21 against 0.26; the
    whole model is 4.90 against 5.10 GFLOPs at 640 (-4%) and 1.22 against 1.31 at 320 (-6.5%).
    """

    def __init__(self, c: int, e: float = 2.0, k: int = 3):
        super().__init__()
        if c < 1 or e <= 0 or k < 1 or k % 2 == 0:
            raise UserError(f"ConvControl needs channels >= 1, expansion e > 0 and an odd kernel k >= 1, "
                             f"got c={c}, e={e}, k={k}")
        c_ = max(int(c * e), 1)
        self.cv1 = Conv(c, c_, 1)
        self.cv2 = Conv(c_, c_, k, g=c_)
        self.cv3 = Conv(c_, c, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.cv2(self.cv1(x)))
