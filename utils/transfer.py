"""Carry pretrained weights into a model whose layer list differs (inserted attention, other nc).

YOLOv5 matches tensors by name (`model.20.cv1.conv.weight`), so one inserted layer shifts every later index
and nothing after it is carried over. Here each top-level layer gets a signature (its YAML module name plus
the names and shapes of its tensors); the two signature sequences are aligned with difflib's matcher (longest
common blocks), and tensors flow between aligned layers. Layers of the same type that align but differ in
shape (a Detect head for another nc) give what fits and report the rest. A few types count as the same where
the full signatures disagree (`COMPATIBLE_TYPES`: a C3TR or C3Ghost takes a C3's cv1/cv2/cv3); tensors one side
of such a pair has and the other lacks are reported as fresh or not used.

    report = transfer_weights(model, load_checkpoint("yolov5n.pt"))
    LOGGER.info(report.summary("yolov5n.pt"))
    # Transferred 349/349 tensors from yolov5n.pt; new: model.20 BiLevelRoutingAttention, model.24 ...
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn

__all__ = ["TransferReport", "transfer_weights", "COMPATIBLE_TYPES"]

_KEY = re.compile(r"^model\.(\d+)\.(.+)$")

# YAML type -> the type it shares tensor names with. C3TR and C3Ghost are C3s whose Bottleneck stack `m` became a
# TransformerBlock or GhostBottlenecks (official YOLOv5's C3TR(C3) and C3Ghost(C3) only replace `m`): cv1, cv2,
# cv3 carry over (the same Conv layers, names and shapes), m starts fresh.
COMPATIBLE_TYPES = {"C3TR": "C3", "C3Ghost": "C3"}


@dataclass
class _Layer:
    index: int
    type: str
    tensors: dict[str, torch.Tensor]  # key inside the layer -> tensor

    @property
    def signature(self) -> tuple:
        return self.type, tuple(sorted((k, tuple(v.shape)) for k, v in self.tensors.items()))


@dataclass
class TransferReport:
    n_source: int  # tensors in the checkpoint
    n_target: int  # tensors in the model
    mapping: dict[str, str] = field(default_factory=dict)  # model key -> checkpoint key it was loaded from
    new: list[tuple[int, str]] = field(default_factory=list)  # model layers that received nothing
    dropped: list[tuple[int, str]] = field(default_factory=list)  # checkpoint layers used by no model layer
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (model key, ckpt shape, shape)
    excluded: list[str] = field(default_factory=list)  # model keys left fresh on request
    fresh: list[str] = field(default_factory=list)  # model keys of paired layers that the source layer lacks
    unused: list[str] = field(default_factory=list)  # checkpoint keys of paired layers that the model layer lacks

    def summary(self, source: str) -> str:
        s = f"Transferred {len(self.mapping)}/{self.n_source} tensors from {source}"
        if self.new:
            s += "; new: " + ", ".join(f"model.{i} {t}" for i, t in self.new)
        if self.mismatched:
            s += "; fresh (shape differs): " + ", ".join(
                f"{k} {'x'.join(map(str, a))}->{'x'.join(map(str, b))}" for k, a, b in self.mismatched)
        if self.excluded:
            s += f"; fresh (excluded): {', '.join(self.excluded)}"
        if self.fresh:
            s += "; fresh (no counterpart): " + _count_by_block(self.fresh)
        if self.dropped or self.unused:
            s += "; not used: " + ", ".join([f"model.{i} {t}" for i, t in self.dropped]
                                            + ([_count_by_block(self.unused)] if self.unused else []))
        return s


def _count_by_block(keys: list[str]) -> str:
    """'model.8.m (12 tensors)' for keys grouped by layer and first sub-module, in order of appearance."""
    counts: dict[str, int] = {}
    for k in keys:
        block = ".".join(k.split(".")[:3])
        counts[block] = counts.get(block, 0) + 1
    return ", ".join(f"{b} ({n} tensor{'s' * (n != 1)})" for b, n in counts.items())


def _group(state: dict[str, torch.Tensor], types: list[str]) -> list[_Layer]:
    layers = [_Layer(i, t, {}) for i, t in enumerate(types)]
    for key, v in state.items():
        m = _KEY.match(key)
        if m and int(m[1]) < len(layers):
            layers[int(m[1])].tensors[m[2]] = v
    return layers


def _yaml_types(d: dict) -> list[str]:
    return [str(row[2]) for row in d.get("backbone", []) + d.get("head", [])]


def _pair_same_types(src: list[_Layer], dst: list[_Layer]) -> list[tuple[_Layer, _Layer]]:
    """Inside a block the full signatures disagree on, pair layers that at least share their type (or the type
    `COMPATIBLE_TYPES` maps them to)."""
    family = [[COMPATIBLE_TYPES.get(x.type, x.type) for x in layers] for layers in (src, dst)]
    sm = difflib.SequenceMatcher(None, *family, autojunk=False)
    return [(src[a + k], dst[b + k]) for a, b, n in sm.get_matching_blocks() for k in range(n)]


def _describe(layer: nn.Module) -> str:
    """A layer's YAML name; for a Residual wrapper, the block it wraps (what the user inserted)."""
    inner = getattr(layer, "m", None) if layer.type == "Residual" else None
    return type(inner).__name__ if inner is not None else layer.type


def transfer_weights(model: nn.Module, ckpt: dict, exclude: tuple[str, ...] = ()) -> TransferReport:
    """Load into `model` (in place) every checkpoint tensor whose layer aligns with one of the model's and whose
    shape fits. `ckpt` holds `model` (state dict) and `yaml` (model dict); `exclude` lists key substrings to
    leave fresh (e.g. 'anchors')."""
    dst_state = model.state_dict()
    src = _group(ckpt["model"], _yaml_types(ckpt["yaml"]))
    dst = _group(dst_state, [m.type for m in model.model])
    report = TransferReport(n_source=len(ckpt["model"]), n_target=len(dst_state))
    sm = difflib.SequenceMatcher(None, [x.signature for x in src], [x.signature for x in dst], autojunk=False)
    pairs: list[tuple[_Layer, _Layer]] = []
    for tag, a0, a1, b0, b1 in sm.get_opcodes():
        if tag == "equal":
            pairs += list(zip(src[a0:a1], dst[b0:b1]))
        elif tag == "replace":
            pairs += _pair_same_types(src[a0:a1], dst[b0:b1])
    new_state = {}
    for s, d in pairs:
        for k, v in d.tensors.items():
            dst_key, src_key = f"model.{d.index}.{k}", f"model.{s.index}.{k}"
            if any(x in dst_key for x in exclude):
                report.excluded.append(dst_key)
            elif k in s.tensors and s.tensors[k].shape == v.shape:
                new_state[dst_key] = s.tensors[k].to(v.dtype)
                report.mapping[dst_key] = src_key
            elif k in s.tensors:
                report.mismatched.append((dst_key, tuple(s.tensors[k].shape), tuple(v.shape)))
            else:
                report.fresh.append(dst_key)
        report.unused += [f"model.{s.index}.{k}" for k in s.tensors if k not in d.tensors]
    paired_src, paired_dst = {s.index for s, _ in pairs}, {d.index for _, d in pairs}
    report.new = [(d.index, _describe(model.model[d.index])) for d in dst if d.index not in paired_dst]
    report.dropped = [(s.index, s.type) for s in src if s.index not in paired_src]
    model.load_state_dict(new_state, strict=False)
    return report
