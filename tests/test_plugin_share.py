"""models.attention.share against the share computed by hand from the Residual's parts."""

import torch

from models.attention.share import mean_share, plugin_share
from models.yolo import Model


def _by_hand(model, imgs, layer):
    """rms(gamma * block(x)) / rms(x), with x captured at the Residual's input."""
    seen = {}
    h = layer.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    with torch.no_grad():
        model(imgs)
        h.remove()
        x = seen["x"]
        branch = layer.gamma.view(1, -1, 1, 1) * layer.m(x)
    return float(branch.square().mean().sqrt() / x.square().mean().sqrt())


def test_share_matches_hand_computation_and_is_zero_at_start():
    torch.manual_seed(0)
    model = Model("yolov5n_hilo.yaml", verbose=False).eval()
    imgs = torch.rand(2, 3, 64, 96)
    assert plugin_share(model, [imgs]) == {"model.20": 0.0, "model.24": 0.0}  # gamma starts at zero

    with torch.no_grad():
        model.model[20].gamma.copy_(torch.linspace(-0.5, 0.5, model.model[20].gamma.numel()))
        model.model[24].gamma.fill_(0.01)
    model.train()
    shares = plugin_share(model, [imgs])
    assert model.training  # mode restored
    for i in (20, 24):
        model.eval()
        want = _by_hand(model, imgs, model.model[i])
        assert want > 0
        assert abs(shares[f"model.{i}"] - want) <= 1e-5 * want
    assert mean_share(shares) == (shares["model.20"] + shares["model.24"]) / 2


def test_over_several_batches_pools_the_squares():
    torch.manual_seed(1)
    model = Model("yolov5n_hilo.yaml", verbose=False).eval()
    with torch.no_grad():
        model.model[20].gamma.fill_(0.3)
    a, b = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 64)
    pooled = plugin_share(model, [a, b])["model.20"]
    assert abs(pooled - plugin_share(model, [torch.cat([a, b])])["model.20"]) <= 1e-5 * pooled


def test_baseline_has_no_share():
    model = Model("yolov5n.yaml", verbose=False)
    assert plugin_share(model, [torch.rand(1, 3, 64, 64)]) == {}
    assert mean_share({}) is None
