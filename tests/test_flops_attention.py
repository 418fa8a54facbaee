"""GFLOPs of attention a user builds from PyTorch's own modules, against analytic counts: nn.MultiheadAttention and
nn.TransformerEncoderLayer run fused fast-path kernels in eval mode without gradients, which the counter has no
rule for (they counted 0); scaled_dot_product_attention and batched matrix products are counted on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.flops import count_flops

L, E, HEADS, FF = 1600, 64, 4, 128
ATTENTION = 8 * L * E * E + 4 * L * L * E  # q, k, v and output projections; q k^T and weights @ v


class _MHA(nn.Module):
    def __init__(self, need_weights: bool):
        super().__init__()
        self.attn, self.need_weights = nn.MultiheadAttention(E, HEADS, batch_first=True), need_weights

    def forward(self, x):
        return self.attn(x, x, x, need_weights=self.need_weights)[0]


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_counts_its_products(need_weights):
    m = _MHA(need_weights)
    x = torch.randn(1, L, E)
    assert count_flops(m, x) == ATTENTION  # 0.708 GFLOPs; the fast path counted 0
    assert torch.backends.mha.get_fastpath_enabled()  # restored
    m.eval()
    with torch.no_grad():  # what the module computes is the fast path's result
        fast = m(x)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            slow = m(x)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_transformer_encoder_layers_count_attention_and_feed_forward():
    layer = nn.TransformerEncoderLayer(E, HEADS, dim_feedforward=FF, batch_first=True)
    one = ATTENTION + 2 * 2 * L * E * FF
    x = torch.randn(1, L, E)
    assert count_flops(layer, x) == one
    assert count_flops(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), x) == 2 * one


def test_sdpa_einsum_and_batched_matmul_on_the_cpu():
    q, k, v = (torch.randn(2, HEADS, L // 4, E // HEADS) for _ in range(3))
    n, d = L // 4, E // HEADS
    want = 2 * 2 * HEADS * n * n * d * 2  # batch 2: q k^T and weights @ v, 2 FLOPs per multiply-add

    class Sdpa(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    class Einsum(nn.Module):
        def forward(self, q, k, v):
            w = torch.einsum("bhnd,bhmd->bhnm", q, k).softmax(-1)
            return torch.einsum("bhnm,bhmd->bhnd", w, v)

    class Bmm(nn.Module):
        def forward(self, q, k, v):
            return (q @ k.transpose(-1, -2)).softmax(-1) @ v

    for m in (Sdpa(), Einsum(), Bmm()):
        assert count_flops(m, q, k, v) == want, type(m).__name__


def test_an_operator_without_a_counting_rule_is_named_not_counted_silently(log, monkeypatch):
    """A forward that runs arithmetic the counter has no rule for (here a matrix-vector product and an FFT) warns
    naming each operator once, and counts the rest exactly; the bundled plug-in models warn about nothing."""
    import utils.flops as flops
    from models.yolo import Model

    monkeypatch.setattr(flops, "_WARNED", set())

    class Uncounted(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, bias=False)

        def forward(self, x):
            y = self.conv(x)  # 2 * 8 * 3 * 3 * 3 * 10 * 12 FLOPs
            return torch.mv(y[0, 0], y[0, 1, 0]) + torch.fft.rfft2(y).real.sum()

    x = torch.randn(1, 3, 12, 14)
    assert count_flops(Uncounted(), x) == 2 * 8 * 27 * 10 * 12
    warned = [m for m in log if "GFLOPs leave out" in m]
    assert len(warned) == 1 and "aten._fft_r2c, aten.mv" in warned[0] and "Uncounted's count is too low" in warned[0]
    count_flops(Uncounted(), x)
    assert len([m for m in log if "GFLOPs leave out" in m]) == 1  # once per process
    assert flops.uncounted_operators({torch.ops.aten.mm, torch.ops.aten.relu}, {torch.ops.aten.mm: None}) == []

    for cfg in ("yolov5n_biformer.yaml", "yolov5n_hilo.yaml", "yolov5n_slide.yaml", "yolov5n_transformer.yaml"):
        count_flops(Model(cfg, verbose=False), torch.zeros(1, 3, 64, 96))
    assert len([m for m in log if "GFLOPs leave out" in m]) == 1, log
