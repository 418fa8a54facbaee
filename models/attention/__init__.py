"""Attention plug-ins for the neck: NCHW in, NCHW out, input channels first (inserted by parse_model).

Each plug-in module registers itself; add one line here to make a new one importable from models.common.
"""

__all__: list[str] = []

from models.attention.hilo import HiLo  # noqa: E402
from models.attention.slide import SlideAttention  # noqa: E402

__all__ += ["HiLo", "SlideAttention"]

from models.attention.bra import BiLevelRoutingAttention  # noqa: E402

__all__ += ["BiLevelRoutingAttention"]

from models.attention.classic import CBAM, ECA, SE, CoordAtt  # noqa: E402

__all__ += ["SE", "ECA", "CBAM", "CoordAtt"]
