"""Helpers shared by several test files: a sleeping stand-in model for the latency tests, the gradient
comparison of an attention plug-in against its naive reference, and the gradient check of a plug-in in the
detector."""

from __future__ import annotations

import time

import torch
import torch.nn as nn

from models.yolo import Model
from tests.conftest import open_residuals


class FakeClock:
    """A clock that only the stand-in models move: `time()` is what utils.deploy.latency reads (patch its time_sync
    with it), `advance(ms)` what a call costs. Latency tests then assert exact figures, whatever the machine's load."""

    def __init__(self):
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000


class Sleeper(nn.Module):
    """A 'model' whose forward takes `ms` milliseconds per call (on `clock` when given, else really sleeping) and
    logs (its name, the batch size, the input's type name)."""

    def __init__(self, name: str, ms: float, log: list, clock: FakeClock | None = None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.name, self.ms, self.log, self.clock = name, ms, log, clock

    def forward(self, x):
        self.log.append((self.name, x.shape[0], type(x).__name__))
        if self.clock is not None:
            self.clock.advance(self.ms)
        else:
            time.sleep(self.ms / 1000)
        return x


def outputs_and_grads(fn, x: torch.Tensor, g: torch.Tensor, module: nn.Module | None = None):
    """Output of fn(x), and the gradients of <output, g> for x and for every parameter of `module` (default: fn
    itself, a module), by name."""
    x = x.clone().requires_grad_(True)
    names, params = zip(*sorted((fn if module is None else module).named_parameters()))
    y = fn(x)
    gx, *gp = torch.autograd.grad(y, [x, *params], g)
    return y.detach(), gx, dict(zip(names, gp))


def assert_same_param_grads(gp: dict, gp_ref: dict) -> None:
    """Every parameter's gradient within rtol 1e-5 and atol 1e-5 x its largest entry (they are sums over every
    token or pixel), the atol never below 1e-7 x the largest entry of all gradients (for a gradient that is
    exactly 0)."""
    assert gp.keys() == gp_ref.keys()
    top = max(t.abs().max().item() for t in gp_ref.values())
    for name, want in gp_ref.items():
        atol = 1e-5 * max(want.abs().max().item(), 1e-2 * top)
        torch.testing.assert_close(gp[name], want, atol=atol, rtol=1e-5, msg=lambda text, n=name: f"{n}: {text}")


def assert_plugin_params_get_grads(cfg: str, cls: type) -> None:
    """A training forward and backward of the `cfg` detector (Residual gates opened) at 64x96 gives every
    parameter of each `cls` plug-in a finite, non-zero gradient."""
    torch.manual_seed(0)
    model = Model(cfg, verbose=False).train()
    open_residuals(model)
    maps = model(torch.randn(2, 3, 64, 96))
    sum(m.float().square().mean() for m in maps).backward()
    for m in (m for m in model.modules() if isinstance(m, cls)):
        for name, p in m.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
