"""The YOLOv5 detection model: `parse_model` builds layers from a YAML dict through the module registry.

    from models.yolo import Model
    model = Model("yolov5n_biformer.yaml", nc=80)
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from copy import deepcopy

import numpy as np
import torch
import torch.nn as nn

from models.common import conv_activation, parse_activation  # importing it registers the blocks and plug-ins
from models.config import load_model_config
from models.fuse import fuse_model
from models.registry import LayerSpec, detect_head, lookup, register
from models.tracing import shapes_in_graph
from models.user_modules import module_files_of
from utils.data.config import MAX_CLASSES
from utils.errors import UnknownName, UserError
from utils.log import LOGGER, colorstr, setup_logging
from utils.torch_utils import model_info

__all__ = ["Detect", "Model", "DetectionModel", "parse_model"]


@register(channels=detect_head)
class Detect(nn.Module):
    """Anchor-based YOLOv5 head.

    Training: returns the raw maps, one per level, shaped (batch, anchors, ny, nx, 5 + nc).
    Inference: returns (decoded, raw maps); decoded is (batch, anchors * cells summed over levels, 5 + nc)
    with boxes as pixel (cx, cy, w, h), ordered by level (P3, P4, P5), then anchor, then y, then x.
    `anchors` is stored in units of each level's stride, as YOLOv5 stores it.
    """

    export = False  # True: inference returns only the decoded tensor

    def __init__(self, nc: int = 80, anchors=(), ch=(), inplace: bool = True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5  # outputs per anchor
        self.nl = len(anchors)  # levels
        self.na = len(anchors[0]) // 2  # anchors per level
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))  # (nl, na, 2)
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)  # set by Model
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace

    def forward(self, x: list[torch.Tensor]):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            # (bs, na*no, ny, nx) -> (bs, na, ny, nx, no)
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                if (shapes_in_graph() or self.grid[i].shape[2:4] != x[i].shape[2:4]
                        or self.grid[i].device != x[i].device):  # a traced graph computes its grids
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + self.grid[i]) * self.stride[i]  # YOLOv5 v6: centre offset in (-0.5, 1.5)
                wh = wh * 2
                wh = wh * wh * self.anchor_grid[i]  # size in (0, 4) anchors; x * x, not ** 2: LiteRT has no pow
                z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        if self.training:
            return x
        return (torch.cat(z, 1),) if self.export else (torch.cat(z, 1), x)

    def _make_grid(self, nx: int, ny: int, i: int):
        d, t = self.anchors[i].device, self.anchors[i].dtype
        shape = 1, self.na, ny, nx, 2
        y, x = torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t)
        yv, xv = torch.meshgrid(y, x, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid


_YAML_SYMBOLS = {"None": None, "True": True, "False": False}


def _resolve_arg(a, d: dict):
    """YAML args may name `nc`, `anchors` or None/True/False as strings; anything else stays as written."""
    if isinstance(a, str):
        if a in ("nc", "anchors"):
            return d[a]
        return _YAML_SYMBOLS.get(a, a)
    return a


def _split_kwargs(args, where: str) -> tuple[list, dict]:
    """A row's args as (positional, keyword): a mapping, alone or last in the list, names keyword arguments, e.g.
    `[-1, 1, Residual, [BiLevelRoutingAttention, {topk: 8}]]` or `[-1, 1, HiLo, {window_size: 4}]`."""
    if args is None:
        return [], {}
    if isinstance(args, dict):
        args = [args]
    if not isinstance(args, (list, tuple)):
        raise UserError(f"{where}: args must be a list (or a mapping of keyword arguments), got {args!r}")
    args = list(args)
    kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
    bad = [k for k in kwargs if not (isinstance(k, str) and k.isidentifier())]
    if bad or any(isinstance(a, dict) for a in args):
        raise UserError(f"{where}: keyword arguments go in one mapping at the end of args, with names as keys")
    return args, dict(kwargs)


def _layer_seed(base: int, name: str, occurrence: int) -> int:
    """The seed of the `occurrence`-th layer of type `name`, derived from the seed of torch's default generator."""
    return int(np.random.SeedSequence([base, zlib.crc32(name.encode()), occurrence]).generate_state(1, np.uint64)[0])


def parse_model(d: dict, ch: list[int], verbose: bool = True) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a model dict. Returns (layers, indices of layers whose outputs are kept).

    Each layer draws its initial weights from a generator of its own, seeded from torch's current seed
    (`torch.initial_seed()`, e.g. train.py's --seed), its YAML module name and how many layers of that name came
    before it; the default generator itself is left untouched. So after the same seed two configs that differ by
    inserted plug-ins start from the same weights in every layer they share (a fresh Detect head included), the
    plug-ins' weights depend only on the seed and the plug-in, and what runs after the build (data order,
    augmentation) draws the same numbers: paired runs, as compare.py needs them.

    `activation:` in the dict (YOLOv5's `nn.LeakyReLU(0.1)`) is parsed from an allow-list, never evaluated
    (models.common.parse_activation), and is the activation of every Conv of this model only.
    """
    act = d.get("activation")
    act = parse_activation(act) if act is not None else None  # a UserError for anything not allow-listed
    if verbose and act is not None:
        LOGGER.info(f"{colorstr('activation:')} {d['activation']}")
    with conv_activation(act):  # this model's Convs only: the default is SiLU again afterwards
        return _parse_layers(d, ch, verbose)


def _parse_layers(d: dict, ch: list[int], verbose: bool) -> tuple[nn.Sequential, list[int]]:
    """parse_model's loop over the YAML rows."""
    base, seen = torch.initial_seed(), Counter()
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    _check_model_numbers(nc, gd, gw)
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    layers, save = [], []
    for i, row in enumerate(d["backbone"] + d["head"]):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise UserError(f"model YAML layer {i}: expected [from, number, module, args], got {row!r}")
        f, n, name, args = row
        try:
            entry = lookup(name)
        except KeyError as e:  # name the row, keep the registry's list of known modules
            raise UnknownName(f"model YAML layer {i} {list(row)!r}: {e.args[0]}") from None
        where = f"model YAML layer {i} {list(row)!r}"
        for x in [f] if isinstance(f, int) else f if isinstance(f, (list, tuple)) else [None]:
            if not isinstance(x, int) or not (x == -1 or -max(i, 1) <= x < max(i, 1)):
                valid = "-1 (the previous layer)" if i == 0 else f"-1 or a layer index 0..{i - 1} (or -{i}..-1)"
                raise UserError(f"{where}: from index {x!r} is out of range; valid: {valid}")
        args, kwargs = _split_kwargs(args, where)
        args = [_resolve_arg(a, d) for a in args]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UserError(f"{where}: number {n!r}; valid: an integer >= 1")
        n = n_ = max(round(n * gd), 1) if n > 1 else n
        if n > MAX_REPEATS:
            raise UserError(f"{where}: {n} repeats after depth_multiple {gd}; at most {MAX_REPEATS}")
        try:  # a channel rule's or constructor's error names the row it came from
            args, c2, n = entry.channels(LayerSpec(ch=ch, f=f, n=n, args=args, width_multiple=gw, no=no))
            if not isinstance(c2, int) or not 1 <= c2 <= MAX_CHANNELS:
                raise UserError(f"{c2} output channels (after width_multiple {gw}); valid: 1..{MAX_CHANNELS}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_layer_seed(base, name, seen[name]))
                m_ = (nn.Sequential(*(entry.cls(*args, **kwargs) for _ in range(n))) if n > 1
                      else entry.cls(*args, **kwargs))
        except (TypeError, ValueError, IndexError) as e:  # UserError is a ValueError
            raise UserError(f"{where}: {type(e).__name__ + ': ' if not isinstance(e, UserError) else ''}{e}") \
                from e
        seen[name] += 1
        np_ = sum(x.numel() for x in m_.parameters())
        m_.i, m_.f, m_.type, m_.np = i, f, name, np_
        if verbose:
            LOGGER.info(f"{i:>3}{str(f):>18}{n_:>3}{np_:10.0f}  {name:<40}{str(args):<30}")
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


MAX_CHANNELS = 16_384  # YOLOv5x's widest layer has 1,280
MAX_REPEATS = 100  # YOLOv5x's deepest C3 repeats 12 times


def _check_model_numbers(nc, gd, gw) -> None:
    """nc, depth_multiple and width_multiple of a model YAML: a UserError naming a value no model can have."""
    if isinstance(nc, bool) or not isinstance(nc, int) or not 1 <= nc <= MAX_CLASSES:
        raise UserError(f"model YAML nc: {nc!r}; valid: an integer 1..{MAX_CLASSES}")
    for key, v in (("depth_multiple", gd), ("width_multiple", gw)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 100:
            raise UserError(f"model YAML {key}: {v!r}; valid: a number in (0, 100]")


def initialize_weights(model: nn.Module) -> None:
    """YOLOv5's BatchNorm settings and in-place activations."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            m.inplace = True


class Model(nn.Module):
    """A YOLOv5 detection model built from a config name, a YAML path or a model dict.

    Args:
        cfg: "yolov5n.yaml", "yolov5s_biformer.yaml", a path, or a dict as stored in checkpoints.
        ch: input channels.
        nc: number of classes; overrides the YAML's when given.
        anchors: anchors overriding the YAML's.
        verbose: print the layer table and the summary line.
    """

    def __init__(self, cfg="yolov5s.yaml", ch: int = 3, nc: int | None = None, anchors=None, verbose: bool = True):
        super().__init__()
        if verbose:
            setup_logging()
        self.yaml = load_model_config(cfg)
        self.yaml["ch"] = ch = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            if verbose:
                LOGGER.info(f"Overriding model.yaml nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = nc
        if anchors:
            self.yaml["anchors"] = round(anchors) if isinstance(anchors, float) else anchors
        self.model, self.save = parse_model(deepcopy(self.yaml), ch=[ch], verbose=verbose)
        files = list(self.yaml.get("modules") or [])
        files += [f for f in module_files_of(self.model) if f not in files]
        if files:  # checkpoints store the YAML dict: loading one imports these files again
            self.yaml["modules"] = files
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.inplace = self.yaml.get("inplace", True)

        m = self.model[-1]
        if not isinstance(m, Detect):
            raise UserError(f"the last layer of a detection model must be Detect, got {type(m).__name__}")
        s = 256  # stride probe: 2x the largest stride, so every level has a whole number of cells
        m.inplace = self.inplace
        self.train()  # raw maps, whose sizes give the strides
        with torch.no_grad():
            m.stride = torch.tensor([s / x.shape[-2] for x in self.forward(torch.zeros(1, ch, s, s))])
        check_anchor_order(m)
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        self._initialize_biases()
        initialize_weights(self)
        if verbose:
            self.info()
            LOGGER.info("")

    def forward(self, x: torch.Tensor):
        y = []  # outputs of layers that later layers read
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def _initialize_biases(self) -> None:
        """Objectness prior of 8 objects per 640 image; class prior 0.6 / nc (YOLOv5, RetinaNet eq. 3)."""
        m = self.model[-1]
        for mi, s in zip(m.m, m.stride):
            b = mi.bias.view(m.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)
            b.data[:, 5 : 5 + m.nc] += math.log(0.6 / (m.nc - 0.99999))
            mi.bias = nn.Parameter(b.view(-1), requires_grad=True)

    def fuse(self) -> "Model":
        """Fold every BatchNorm into its convolution (and let plug-ins re-parameterise); in place."""
        fuse_model(self)
        return self

    def info(self, verbose: bool = False, imgsz: int | tuple[int, int] = 640) -> str:
        """Log and return the summary line, GFLOPs counted at `imgsz`."""
        return model_info(self, verbose=verbose, imgsz=imgsz)

    def _apply(self, fn):
        # move the cached Detect grids with the model (to(), cuda(), half())
        self = super()._apply(fn)
        m = self.model[-1]
        m.grid = [fn(g) for g in m.grid]
        m.anchor_grid = [fn(g) for g in m.anchor_grid]
        return self


DetectionModel = Model  # YOLOv5 v7 name


def check_anchor_order(m: Detect) -> None:
    """Anchors must grow with the stride; reverse them if the YAML lists them the other way."""
    a = m.anchors.prod(-1).mean(-1).view(-1)  # mean anchor area per level
    da = a[-1] - a[0]
    ds = m.stride[-1] - m.stride[0]
    if da and (da.sign() != ds.sign()):
        LOGGER.info("Reversing anchor order")
        m.anchors[:] = m.anchors.flip(0)

