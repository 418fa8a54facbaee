"""A bound on how much a Residual-wrapped plug-in may add to the features it sits on, held during training.

    cap = ShareCap(model, hyp.plugin_share_max)   # hooks on every Residual; inactive when the cap is 0
    ... forward and backward of the accumulated batches ...
    optimizer step
    cap.step()                                     # gamma scaled down where the batches' share passed the cap

A plug-in's share is rms(gamma * block(x)) / rms(x) (models/attention/share.py). It is linear in the gate gamma,
so scaling gamma by cap / share puts a layer's share on the batches it was measured on exactly at the cap.
After each optimizer step the layers whose share on the batches of that step (the training images, all
processes together) passed `cap` have gamma scaled so; the others are left alone. This is a projection, not a
penalty: while the share stays under the cap, training is exactly as without it, and the bound does not depend
on the schedule's length, the data or the learning rate. The optimizer's state is untouched. The share a run
reports (on val images, in eval mode) can differ from the training batches' by a few percent either way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from models.attention.share import branch_sums
from models.blocks import Residual

__all__ = ["ShareCap"]


class ShareCap:
    """Holds every Residual plug-in's training-batch share at or below `cap` (0: no bound, no hooks)."""

    def __init__(self, model: nn.Module, cap: float):
        self.cap = float(cap)
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, Residual)} if cap > 0 else {}
        self.sums: dict[str, list[torch.Tensor]] = {}
        self.capped = dict.fromkeys(self.layers, 0)  # steps at which each layer was scaled back
        self.steps = 0
        self._handles = [m.m.register_forward_hook(self._hook(n, m)) for n, m in self.layers.items()]

    def _hook(self, name: str, layer: Residual):
        def record(block: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if not block.training:  # validation and share measurements in eval mode are not training batches
                return
            s = branch_sums(layer.gamma, inputs[0], output)
            acc = self.sums.get(name)
            self.sums[name] = s if acc is None else acc + s
        return record

    @torch.no_grad()
    def step(self) -> dict[str, float]:
        """After an optimizer step: scale back each gate whose share on the batches since the last step passed the
        cap. Returns {layer: share before scaling} of the layers scaled back."""
        if not self.sums:
            return {}
        names = list(self.sums)
        sums = torch.stack([self.sums[n] for n in names])  # (layers, 2)
        self.sums = {}
        if dist.is_available() and dist.is_initialized():  # every process scales by the same factor
            dist.all_reduce(sums)
        self.steps += 1
        out = {}
        for name, (b, x) in zip(names, sums.tolist()):
            share = (b / x) ** 0.5 if x > 0 else 0.0
            if share > self.cap:
                self.layers[name].gamma.mul_(self.cap / share)
                self.capped[name] += 1
                out[name] = share
        return out

    def summary(self) -> dict[str, float]:
        """{layer: fraction of the optimizer steps since the last call at which the layer was scaled back}; resets
        the counts."""
        out = {n: c / self.steps for n, c in self.capped.items()} if self.steps else {}
        self.capped, self.steps = dict.fromkeys(self.layers, 0), 0
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
