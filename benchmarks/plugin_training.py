"""Which optimisation settings switch the Residual-wrapped plug-ins on within a fine-tune: plug-in share and
mAP50-95 per setting, seed and config, with the baseline trained on the same seeds (paired runs).

    python -m benchmarks.plugin_training --plugin-lrs 0 0.001 0.003 0.01 --seeds 0 1 2            # main job's
    python -m benchmarks.plugin_training --cfgs yolov5n_biformer.yaml --plugin-lrs 0 0.003 --epochs 20

Each run is `train.py --weights yolov5n.pt --cfg CFG --data coco128.yaml --epochs E --imgsz 320 --batch-size 16
--seed S --noplots` with the hyp file's `plugin_lr` set to the setting (0: the plug-ins train with the recipe's
SGD, as before). A plug-in's share is rms(gamma * block(x)) / rms(x) of the final best.pt on 32 val images
(models/attention/share.py); "min share" is the smallest over the runs' plug-in layers. "paired delta" is the mean
over seeds of (run's mAP50-95 - baseline's mAP50-95 with the same seed). Runs go `--jobs` at a time, each with
`--threads` torch threads; every finished run is appended to `--out` (a CSV) and skipped when the script is run
again with the same file, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from utils.hyp import load_hyp

ROOT = Path(__file__).resolve().parent.parent

FIELDS = ["cfg", "setting", "plugin_lr", "seed", "epochs", "map50", "map", "shares", "min_share", "max_share",
          "share_curve", "gamma_curve", "status"]


def parse_setting(text: str) -> dict:
    """'default' -> {}; 'plugin_lr=0.001,plugin_weight_decay=0.05' -> {'plugin_lr': 0.001, ...} (hyp keys)."""
    if text in ("", "default"):
        return {}
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            raise SystemExit(f"--settings {text!r}: each part must be hyp_key=value, e.g. plugin_lr=0.001")
        out[k.strip()] = float(v)
    return out


def _record_epochs(curve: list) -> None:
    """Make train's per-epoch plug-in logging also append (max share, mean |gamma| per layer) to `curve`."""
    from utils.training import loggers

    original = loggers.TrainLoggers.log_plugins

    def log_plugins(self, shares, model, *args, **kwargs):
        gates = loggers.gate_stats(model)
        curve.append((max(shares.values()) if shares else 0.0, {k: v[0] for k, v in gates.items()}))
        return original(self, shares, model, *args, **kwargs)

    loggers.TrainLoggers.log_plugins = log_plugins


def _one(job: dict) -> dict:
    """Train one (cfg, setting, seed) in this worker process; a row of FIELDS."""
    import torch

    torch.set_num_threads(job["threads"])
    import train

    hyp = {**load_hyp(job["hyp"]).to_dict(), "plugin_lr": job["plugin_lr"], **parse_setting(job["setting"])}
    row = {k: job[k] for k in ("cfg", "setting", "seed", "epochs")} | {"plugin_lr": hyp["plugin_lr"]}
    curve: list = []
    _record_epochs(curve)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = train.run(weights="yolov5n.pt", cfg=job["cfg"], data=job["data"], hyp=hyp, epochs=job["epochs"],
                            imgsz=job["imgsz"], batch_size=16, seed=job["seed"], workers=job["workers"],
                            project=tmp, name="run", noplots=True)
        except FloatingPointError as e:  # the non-finite loss train.py stops on
            return {**row, "status": f"failed: {e}"[:200]}
    shares = res.plugin_share
    return {**row, "map50": f"{res.results[2]:.4f}", "map": f"{res.results[3]:.4f}",
            "shares": " ".join(f"{k}={v:.5f}" for k, v in shares.items()),
            "min_share": f"{min(shares.values()):.5f}" if shares else "",
            "max_share": f"{max(shares.values()):.5f}" if shares else "",
            "share_curve": " ".join(f"{m:.4f}" for m, _ in curve),
            "gamma_curve": " ".join("/".join(f"{g:.4f}" for g in gates.values()) for _, gates in curve), "status": "ok"}


def _key(r: dict) -> tuple:
    return r["cfg"], r.get("setting") or f"plugin_lr={float(r['plugin_lr']):g}", int(r["seed"]), int(r["epochs"])


def _done(out: Path) -> dict[tuple, dict]:
    """Finished rows of `out` by (cfg, setting, seed, epochs); files written before the `setting` column name
    their setting by plugin_lr."""
    if not out.is_file():
        return {}
    with open(out, newline="") as f:
        return {_key(r): r for r in csv.DictReader(f)}


def _table(rows: list[dict], baseline: str) -> list[str]:
    """One line per (config, setting, epochs): mAP50-95 per seed, its mean and spread against the baseline's
    (same seeds), the paired delta, and the plug-in share at the end (lowest and highest layer)."""
    base = {(int(r["seed"]), int(r["epochs"])): float(r["map"]) for r in rows if r["cfg"] == baseline and r["map"]}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["cfg"] != baseline:
            groups.setdefault((r["cfg"], _key(r)[1], int(r["epochs"])), []).append(r)
    lines = ["| config | setting | epochs | seeds | mAP50-95 per seed | mean ± std | std / baseline's | paired delta | "
             "min share (mean; lowest) | max share (highest) | failed |", "|---" * 11 + "|"]
    bmaps = [base[k] for k in sorted(base)]
    bstd = statistics.stdev(bmaps) if len(bmaps) > 1 else None
    if bmaps:
        seeds = " / ".join(f"{v:.3f}" for v in bmaps)
        lines.append(f"| {baseline} | - | {rows[0]['epochs']} | {len(bmaps)} | {seeds} | {_ms(bmaps)} | 1 | - | - | - "
                     "| 0 |")
    for (cfg, setting, ep), rs in sorted(groups.items()):
        ok = sorted((r for r in rs if r["status"] == "ok"), key=lambda r: int(r["seed"]))
        maps = [float(r["map"]) for r in ok]
        deltas = [float(r["map"]) - base[(int(r["seed"]), ep)] for r in ok if (int(r["seed"]), ep) in base]
        mins = [float(r["min_share"]) for r in ok if r["min_share"]]
        maxs = [float(r.get("max_share") or r["min_share"]) for r in ok if r["min_share"]]
        share = f"{100 * statistics.mean(mins):.2g}%; {100 * min(mins):.2g}%" if mins else "-"
        top = f"{100 * max(maxs):.3g}%" if maxs else "-"
        delta = f"{statistics.mean(deltas):+.4f} (n={len(deltas)})" if deltas else "-"
        ratio = f"{statistics.stdev(maps) / bstd:.2f}" if bstd and len(maps) > 1 else "-"
        seeds = " / ".join(f"{v:.3f}" for v in maps)
        lines.append(f"| {cfg} | {setting} | {ep} | {len(ok)} | {seeds} | {_ms(maps)} | {ratio} | {delta} | {share} "
                     f"| {top} | {len(rs) - len(ok)} |")
    return lines


def _ms(v: list[float]) -> str:
    if not v:
        return "-"
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--cfgs", nargs="+", default=["yolov5n_biformer.yaml", "yolov5n_hilo.yaml", "yolov5n_slide.yaml"])
    p.add_argument("--baseline", default="yolov5n.yaml", help="trained once per seed ('' to skip)")
    p.add_argument("--plugin-lrs", nargs="+", type=float, default=[0.0, 0.001, 0.003, 0.01],
                   help="settings that differ in plugin_lr only (ignored with --settings)")
    p.add_argument("--settings", nargs="+", default=None,
                   help="hyp overrides per setting: 'default' or key=value[,key=value], e.g. plugin_weight_decay=0.05")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--data", default="coco128.yaml")
    p.add_argument("--hyp", default="hyp.scratch-low.yaml")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--workers", type=int, default=1, help="dataloader workers per run")
    p.add_argument("--out", default=str(ROOT / "runs" / "plugin_training.csv"))
    a = p.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    common = dict(epochs=a.epochs, imgsz=a.imgsz, data=a.data, hyp=a.hyp, threads=a.threads, workers=a.workers)
    settings = a.settings or [f"plugin_lr={lr:g}" for lr in a.plugin_lrs]
    for st in settings:
        parse_setting(st)  # a bad setting fails now, not in a worker
    plugin_lr = load_hyp(a.hyp).plugin_lr
    jobs = [dict(cfg=a.baseline, setting="default", plugin_lr=0.0, seed=s, **common)
            for s in a.seeds] if a.baseline else []
    # seed-major order, so that a slow spell of the machine spreads over the settings
    jobs += [dict(cfg=c, setting=st, plugin_lr=plugin_lr, seed=s, **common)
             for s in a.seeds for st in settings for c in a.cfgs]
    todo = [j for j in jobs if _key(j) not in done]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already in {out}", flush=True)
    new = not out.is_file()
    if not new and out.read_text().splitlines()[0].split(",") != FIELDS:
        raise SystemExit(f"{out} was written with other columns; give a new --out")
    with open(out, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        # not a multiprocessing.Pool: its daemonic workers may not start dataloader workers
        with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
            futures = {pool.submit(_one, j): j for j in todo}
            for fut in as_completed(futures):
                try:
                    row = fut.result()
                except Exception as e:  # noqa: BLE001  (one run's crash is its row; the sweep goes on)
                    j = futures[fut]
                    row = {k: j[k] for k in ("cfg", "setting", "seed", "epochs", "plugin_lr")}
                    row["status"] = f"failed: {type(e).__name__}: {e}"[:200]
                w.writerow(row)
                f.flush()
                print(row, flush=True)
    rows = [r for r in _done(out).values() if int(r["epochs"]) == a.epochs]
    print(f"{a.data}, {a.epochs} epochs at {a.imgsz}:")
    print("\n".join(_table(rows, a.baseline)))


if __name__ == "__main__":
    main()
