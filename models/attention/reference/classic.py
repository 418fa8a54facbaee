"""Plain references for the classic attention modules (`models/attention/classic.py`), written out from the papers'
equations and reading the module's own parameters: pooling as explicit sums over rows and columns, every 1x1
convolution as a weighted sum over input channels, ECA's 1D and CBAM's 7x7 kernels as sums of shifted, zero-padded
copies, BatchNorm by its formula (batch statistics in training, running ones in eval) and h-swish as
x * min(max(x + 3, 0), 6) / 6. No torch.nn layer is called, so a wrong layer choice in the module shows here.
"""

from __future__ import annotations

import torch

__all__ = ["se_reference", "eca_reference", "cbam_reference", "coordatt_reference"]


def _avg_hw(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): the sum over every pixel divided by their count."""
    total = torch.zeros(x.shape[:2], dtype=x.dtype)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            total = total + x[:, :, i, j]
    return total / (x.shape[2] * x.shape[3])


def _max_hw(x: torch.Tensor) -> torch.Tensor:
    out = x[:, :, 0, 0]
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            out = torch.maximum(out, x[:, :, i, j])
    return out


def _fc(v: torch.Tensor, conv) -> torch.Tensor:
    """A 1x1 convolution on a (B, C_in) vector: sum_c W[o, c] v[c] + b[o]."""
    w = conv.weight.reshape(conv.weight.shape[0], -1)
    out = (v[:, None, :] * w[None]).sum(-1)
    return out + conv.bias if conv.bias is not None else out


def _sigmoid(t: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + torch.exp(-t))


def se_reference(m, x: torch.Tensor) -> torch.Tensor:
    """Hu et al. Eq. 2-4: s = sigma(W2 delta(W1 z)), x_c * s_c."""
    z = _avg_hw(x)
    s = _sigmoid(_fc(torch.clamp(_fc(z, m.fc1), min=0), m.fc2))
    return x * s[:, :, None, None]


def eca_reference(m, x: torch.Tensor) -> torch.Tensor:
    """Wang et al. Eq. 12: w_c = sigma(sum_j k_j y_{c + j - k//2}), zero outside the channels."""
    y = _avg_hw(x)
    k, c = m.k, x.shape[1]
    kernel = m.conv.weight.reshape(k)
    padded = torch.cat([y.new_zeros(y.shape[0], k // 2), y, y.new_zeros(y.shape[0], k // 2)], 1)
    a = sum(kernel[j] * padded[:, j:j + c] for j in range(k))
    return x * _sigmoid(a)[:, :, None, None]


def _conv2d_shifted(maps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A 'same' convolution (odd square kernel, zero padding, no bias) of (B, C, H, W) to one output channel, as a
    sum over kernel offsets of shifted copies of the padded input."""
    _, c, h, w = maps.shape
    k = weight.shape[-1]
    p = k // 2
    padded = maps.new_zeros(maps.shape[0], c, h + 2 * p, w + 2 * p)
    padded[:, :, p:p + h, p:p + w] = maps
    out = maps.new_zeros(maps.shape[0], h, w)
    for ci in range(c):
        for di in range(k):
            for dj in range(k):
                out = out + weight[0, ci, di, dj] * padded[:, ci, di:di + h, dj:dj + w]
    return out[:, None]


def cbam_reference(m, x: torch.Tensor) -> torch.Tensor:
    """Woo et al. Eq. 2-3: M_c = sigma(MLP(avg) + MLP(max)), F' = M_c * F; M_s = sigma(f7x7([max_c F'; mean_c F'])),
    F'' = M_s * F'."""
    def mlp(v):
        return _fc(torch.clamp(_fc(v, m.mlp[0]), min=0), m.mlp[2])

    f1 = x * _sigmoid(mlp(_avg_hw(x)) + mlp(_max_hw(x)))[:, :, None, None]
    cmax = f1[:, 0]
    for ci in range(1, f1.shape[1]):
        cmax = torch.maximum(cmax, f1[:, ci])
    cmean = sum(f1[:, ci] for ci in range(f1.shape[1])) / f1.shape[1]
    return f1 * _sigmoid(_conv2d_shifted(torch.stack([cmax, cmean], 1), m.spatial.weight))


def _bn(t: torch.Tensor, bn) -> torch.Tensor:
    """BatchNorm2d by its formula on (B, C, L, 1): batch mean and biased variance in training, running ones in
    eval, then the affine scale and shift."""
    if bn.training:
        n = t.shape[0] * t.shape[2] * t.shape[3]
        mean = t.sum((0, 2, 3)) / n
        var = ((t - mean[None, :, None, None]) ** 2).sum((0, 2, 3)) / n
    else:
        mean, var = bn.running_mean, bn.running_var
    norm = (t - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + bn.eps)
    return norm * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def coordatt_reference(m, x: torch.Tensor) -> torch.Tensor:
    """Hou et al. Eq. 4-9: z^h = mean over W, z^w = mean over H; f = h_swish(BN(F1([z^h, z^w]))); g^h = sigma(F_h(f^h)),
    g^w = sigma(F_w(f^w)); y = x * g^h * g^w."""
    b, c, h, w = x.shape
    z_h = sum(x[:, :, :, j] for j in range(w)) / w  # (B, C, H)
    z_w = sum(x[:, :, i, :] for i in range(h)) / h  # (B, C, W)
    z = torch.cat([z_h, z_w], 2)  # (B, C, H + W)
    f = torch.stack([_fc(z[:, :, i], m.conv1) for i in range(h + w)], 2)[..., None]  # (B, mip, H + W, 1)
    f = _bn(f, m.bn1)
    f = f * torch.clamp(f + 3, min=0, max=6) / 6
    g_h = _sigmoid(torch.stack([_fc(f[:, :, i, 0], m.conv_h) for i in range(h)], 2))  # (B, C, H)
    g_w = _sigmoid(torch.stack([_fc(f[:, :, h + j, 0], m.conv_w) for j in range(w)], 2))  # (B, C, W)
    return x * g_h[:, :, :, None] * g_w[:, :, None, :]
