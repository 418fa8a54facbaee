"""Time and score train.py against official YOLOv5's train.py: same command, same data, same start weights, one run.

    python -m benchmarks.train_vs_official --official DIR [--official-deps DIR] [--seeds 0 1 2]

DIR holds the `yolov5` package of the official pip release (`pip download yolov5==7.0.14 --no-deps`, then unzip
the wheel into DIR). Its own imports (pandas, seaborn, psutil, thop, gitpython, requests, ultralytics) must
resolve: install them into the environment, or `pip install --target DEPS ...` and pass `--official-deps DEPS`.

For each seed the two trainers run one after the other (ours first), each as
`train.py --weights yolov5n.pt --data coco128.yaml --epochs 3 --imgsz 320 --batch-size 16 --seed S --noplots`
with every other option at its default. The table gives, per run, the seconds each epoch's training bar took
(tqdm's elapsed time, whole seconds; validation not included), the wall time of the whole command, and the
last epoch's mAP from results.csv; then the mean of each column and ours / official.

Official train.py reaches for the network in places that have nothing to do with training. In a scratch folder
this script gives it: empty `roboflow` and `huggingface_hub` stand-ins (dataset upload and hub download only;
the hub lookup answers "not found"), a font for its plotting check (matplotlib's DejaVuSans under the name it
looks for), `np.trapz` for numpy >= 2 (removed there; same function as `np.trapezoid`), and the bundled
weights/yolov5n.pt rebuilt as official YOLOv5's own Model class holding the same tensors, so both trainers start
from identical weights. That rebuilt file is a pickle made by this script, loaded by official train.py with
weights-only loading switched off (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, official code predates the safe default).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_STUBS = {
    "roboflow/__init__.py": "class Roboflow:\n    pass\n",
    "roboflow/core/__init__.py": "",
    "roboflow/core/version.py": "class Version:\n    pass\n",
    "huggingface_hub/__init__.py": (
        "from .utils._errors import RepositoryNotFoundError\n\n\n"
        "def list_repo_files(*args, **kwargs):\n    raise RepositoryNotFoundError('offline')\n\n\n"
        "def hf_hub_download(*args, **kwargs):\n    raise RepositoryNotFoundError('offline')\n"),
    "huggingface_hub/utils/__init__.py": "",
    "huggingface_hub/utils/_errors.py": "class RepositoryNotFoundError(Exception):\n    pass\n",
    "huggingface_hub/utils/_validators.py": "class HFValidationError(Exception):\n    pass\n",
    "sitecustomize.py": "import numpy as np\n\nif not hasattr(np, 'trapz'):\n    np.trapz = np.trapezoid\n",
}

_REBUILD = """
import sys, torch
from yolov5.models.yolo import Model
state, names = torch.load(sys.argv[1], weights_only=True)
model = Model(sys.argv[2], nc=len(names))
model.load_state_dict(state, strict=True)
model.names = names
torch.save({'model': model.half(), 'ema': None, 'epoch': -1, 'optimizer': None, 'best_fitness': None,
            'updates': None}, sys.argv[3])
"""

# one tqdm refresh of a training bar: "  2/2   0G   0.067   0.057   0.041   187   320: 100%|####| 8/8 [00:08<00:00, ..."
_BAR = re.compile(r"^\s*(\d+)/\d+\s+\S+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+\s+\d+: 100%\|.*?\| (\d+)/\2 \[(\d+):(\d+)<")


def epoch_seconds(log: str) -> list[int]:
    """Elapsed whole seconds of each epoch's finished training bar, in epoch order."""
    seconds: dict[int, int] = {}
    for line in re.split(r"[\r\n]", log):
        m = _BAR.match(line)
        if m:
            seconds[int(m.group(1))] = int(m.group(3)) * 60 + int(m.group(4))
    return [seconds[k] for k in sorted(seconds)]


def last_map(results_csv: Path) -> tuple[float, float]:
    with open(results_csv, newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(f)]
    return float(rows[-1]["metrics/mAP_0.5"]), float(rows[-1]["metrics/mAP_0.5:0.95"])


def prepare_official(work: Path, official: Path, deps: Path | None) -> tuple[dict, Path, Path]:
    """Stand-ins, font, dataset YAML and rebuilt weights for official train.py; returns (env, data, weights)."""
    import matplotlib
    import torch
    import yaml

    from models import load_model
    from utils.data.config import load_data_config

    stubs = work / "stubs"
    for rel, text in _STUBS.items():
        (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
        (stubs / rel).write_text(text)
    config = work / "config"
    config.mkdir()
    shutil.copy(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf", config / "Arial.ttf")

    data = load_data_config("coco128.yaml")
    data_yaml = work / "coco128.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(data.path), "train": [str(p) for p in data.train],
                                         "val": [str(p) for p in data.val], "nc": data.nc,
                                         "names": dict(enumerate(data.names))}))

    env = dict(os.environ, YOLOV5_CONFIG_DIR=str(config), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
               PYTHONPATH=os.pathsep.join(str(p) for p in (stubs, deps, official) if p))
    model = load_model("yolov5n.pt")
    state = work / "yolov5n_state.pt"
    torch.save((model.state_dict(), list(model.names)), state)
    weights = work / "yolov5n_official.pt"
    subprocess.run([sys.executable, "-c", _REBUILD, str(state), str(official / "yolov5/models/yolov5n.yaml"),
                    str(weights)], env=env, check=True, cwd=work, capture_output=True)
    return env, data_yaml, weights


def run_one(cmd: list[str], cwd: Path, env: dict | None, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"ERROR: {' '.join(cmd)} exited {proc.returncode}; its output is in {log}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--official", type=Path, required=True, help="folder that holds the official yolov5 package")
    p.add_argument("--official-deps", type=Path, default=None, help="extra PYTHONPATH folder for its imports")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--keep", type=Path, default=None, help="keep run folders and logs here instead of a temp dir")
    opt = p.parse_args()
    official = opt.official.resolve()
    if not (official / "yolov5" / "train.py").is_file():
        sys.exit(f"ERROR: --official {opt.official}: no yolov5/train.py there; unzip the yolov5==7.0.14 wheel into it")
    deps = opt.official_deps.resolve() if opt.official_deps else None

    work = Path(tempfile.mkdtemp(prefix="train_vs_official_")) if opt.keep is None else opt.keep.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env, data_yaml, weights = prepare_official(work, official, deps)
    common = ["--epochs", str(opt.epochs), "--batch-size", str(opt.batch_size), "--imgsz", str(opt.imgsz),
              "--project", str(work), "--noplots", "--exist-ok"]
    trainers = {  # who -> (script and its weights and data, working folder, environment)
        "ours": ([sys.executable, "train.py", "--weights", "yolov5n.pt", "--data", "coco128.yaml"], ROOT, None),
        "official": ([sys.executable, str(official / "yolov5/train.py"), "--weights", str(weights), "--data",
                      str(data_yaml)], work, env),
    }
    rows = []
    for seed in opt.seeds:
        for who, (cmd, cwd, run_env) in trainers.items():
            name = f"{who}_seed{seed}"
            wall = run_one(cmd + common + ["--name", name, "--seed", str(seed)], cwd, run_env, work / f"{name}.log")
            secs = epoch_seconds((work / f"{name}.log").read_text(errors="replace"))
            map50, map_ = last_map(work / name / "results.csv")
            rows.append((who, seed, secs, wall, map50, map_))
            print(f"{who:9} seed {seed}: epochs {secs} s, {wall:.1f} s in all, mAP50 {map50:.3f}, "
                  f"mAP50-95 {map_:.3f}", flush=True)

    print("\n| trainer  | seed | epoch s (each)  | mean epoch s | whole run s | mAP50 | mAP50-95 |")
    print("|----------|------|-----------------|--------------|-------------|-------|----------|")
    for who, seed, secs, wall, map50, map_ in rows:
        print(f"| {who:8} | {seed:4} | {' '.join(map(str, secs)):15} | {statistics.mean(secs):12.1f} "
              f"| {wall:11.1f} | {map50:.3f} | {map_:8.3f} |")
    means = {}
    for who in ("ours", "official"):
        mine = [r for r in rows if r[0] == who]
        means[who] = (statistics.mean(s for r in mine for s in r[2]), statistics.mean(r[3] for r in mine),
                      statistics.mean(r[4] for r in mine), statistics.mean(r[5] for r in mine))
        e, w, a, b = means[who]
        print(f"| {who:8} | mean | {'':15} | {e:12.1f} | {w:11.1f} | {a:.3f} | {b:8.3f} |")
    o, f = means["ours"], means["official"]
    print(f"\nours / official: epoch time {o[0] / f[0]:.2f}x, whole run {o[1] / f[1]:.2f}x; "
          f"mAP50 {o[2] - f[2]:+.3f}, mAP50-95 {o[3] - f[3]:+.3f} (differences of the means)")
    print(f"runs and logs: {work}")


if __name__ == "__main__":
    main()
