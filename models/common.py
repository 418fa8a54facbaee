"""YOLOv5 building blocks, the attention plug-ins and the controls, under the names YOLOv5 code imports:

    from models.common import Conv, C3, SPPF, C3TR, BiLevelRoutingAttention

The blocks live in models.blocks, the plug-ins in models.attention, the controls in models.control (ConvControl:
BRA's capacity without attention), models.transformer (C3TR, YOLOv5's own attention) and models.ghost. Importing
this module registers all of them for model YAMLs; none of them imports this module back.
"""

from __future__ import annotations

from models.blocks import *  # noqa: F401,F403  (registered first, as YOLOv5's own blocks)
from models.blocks import ACTIVATIONS, C3, SPP, SPPF, Bottleneck, Concat, Conv, Residual, autopad  # noqa: F401
from models.blocks import conv_activation, parse_activation  # noqa: F401
from models.attention import *  # noqa: F401,F403,E402
from models.control import ConvControl  # noqa: F401
from models.transformer import C3TR, TransformerBlock, TransformerLayer  # noqa: F401
from models.ghost import C3Ghost, DWConv, GhostBottleneck, GhostConv  # noqa: F401
