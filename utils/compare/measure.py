"""What compare.py measures on a finished run's best.pt besides mAP: parameters and GFLOPs, the plug-ins' mean
share of the output, BRA's routing figures and every model's heatmaps."""

from __future__ import annotations

from pathlib import Path

from models import load_model
from models.attention.routing import bra_layers, visualize_routing
from models.attention.share import first_images, mean_share, plugin_share
from utils.data.dataset import create_dataloader
from utils.flops import gflops
from utils.heatmaps import heatmap_grid
from utils.paths import ROOT
from utils.torch_utils import parameter_counts

__all__ = ["ROUTING_CONF", "ROUTING_PHOTOS", "HEATMAP_METHOD", "model_figures", "routing_figures", "share",
           "share_batches", "size"]

ROUTING_PHOTOS = ("bus.jpg", "zidane.jpg", "astronaut.jpg")
ROUTING_CONF = 0.05  # a few epochs leave confidences low; the figure shows the top detections above this
HEATMAP_METHOD = "gradcam"  # on each photo's top-scoring class (EigenCAM's component has no sign: it may light the
# background instead of the objects, as it did on bus.jpg)


def size(best: Path, imgsz: int) -> tuple[int, float]:
    """(parameters, GFLOPs at imgsz) of the trained model, BatchNorm not fused: the figures of its summary."""
    model = load_model(best, device="cpu")
    return parameter_counts(model)[0], gflops(model, imgsz)


def share_batches(imgsz: int, val_split, n_images: int = 32) -> list:
    """The first `n_images` validation images, letterboxed to imgsz x imgsz: float batches."""
    loader, _ = create_dataloader(val_split, imgsz, 16, 32, workers=0, prefix="share: ")
    return first_images(loader, n_images)


def share(run_dir: Path, batches: list) -> float | None:
    """Mean plug-in share (models.attention.share) of the run's best.pt on `batches`; None without plug-ins."""
    return mean_share(plugin_share(load_model(run_dir / "weights" / "best.pt", device="cpu"), batches))


def routing_figures(models: dict, save_dir: Path, imgsz: int) -> list[Path]:
    """BRA's routing on the bundled photos for each model {name: loaded model} that has BRA layers, into
    save_dir/routing/<name>/; the figures' paths."""
    files = []
    for name, model in models.items():
        if bra_layers(model):
            files += visualize_routing(model, _photos(), save_dir / "routing" / name, top_detections=3, imgsz=imgsz,
                                       conf_thres=ROUTING_CONF)
    return files


def _photos() -> list[Path]:
    return [ROOT / "data" / "images" / p for p in ROUTING_PHOTOS if (ROOT / "data" / "images" / p).is_file()]


def model_figures(weights: dict[str, Path], save_dir: Path, imgsz: int) -> list[Path]:
    """BRA's routing figures, then save_dir/heatmaps.png: each model's Grad-CAM heatmap (utils.heatmaps) on the
    bundled photos, a column per model in the order given (the baseline first). Each best.pt is loaded once."""
    models = {name: load_model(w) for name, w in weights.items()}
    grid = heatmap_grid(models, _photos(), save_dir / "heatmaps.png", imgsz, HEATMAP_METHOD)
    return routing_figures(models, save_dir, imgsz) + [grid]
