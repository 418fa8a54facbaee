"""The module registry that `parse_model` reads.

Every block a model YAML may name registers here under that name together with its channel rule: a function
that, given the channels of the layers feeding it, returns the constructor arguments and the channels it
outputs. Adding a block is one decorator; `parse_model` never grows.

    @register("MyAttention", channels=inserts_dim)
    class MyAttention(nn.Module):
        def __init__(self, dim, heads=4): ...
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn
from utils.errors import UnknownName, UserError

__all__ = [
    "LayerSpec", "ModuleEntry", "register", "register_module", "lookup", "known_modules",
    "make_divisible", "scaled", "scaled_repeated", "inserts_dim", "same", "concat", "detect_head", "input_channels",
    "TORCH_NN_MODULES",
]


@dataclass
class LayerSpec:
    """What a channel rule sees of one YAML row after `depth_multiple` was applied to its repeats."""

    ch: list[int]  # output channels of every earlier layer (before layer 0: the image channels)
    f: int | list[int]  # the row's `from`
    n: int  # repeats
    args: list  # the row's args, names such as nc/anchors already resolved
    width_multiple: float
    no: int  # Detect outputs per cell (anchors * (nc + 5)); a channel count equal to it is never scaled


ChannelRule = Callable[[LayerSpec], "tuple[list, int, int]"]  # -> (constructor args, output channels, repeats)


@dataclass(frozen=True)
class ModuleEntry:
    name: str
    cls: type
    channels: ChannelRule


_REGISTRY: dict[str, ModuleEntry] = {}


def register_module(name: str, cls: type, channels: ChannelRule) -> type:
    if name in _REGISTRY and _REGISTRY[name].cls is not cls:
        raise UserError(f"module name {name!r} is already registered to {_REGISTRY[name].cls.__qualname__}")
    _REGISTRY[name] = ModuleEntry(name, cls, channels)
    return cls


def register(name: str | None = None, *, channels: ChannelRule, aliases: tuple[str, ...] = ()):
    """Class decorator: register under `name` (default: the class name) and any aliases."""

    def wrap(cls: type) -> type:
        for key in (name or cls.__name__, *aliases):
            register_module(key, cls, channels)
        return cls

    return wrap


def lookup(name: str) -> ModuleEntry:
    """The entry for a YAML module name; a KeyError that lists the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name (a list)
        close = difflib.get_close_matches(str(name), known_modules(), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise UnknownName(f"unknown module {name!r} in model YAML{hint}; known modules: "
                          f"{', '.join(known_modules())}") from None


def known_modules() -> list[str]:
    return sorted(_REGISTRY)


def make_divisible(x: float, divisor: int = 8) -> int:
    """The smallest multiple of `divisor` that is >= x (YOLOv5's channel rounding)."""
    return int(math.ceil(x / divisor) * divisor)


def _single_input(spec: LayerSpec) -> int:
    if not isinstance(spec.f, int):
        raise UserError(f"this module takes one input, got from={spec.f}")
    return spec.ch[spec.f]


# ---- channel rules ----------------------------------------------------------------------------------------
def scaled(spec: LayerSpec):
    """args[0] is the output width before `width_multiple`; the input channels are inserted first (Conv, SPPF)."""
    c1, c2 = _single_input(spec), spec.args[0]
    if c2 != spec.no:
        c2 = make_divisible(c2 * spec.width_multiple, 8)
    return [c1, c2, *spec.args[1:]], c2, spec.n


def scaled_repeated(spec: LayerSpec):
    """As `scaled`, and the repeats go inside the block as its third argument (C3 and its kin)."""
    args, c2, n = scaled(spec)
    args.insert(2, n)
    return args, c2, 1


def inserts_dim(spec: LayerSpec):
    """Channel-preserving block whose first argument is its input channels (attention plug-ins)."""
    c = _single_input(spec)
    return [c, *spec.args], c, spec.n


def same(spec: LayerSpec):
    """Channel-preserving block whose args are used as given (nn.Upsample)."""
    return list(spec.args), _single_input(spec), spec.n


def concat(spec: LayerSpec):
    f = [spec.f] if isinstance(spec.f, int) else spec.f
    return list(spec.args), sum(spec.ch[x] for x in f), spec.n


def detect_head(spec: LayerSpec):
    """Detect(nc, anchors, ch): the input channels are appended; an int anchors means that many per level."""
    f = [spec.f] if isinstance(spec.f, int) else spec.f
    args = [*spec.args, [spec.ch[x] for x in f]]
    if isinstance(args[1], int):
        args[1] = [list(range(args[1] * 2))] * len(f)
    return args, spec.no, spec.n


def input_channels(spec: LayerSpec):
    """Block whose only argument is its input channels, which it keeps (nn.BatchNorm2d); the YAML args are unused."""
    c = _single_input(spec)
    return [c], c, spec.n


# The torch.nn classes a model YAML may name, as YOLOv5's YAMLs write them (`nn.MaxPool2d`): an allow-list, so a
# YAML never reaches an arbitrary attribute of torch.nn. Each keeps YOLOv5's channel rule for it.
TORCH_NN_MODULES: dict[str, tuple[type, ChannelRule]] = {
    "nn.Upsample": (nn.Upsample, same),
    "nn.Identity": (nn.Identity, same),
    "nn.MaxPool2d": (nn.MaxPool2d, same),
    "nn.AvgPool2d": (nn.AvgPool2d, same),
    "nn.ZeroPad2d": (nn.ZeroPad2d, same),
    "nn.BatchNorm2d": (nn.BatchNorm2d, input_channels),
    "nn.ConvTranspose2d": (nn.ConvTranspose2d, scaled),
}
for _name, (_cls, _rule) in TORCH_NN_MODULES.items():
    register_module(_name, _cls, _rule)
register_module("Upsample", nn.Upsample, same)
