"""Shared test fixtures: paths to the bundled data and to the optional ../shared folder."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"

# Test files that load ONNX Runtime or OpenVINO into the test process (tests elsewhere that do carry
# @pytest.mark.runtime). A process that has their native thread pools loaded can die with SIGSEGV when it later
# starts a process (a DataLoader worker, a subprocess): the serial suite did, in a later test that started one. So
# these run last, marked `runtime`: marked tests first, then these files (their slow tests first, then the rest,
# each part in the order listed).
RUNTIME_FILES = ("test_deploy.py", "test_backends.py", "test_export.py", "test_openvino_f32.py", "test_precision.py",
                 "test_hub.py", "test_ensemble_tta.py", "test_edge.py")


# Tests that took 5 s or more each on a 2-core machine (pytest --durations, 2026-12-05; those of 13 s or more on
# 2026-12-06 added): marked `slow`, so that
# `pytest -m "not slow"` is a quick check while CI runs everything. Each entry must name a collected test.
SLOW = (
    "test_backends.py::test_val_map_equals_pt",
    "test_bootstrap.py::test_interval_covers_the_true_difference_at_about_95_percent",
    "test_callbacks.py::test_hooks_tensorboard_and_stop",
    "test_compare.py::test_cli_resume_after_a_kill",
    "test_compare.py::test_compare_job_end_to_end",
    "test_compare.py::test_peak_training_memory_grows_with_the_batch",
    "test_compare_parallel.py::test_a_killed_worker_is_run_again_then_recorded",
    "test_compare_parallel.py::test_jobs_two_equal_a_sequential_job_from_the_command_line",
    "test_compare_parallel.py::test_ray_local_equals_a_sequential_job_from_the_command_line",
    "test_compare_ray.py::test_two_node_cluster_survives_a_dead_node",
    "test_ddp.py::test_torchrun_two_processes_on_cpu",
    "test_deploy.py::test_compare_deploy_columns_and_a_failed_export",
    "test_edge.py::test_every_config_converts_and_equals_pytorch",
    "test_edge.py::test_export_cli_writes_each_with_its_metadata",
    "test_edge.py::test_val_map_of_tflite_and_executorch_equals_pt",
    "test_edge.py::test_detect_cli_runs_the_edge_files_and_refuses_coreml_clearly",
    "test_edge.py::test_executorch_int8_from_the_command_line",
    "test_edge.py::test_yolov5n_edge_files_equal_pytorch",
    "test_evolve.py::test_evolve_two_generations",
    "test_sweep.py::test_sweep_from_the_command_line",
    "test_export.py::test_a_failed_reexport_keeps_the_previous_files",
    "test_export.py::test_dynamic_export_equals_pytorch_at_other_sizes",
    "test_export.py::test_fixed_export_equals_pytorch_in_every_runtime",
    "test_export.py::test_fixed_export_metadata_and_files",
    "test_export.py::test_simplify_and_fixed_size_graphs",
    "test_export.py::test_several_weights_are_each_exported_from_the_command_line",
    "test_models.py::test_every_config_builds_at_every_scale",
    "test_official_commands.py::test_detect_downloads_an_image_url",
    "test_official_commands.py::test_official_detect_command_runs",
    "test_parse_errors.py::test_unknown_module_is_a_user_error_with_close_matches",
    "test_precision.py::test_half_and_int8_exports_from_the_command_line",
    "test_readme_example.py::test_adding_your_own_attention_module_runs_as_written",
    "test_precision.py::test_val_refuses_an_unknown_openvino_precision",
    "test_runtime_isolation.py::test_child_timing_equals_shape_of_in_process_and_loads_no_runtime",
    "test_runtime_isolation.py::test_compare_jobs_in_a_row_with_workers_and_deployed_latency",
    "test_train.py::test_diverged_training_fails_from_the_command_line",
    "test_train.py::test_plugin_model_with_plugins_held_at_zero_trains_exactly_as_the_baseline",
    "test_train.py::test_plugin_optimizer_switches_plugins_on_and_resumes",
    "test_train.py::test_plugin_share_is_reported_for_plugin_models_only",
    "test_train.py::test_resume_after_kill_matches_uninterrupted_run",
    "test_train.py::test_smoke_train_then_val_and_detect",
    "test_train_errors.py::test_a_file_size_limit_during_a_checkpoint_write_is_one_line",
    "test_train_errors.py::test_command_line_user_error_is_one_line",
    "test_train_errors.py::test_yaml_files_are_plain_data",
    "test_val.py::test_saved_image_stats_give_vals_map_and_resample_it",
    "test_user_modules.py::test_train_with_modules_then_val_detect_export_without",
    "test_user_modules.py::test_compare_with_modules_and_workers",
    "test_user_modules.py::test_a_file_that_fails_to_import_is_one_line",
    "test_share_cap.py::test_cap_from_a_hyp_file_on_the_command_line",
    "test_compare_ray.py::test_a_node_that_cannot_read_the_data_stops_the_job_at_once",
    "test_compare_ray.py::test_ray_local_starts_a_cluster_of_its_own_beside_a_running_one",
    "test_heatmaps.py::test_detect_heatmap_from_the_command_line",
    "test_edge.py::test_coreml_half_computes_in_float16",
    "test_detect.py::test_data_names_label_the_boxes_from_the_command_line",
)


def _short_id(item) -> str:
    """'test_file.py::test_name' of a collected item, parameters dropped."""
    return f"{Path(str(item.fspath)).name}::{item.originalname or item.name}"


def pytest_configure(config):
    config.addinivalue_line("markers", "runtime: loads ONNX Runtime or OpenVINO into the test process (run last)")
    config.addinivalue_line("markers", "slow: takes a minute or more (pytest -m 'not slow' leaves these out)")


def pytest_collection_modifyitems(config, items):
    """Every test of RUNTIME_FILES marked `runtime` and moved after all others (stable otherwise), so that no test
    forks a process that ONNX Runtime or OpenVINO were loaded into, serially or under pytest-xdist."""
    rank = {name: i for i, name in enumerate(RUNTIME_FILES)}

    def key(item):
        # inside each group the slow tests first (longest work first): the suite does not end on one long test
        # while the other worker idles
        name, fast = Path(str(item.fspath)).name, 0 if item.get_closest_marker("slow") else 1
        if name in rank:
            return (1, 1, fast, rank[name])
        return (1, 0, fast, 0) if item.get_closest_marker("runtime") else (0, 0, fast, 0)

    slow = set(SLOW)
    seen = set()
    for item in items:
        if Path(str(item.fspath)).name in rank:
            item.add_marker(pytest.mark.runtime)
        if _short_id(item) in slow:
            item.add_marker(pytest.mark.slow)
            seen.add(_short_id(item))
    collected_files = {Path(str(item.fspath)).name for item in items}
    whole_files = not config.getoption("-k") and not any("::" in str(a) for a in config.args)
    stale = [t for t in slow - seen if whole_files and t.split("::")[0] in collected_files]
    if stale:  # a renamed or removed test: the list must follow
        raise pytest.UsageError(f"tests/conftest.py SLOW names tests that do not exist: {sorted(stale)}")
    items[:] = sorted(items, key=key)  # sorted() is stable: the order inside each group is kept


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests run two at a time on two cores: one intra-op thread each keeps them from fighting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


VAL_STEMS = ["000000000009", "000000000025", "000000000030", "000000000034", "000000000036"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A data YAML over 5 COCO128 images (copied, so the label cache is written in a temporary folder); files
    that need another subset define a `tiny_data` of their own."""
    return tiny_data_in(tmp_path_factory.mktemp("tiny"))


def build_once(tmp_path_factory, name: str, make) -> Path:
    """The folder `name`, filled by `make(folder)` once for the whole test session: under pytest-xdist every worker
    that asks waits on one file lock, the first fills the folder and the others read what it left. Tests only read
    these folders (copy what they change). A `make` that raises leaves nothing, and the next to ask tries again."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the workers' temporary folders are side by side in one folder of the session
    folder = base / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                make(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            (folder / ".done").touch()
    return folder


def tiny_data_in(folder: Path) -> Path:
    """The data YAML `tiny_data` makes (5 COCO128 images, train = val), written into `folder`."""
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    src = ROOT / "data/coco128"
    for s in VAL_STEMS:
        shutil.copy(src / "images/train2017" / f"{s}.jpg", folder / "images")
        shutil.copy(src / "labels/train2017" / f"{s}.txt", folder / "labels")
    names = (ROOT / "data/coco128.yaml").read_text().split("names:", 1)[1]
    (folder / "tiny.yaml").write_text(f"path: {folder}\ntrain: images\nval: images\nnc: 80\nnames:{names}")
    return folder / "tiny.yaml"


# The compare job the scale-out tests hold their jobs against: yolov5n and yolov5n_biformer, one seed, one epoch at
# 64, one thread a run, no deployed latency and no bootstrap. compare_command(...) is its command line.
COMPARE_CFGS = ("yolov5n.yaml", "yolov5n_biformer.yaml")


def compare_command(data: Path, project: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "compare.py"), "--cfgs", *COMPARE_CFGS, "--data", str(data), "--epochs", "1",
            "--imgsz", "64", "--batch-size", "2", "--seeds", "1", "--workers", "0", "--device", "cpu", "--project",
            str(project), "--name", name, "--no-deploy-latency", "--bootstrap", "0", *extra]


@pytest.fixture(scope="session")
def sequential_job(tmp_path_factory) -> Path:
    """The folder of compare_command's job run one run after another from the command line (OMP_NUM_THREADS=1), once
    for the session; --jobs and --ray jobs are held against its figures."""
    def make(folder: Path) -> None:
        data = tiny_data_in(folder / "data")
        r = subprocess.run(compare_command(data, folder, "seq"), cwd=folder, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]

    return build_once(tmp_path_factory, "sequential_job", make) / "seq"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def coco128() -> Path:
    return ROOT / "data" / "coco128"


def open_residuals(model: torch.nn.Module, gamma: float = 1.0) -> None:
    """Set every Residual wrapper's gamma (zero at initialisation) so its block's parameters get gradients."""
    from models.common import Residual

    for m in model.modules():
        if isinstance(m, Residual):
            with torch.no_grad():
                m.gamma.fill_(gamma)


def plugin_layers(model: torch.nn.Module, cls: type) -> list[tuple[int, torch.nn.Module]]:
    """(layer index, module) of each `cls` among the model's layers, bare or inside a Residual wrapper."""
    out = []
    for i, layer in enumerate(model.model):
        inner = getattr(layer, "m", None)
        if isinstance(layer, cls) or isinstance(inner, cls):
            out.append((i, layer if isinstance(layer, cls) else inner))
    return out


@pytest.fixture
def log():
    """Messages the project's logger emits during the test (INFO and up)."""
    from utils.log import LOGGER

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler, level = Keep(logging.INFO), LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    yield records
    LOGGER.removeHandler(handler)
    LOGGER.setLevel(level)


class LogCapture:
    """The project logger's lines while the block runs, as `.text` afterwards."""

    def __enter__(self):
        from utils.log import LOGGER, setup_logging

        setup_logging()
        self.buf = io.StringIO()
        self.handler = logging.StreamHandler(self.buf)
        LOGGER.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        from utils.log import LOGGER

        LOGGER.removeHandler(self.handler)
        self.text = self.buf.getvalue()


def check_plugin_config(cfg: str, cls: type) -> None:
    """A plug-in config builds with `cls` at layers 20 and 24 and runs: the whole model at 64 and 64x96 (every
    scale) and at 320x480 and 640 (n, s); for m/l/x the plug-ins also run on the P4/P5 maps of a 320x480 input
    (20x30, 10x15: odd, non-square), as a 640 forward of l or x takes many seconds on a shared CPU."""
    from models.yolo import Model

    torch.manual_seed(0)
    model = Model(cfg, verbose=False).eval()
    found = plugin_layers(model, cls)
    assert [i for i, _ in found] == [20, 24]
    sizes = [(64, 64), (64, 96)] + ([(320, 480), (640, 640)] if model.yaml["scale"] in "ns" else [])
    with torch.no_grad():
        for h, w in sizes:
            pred, _ = model(torch.zeros(1, 3, h, w))
            assert pred.shape == (1, 3 * (h * w // 64 + h * w // 256 + h * w // 1024), 85)
            assert torch.isfinite(pred).all()
        for (_, m), s in zip(found, (16, 32)):
            x = torch.randn(1, m.dim, 320 // s, 480 // s)
            y = m(x)
            assert y.shape == x.shape and torch.isfinite(y).all()
