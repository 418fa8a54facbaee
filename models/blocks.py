"""YOLOv5 building blocks (v6/v7 layout, so official weights load by name): Conv, Bottleneck, C3, SPP, SPPF,
Concat, and Residual, the wrapper that adds a plug-in with a learnable gate. models.common re-exports them with
the attention plug-ins and controls; the modules that build on these blocks import them from here.
"""

from __future__ import annotations

import ast
import threading
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from models.registry import LayerSpec, concat, inserts_dim, lookup, register, scaled, scaled_repeated
from utils.errors import UserError

__all__ = ["autopad", "Conv", "Bottleneck", "C3", "SPP", "SPPF", "Concat", "Residual", "ACTIVATIONS",
           "parse_activation", "conv_activation"]


def autopad(k: int | tuple, p: int | None = None, d: int = 1):
    """'same' padding for kernel k and dilation d."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


# The activations a model YAML's `activation:` key may name, as YOLOv5 writes them (`nn.LeakyReLU(0.1)`).
# Parameter-free only: the one instance is shared by every Conv of the model.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    f"nn.{cls.__name__}": cls
    for cls in (nn.SiLU, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Mish, nn.GELU, nn.ELU, nn.CELU, nn.SELU,
                nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity)
}


def _literal(node: ast.AST, spec: str):
    """The value of a constant argument node (a number, True/False/None, a negated number), never code."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        value = ...  # a name, call or other expression
    if value is ... or not (value is None or isinstance(value, (bool, int, float))):
        raise UserError(f"activation {spec!r}: arguments must be numbers, True, False or None, "
                        f"got {ast.unparse(node)!r}")
    return value


def parse_activation(spec: str) -> nn.Module:
    """The module a YAML `activation:` string names, e.g. 'nn.LeakyReLU(0.1)' -> nn.LeakyReLU(0.1).

    The string is parsed, never evaluated: it must be one call (or bare name) of an `ACTIVATIONS` class, written
    `nn.X(...)` or `torch.nn.X(...)`, with constant arguments (numbers, True, False, None; positional or keyword).
    Anything else raises a UserError naming the string and the allowed activations.
    """
    allowed = ", ".join(f"{k}()" for k in ACTIVATIONS)
    bad = UserError(f"activation {spec!r} is not one of the allowed activations: {allowed} (with constant "
                    f"arguments, e.g. nn.LeakyReLU(0.1))")
    if not isinstance(spec, str):
        raise bad
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        raise bad from None
    call = node if isinstance(node, ast.Call) else ast.Call(func=node, args=[], keywords=[])
    name = ast.unparse(call.func).removeprefix("torch.")
    if name not in ACTIVATIONS or any(k.arg is None for k in call.keywords):  # no **kwargs
        raise bad
    args = [_literal(a, spec) for a in call.args]
    kwargs = {k.arg: _literal(k.value, spec) for k in call.keywords}
    try:
        return ACTIVATIONS[name](*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"activation {spec!r}: {name} does not take these arguments ({e})") from None


_ACT_LOCK = threading.RLock()


@contextmanager
def conv_activation(act: nn.Module | None) -> Iterator[None]:
    """Within the block, every Conv built with act=True uses `act` (one instance, shared by all of them, as
    YOLOv5's `Conv.default_act`); afterwards the default is SiLU again, so it never leaks into models built
    later. None keeps the default. parse_model builds every model inside this block, so a model built on another
    thread meanwhile waits rather than picking up this one's activation."""
    with _ACT_LOCK:
        before = Conv.default_act
        if act is not None:
            Conv.default_act = act
        try:
            yield
        finally:
            Conv.default_act = before


@register(channels=scaled)
class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + activation. After `fuse()` the BN is folded into the convolution.

    The activation is SiLU unless the model YAML names another (`activation: nn.LeakyReLU(0.1)`, see
    `conv_activation`); `act=False` means none, an nn.Module means that module.
    """

    default_act = nn.SiLU()  # one shared instance, as in YOLOv5 (so layer counts match its summary)

    def __init__(self, c1: int, c2: int, k=1, s=1, p=None, g: int = 1, d: int = 1, act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


@register(channels=scaled)
class Bottleneck(nn.Module):
    """1x1 then 3x3 Conv, with a residual when the widths match and `shortcut` is on."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register(channels=scaled_repeated)
class C3(nn.Module):
    """CSP bottleneck with three convolutions: cv3(cat(m(cv1(x)), cv2(x)))."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


@register(channels=scaled)
class SPP(nn.Module):
    """Spatial pyramid pooling (YOLOv3-SPP): cv2(cat(x, maxpool_k(x) for k in `k`)) after a 1x1 cv1 to c1 // 2.

    Each pool is stride 1 with 'same' padding, so (B, c1, H, W) -> (B, c2, H, W). YAML: `[-1, 1, SPP, [512,
    [5, 9, 13]]]`.
    """

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] | list[int] = (5, 9, 13)):
        super().__init__()
        if not k or any(not isinstance(x, int) or x < 1 or x % 2 == 0 for x in k):
            raise UserError(f"SPP needs odd pooling kernels >= 1, got k={k}")
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


@register(channels=scaled)
class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max-pools, equal to SPP(k=(5, 9, 13)) for k=5."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


@register(channels=concat)
class Concat(nn.Module):
    """Concatenate a list of tensors along `dimension` (channels by default)."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


def _residual_channels(spec: LayerSpec):
    """Residual(c, name, *args): the wrapped block must be a channel-preserving plug-in (rule inserts_dim)."""
    if not spec.args or not isinstance(spec.args[0], str):
        raise UserError(f"Residual needs the name of the block it wraps as its first argument, got {spec.args}")
    if lookup(spec.args[0]).channels is not inserts_dim:
        raise UserError(f"Residual can wrap channel-preserving plug-ins only (input channels first), "
                         f"not {spec.args[0]!r}")
    return inserts_dim(spec)


@register(channels=_residual_channels)
class Residual(nn.Module):
    """x + gamma * block(x), gamma per channel and zero at the start: a plug-in that starts as the identity.

    YAML: `[-1, 1, Residual, [BiLevelRoutingAttention, 7, 8]]` wraps BiLevelRoutingAttention(c, 7, 8).
    Inserted into a pretrained network, the wrapped block first leaves every pretrained feature as it was
    (gamma = 0; the block still gets gradients through gamma once gamma moves), so fine-tuning starts from the
    pretrained model's own output instead of from features scrambled by a randomly initialised layer. This is
    the residual-with-layer-scale form attention takes inside transformer blocks (BiFormer, CaiT's LayerScale).
    """

    def __init__(self, c: int, block: str, *args, **kwargs):
        super().__init__()
        self.m = lookup(block).cls(c, *args, **kwargs)  # keyword arguments from the YAML go to the block
        self.gamma = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma.view(1, -1, 1, 1).to(x.dtype) * self.m(x)

