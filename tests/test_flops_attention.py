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
