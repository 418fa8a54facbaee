"""How much a Residual-wrapped plug-in adds to the features it sits on, measured on real images.

    shares = plugin_share(model, images)       # {"model.20": 0.0012, "model.24": 0.0004}

A plug-in inside `Residual` computes x + gamma * block(x), with gamma starting at zero. Its share is
rms(gamma * block(x)) / rms(x) over the given images: 0 means the plug-in is still switched off and the model
predicts what the model without it would, 0.1 means it changes the features by about a tenth. Accuracy
differences between a plug-in model and its baseline only mean something once the share has grown.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from models.blocks import Residual
from utils.files import atomic_write
from utils.log import LOGGER

__all__ = ["branch_sums", "plugin_share", "mean_share", "first_images", "share_line", "loader_share", "SHARE_CSV",
           "write_epoch_shares", "read_epoch_shares"]


@torch.no_grad()
def branch_sums(gamma: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """[sum of (gamma * out)^2, sum of x^2] in float32 for a Residual's block input `x` and output `out`: the two
    sums a share is the square root of the ratio of."""
    branch = gamma.detach().float().view(1, -1, 1, 1) * out.detach().float()  # (B, C, H, W)
    return torch.stack([branch.square().sum(), x.detach().float().square().sum()])


@torch.no_grad()
def plugin_share(model: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """{layer name: rms(gamma * block(x)) / rms(x)} for every Residual in `model`, over all `batches`.

    batches: float image tensors (B, 3, H, W) in [0, 1] on the model's device. Empty when the model has no
    Residual wrapper (a baseline, or a plug-in inserted bare).
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, Residual)}
    if not layers:
        return {}
    sums = {name: [0.0, 0.0] for name in layers}  # name -> [sum of branch^2, sum of x^2]

    def hook(name: str, gamma: torch.Tensor):
        def record(block: nn.Module, inputs: tuple, output: torch.Tensor) -> None:  # on the wrapped block
            b, x = branch_sums(gamma, inputs[0], output).tolist()
            sums[name][0] += b
            sums[name][1] += x
        return record

    handles = [m.m.register_forward_hook(hook(name, m.gamma)) for name, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for imgs in batches:
            model(imgs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: (b / x) ** 0.5 if x > 0 else float("nan") for name, (b, x) in sums.items()}


def mean_share(shares: dict[str, float]) -> float | None:
    """The mean share over a model's plug-in layers; None for a model without Residual plug-ins."""
    return sum(shares.values()) / len(shares) if shares else None


def first_images(loader: Iterable, n_images: int = 32, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """The first `n_images` images of a detection DataLoader (uint8 batches first) as batches in [0, 1]."""
    batches, seen = [], 0
    for imgs, *_ in loader:
        batches.append(imgs[: n_images - seen].to(device, dtype) / 255)
        seen += len(batches[-1])
        if seen >= n_images:
            break
    return batches


def share_line(shares: dict[str, float], n_images: int) -> str:
    """One log line: each plug-in layer's share in percent, and what a share near zero means."""
    cells = ", ".join(f"{name} {100 * v:.2g}%" for name, v in shares.items())
    return (f"Plug-in share on {n_images} val images, rms(gamma*block(x)) / rms(x): {cells}"
            + ("  (near 0%: the plug-ins are still switched off; train longer or on more data)"
               if max(shares.values()) < 0.01 else ""))


def loader_share(model: nn.Module, loader, device: torch.device | str = "cpu", n_images: int = 32) -> dict[str, float]:
    """plugin_share on the first `n_images` of `loader`, logged with share_line; {} for a model without
    Residual plug-ins or without a loader (training logs this each epoch)."""
    if loader is None or not any(isinstance(m, Residual) for m in model.modules()):
        return {}
    batches = first_images(loader, n_images, device, next(model.parameters()).dtype)
    shares = plugin_share(model, batches)
    LOGGER.info(share_line(shares, sum(len(b) for b in batches)))
    return shares


SHARE_CSV = "plugin_share.csv"  # train.py's per-epoch plug-in shares in its run folder


def write_epoch_shares(path, epoch: int, shares: dict[str, float], gates: dict[str, float]) -> None:
    """Record epoch `epoch`'s share and mean |gamma| of every plug-in layer in the CSV at `path` (columns epoch,
    layer, share, gamma_abs_mean). Rows of this and later epochs are replaced, so a resumed run rewrites the
    epochs it trains again."""
    path = Path(path)
    rows = [r for r in read_epoch_shares(path) if r[0] < epoch]
    rows += [(epoch, name, float(s), float(gates.get(name, float("nan")))) for name, s in shares.items()]
    text = "epoch,layer,share,gamma_abs_mean\n" + "".join(f"{e},{n},{s:.6g},{g:.6g}\n" for e, n, s, g in rows)
    atomic_write(path, lambda f: f.write(text.encode()))


def read_epoch_shares(path) -> list[tuple[int, str, float, float]]:
    """(epoch, layer, share, mean |gamma|) rows of a plugin_share.csv; [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        e, n, s, g = line.split(",")
        out.append((int(e), n, float(s), float(g)))
    return out
