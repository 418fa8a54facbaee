"""ONNX Runtime's operator profile of exported models, for benchmarks/deploy_latency.py's `--profile`: where the
kernel time goes, by operator type, in the plug-in layers' nodes (/model.{i}/...) and in the layout changes ONNX
Runtime inserts around them. Each node is counted at its fastest call, the estimate least disturbed by other work
on a shared machine."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

__all__ = ["add_kernel_overheads", "node_minima", "print_profile", "profile_ort", "ratio"]


def ratio(x: float, b: float) -> float:
    """The overhead of x over b (x / b - 1); nan for a zero b."""
    return x / b - 1 if b else float("nan")


def node_minima(events: list[dict], warmup: int) -> dict[str, tuple[str, float]]:
    """ONNX Runtime profile events -> node name -> (operator type, its shortest kernel µs over the calls after
    the first `warmup`). On a shared machine a preempted kernel only ever takes longer, so the per-node minimum
    is the least disturbed estimate of what each node costs."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[warmup:]
    best: dict[str, tuple[str, float]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if not any(t0 <= e["ts"] <= t1 for t0, t1 in runs):
            continue
        node = name[: -len("_kernel_time")]
        op, us = e.get("args", {}).get("op_name", "?"), float(e["dur"])
        if node not in best or us < best[node][1]:
            best[node] = (op, us)
    return best


def profile_ort(models: dict[str, tuple[Path, list[int]]], threads: int, runs: int, out_dir: Path,
                level: str = "all", warmup: int = 2) -> dict[str, dict]:
    """ONNX Runtime's profile of every model, the calls interleaved (order rotated each round) like the timings.

    models: name -> (ONNX file, plug-in layer indices). Returns name -> kernel µs per call, each node counted at
    its shortest time over the `runs` profiled calls (`node_minima`): 'total', 'plugin' (the nodes of the
    plug-in layers, /model.{i}/...), 'layout' (the layout changes ONNX Runtime inserts itself: ReorderInput /
    ReorderOutput of its NCHWc convolutions, and Transposes outside any layer), 'ops' and 'plugin_ops' (by
    operator type), 'nodes' (the counts), 'file' (the JSON trace).
    """
    from utils.deploy.runners import OrtRunner

    out_dir.mkdir(parents=True, exist_ok=True)
    sess = {n: OrtRunner(f, threads, level=level, profile=out_dir / f.stem) for n, (f, _) in models.items()}
    xs = {n: r.prepare(torch.rand(1, 3, *r.session.get_inputs()[0].shape[2:])) for n, r in sess.items()}
    names = list(sess)
    for r in range(warmup + runs):
        for k in range(len(names)):
            n = names[(r + k) % len(names)]
            sess[n](xs[n])
    out = {}
    for n, r in sess.items():
        trace = Path(r.end_profiling())
        nodes = node_minima(json.loads(trace.read_text()), warmup)
        layers = models[n][1]
        res = dict(file=str(trace), total=0.0, plugin=0.0, layout=0.0, ops=defaultdict(float),
                   plugin_ops=defaultdict(float), nodes=len(nodes), plugin_nodes=0)
        for node, (op, us) in nodes.items():
            res["total"] += us
            res["ops"][op] += us
            if any(node.startswith(f"/model.{i}/") for i in layers):
                res["plugin"] += us
                res["plugin_ops"][op] += us
                res["plugin_nodes"] += 1
            elif not node.startswith("/model."):
                res["layout"] += us
        out[n] = res
    return out


def add_kernel_overheads(rows: list[dict], prof: dict) -> None:
    """ORT's kernel ms per call from the profile (per-node minima) and its overhead against the baseline."""
    if not prof or rows[0]["model"] not in prof:
        return
    base = prof[rows[0]["model"]]["total"]
    for r in rows:
        if r["model"] in prof:
            r["ort_kernels_ms"] = round(prof[r["model"]]["total"] / 1000, 3)
            r["ort_kernels_over"] = round(ratio(prof[r["model"]]["total"], base), 4)
            r["ort_kernels_over_per_gf"] = (round(r["ort_kernels_over"] / r["gflops_over"], 3)
                                            if r["gflops_over"] > 0 and r is not rows[0] else "")


def print_profile(names: list[str], files: dict, layers: dict, threads: int, runs: int, out_dir: Path) -> dict:
    """Per model: ORT kernel time per call (per-node minima), the plug-in layers' part and their top operators,
    the layout changes ORT inserted, and the operator types that grew most against the baseline."""
    todo = {n: (files[n]["onnx"], layers[n]) for n in names if isinstance(files[n].get("onnx"), Path)}
    if not todo:
        return {}
    prof = profile_ort(todo, threads, runs, out_dir)
    print(f"\nONNX Runtime profile: kernel ms per call, each node at its fastest of {runs} interleaved calls, "
          f"{threads} thread(s); traces in {out_dir}\n")
    base = prof.get(names[0])
    for n, p in prof.items():
        ms = lambda us: f"{us / 1000:.2f}"  # noqa: E731
        top = ", ".join(f"{op} {ms(us)}" for op, us in sorted(p["plugin_ops"].items(), key=lambda kv: -kv[1])[:8])
        line = f"- {n}: kernels {ms(p['total'])} ms ({p['nodes']} nodes)"
        if base and n != names[0]:
            line += f", {100 * ratio(p['total'], base['total']):+.1f}% vs baseline"
        if layers[n]:
            line += (f"; plug-in layers {layers[n]}: {ms(p['plugin'])} ms in {p['plugin_nodes']} nodes "
                     f"(= {100 * p['plugin'] / base['total']:.1f}% of the baseline's kernels), by operator: {top}")
        line += f"; ORT layout changes {ms(p['layout'])} ms"
        if base and n != names[0]:
            line += f" (baseline {ms(base['layout'])})"
            grew = sorted(((op, us - base["ops"].get(op, 0.0)) for op, us in p["ops"].items()), key=lambda kv: -kv[1])
            line += "; growth by operator vs baseline (ms): " + ", ".join(f"{op} {d / 1000:+.2f}" for op, d in grew[:6])
        print(line)
    return prof
