"""compare.py --sweep: where the attention goes. From each plug-in config (a config whose neck holds
`[-1, 1, Residual, [Block, ...]]` rows) it derives variants:

- placement: the plug-in alone before the neck's C3 that feeds Detect at P3, at P4 or at P5 (the point the bundled
  configs use at P4 and P5: right after the concat), beside the published placement (the config itself);
- for Bi-Level Routing Attention, one setting at a time at the published placement: `topk` 2 and 8 (default 4) and
  `n_win` 5 and 8 (default 7; whether the window grid divides the feature map changes with it).

Each variant is a YAML written into the job's `sweep/` folder (run it by hand with `train.py --cfg`), named
`<config>-<what>` (yolov5n_biformer-p3, yolov5n_biformer-topk8), with its scale fixed (`scale:`), and compared like
any config. `sweep.json` in the job folder says what each variant varied, for the report's "Where the attention
goes" section.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from models.config import load_model_config
from utils.compare.options import model_name
from utils.errors import UserError

__all__ = ["Variant", "sweep_variants", "read_sweep", "SWEEP_FILE", "BRA_GRID"]

SWEEP_FILE = "sweep.json"
BRA_GRID = {"topk": (2, 8), "n_win": (5, 8)}  # one at a time, beside the defaults (topk 4, n_win 7)
_LEVELS = ("P3", "P4", "P5")


@dataclass(frozen=True)
class Variant:
    name: str  # the model's name in the report
    base: str  # the plug-in config it comes from
    varied: str  # 'placement', 'topk' or 'n_win'
    value: str  # 'P3', 'P4+P5 (published)', '8', ...
    cfg: str  # the config to build: the bundled name for the published one, else the written YAML's path


def _absolute(rows: list) -> list[list]:
    """Rows with `from` as a list of absolute layer indices (-1 the layer before)."""
    out = []
    for i, (f, n, m, args) in enumerate(rows):
        refs = f if isinstance(f, list) else [f]
        out.append([[i + r if r < 0 else r for r in refs], isinstance(f, list), n, m, copy.deepcopy(args)])
    return out


def _relative(rows: list[list]) -> list:
    """Back to YAML rows: a single reference to the layer just before is written -1."""
    out = []
    for j, (refs, was_list, n, m, args) in enumerate(rows):
        refs = [-1 if r == j - 1 and i == 0 else r for i, r in enumerate(refs)]  # [-1, 6] as YOLOv5 writes it
        out.append([refs if was_list or len(refs) > 1 else refs[0], n, m, args])
    return out


def _remove(rows: list[list], k: int) -> list[list]:
    """Drop layer k; whoever read it reads its input instead."""
    (src,) = rows[k][0]
    out = []
    for refs, *rest in rows[:k] + rows[k + 1:]:
        refs = [src if r == k else r for r in refs]
        out.append([[r - 1 if r > k else r for r in refs], *rest])
    return out


def _insert_after(rows: list[list], p: int, row: list[list]) -> list[list]:
    """A new layer reading layer p, read by every later layer that read p."""
    out = []
    for refs, *rest in rows:
        out.append([[r + 1 if r > p else r for r in refs], *rest])
    for later in out[p + 1:]:
        later[0] = [p + 1 if r == p else r for r in later[0]]
    return out[:p + 1] + [[[p], False, *copy.deepcopy(row)]] + out[p + 1:]


def _plugin_rows(rows: list[list]) -> list[int]:
    return [i for i, (_, _, _, m, args) in enumerate(rows) if m == "Residual" and isinstance(args, list) and args]


def _write(d: dict, backbone_len: int, rows: list[list], path: Path, note: str) -> None:
    rel = _relative(rows)
    top = {k: v for k, v in d.items() if k not in ("backbone", "head", "yaml_file", "depth_multiple",
                                                      "width_multiple")}
    text = [f"# {note}", yaml.safe_dump(top, sort_keys=False, default_flow_style=None).rstrip()]
    for key, part in (("backbone", rel[:backbone_len]), ("head", rel[backbone_len:])):
        text += [f"{key}:"] + [f"  - {yaml.safe_dump(r, default_flow_style=True).strip()}" for r in part]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")


def sweep_variants(cfgs: list[str], out_dir: Path) -> list[Variant]:
    """Every config of `cfgs` (the baseline first) as it is, followed, for each plug-in config, by its placement
    variants and (BRA) its topk / n_win variants, written as YAML files into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = []
    for cfg in cfgs:
        d = load_model_config(cfg)
        rows = _absolute(d["backbone"] + d["head"])
        nb = len(d["backbone"])
        plugins = _plugin_rows(rows)
        name = model_name(cfg)
        if not plugins:
            variants.append(Variant(name, name, "", "", cfg))
            continue
        if any(p < nb for p in plugins):
            raise UserError(f"--sweep: {cfg} has a plug-in in its backbone; --sweep moves plug-ins of the neck only")
        block = rows[plugins[0]][4][0]
        base = rows
        for k in sorted(plugins, reverse=True):
            base = _remove(base, k)
        detect = base[-1][0]  # Detect's inputs, P3 first
        at = {lvl: base[d_in][0][0] for lvl, d_in in zip(_LEVELS, detect)}  # the input of the C3 feeding Detect
        published = "+".join(lvl for lvl, d_in in zip(_LEVELS, rows[-1][0]) if rows[d_in][0][0] in plugins)
        variants.append(Variant(name, name, "placement", f"{published or 'as written'} (published)", cfg))
        src = rows[plugins[0]][1:]  # [was_list, n, m, args] of the published plug-in row
        for lvl, p in at.items():
            if lvl == published:
                continue
            v = f"{name}-{lvl.lower()}"
            path = out_dir / f"{v}.yaml"
            moved = _insert_after(base, p, src[1:])
            _write(d, nb, moved, path,
                   f"{model_name(cfg)} with its {block} at {lvl} alone (compare.py --sweep)")
            variants.append(Variant(v, name, "placement", lvl, str(path)))
        if block == "BiLevelRoutingAttention":
            args = rows[plugins[0]][4]
            if len(args) > 2 or (len(args) == 2 and not isinstance(args[1], dict)):
                continue  # positional settings: the grid would not know which is which
            kwargs = dict(args[1]) if len(args) == 2 else {}
            for key, values in BRA_GRID.items():
                for value in values:
                    if kwargs.get(key) == value:
                        continue
                    v = f"{name}-{key.replace('_', '')}{value}"
                    path = out_dir / f"{v}.yaml"
                    grid = copy.deepcopy(rows)
                    for k in plugins:
                        grid[k][4] = [block, {**kwargs, key: value}]
                    _write(d, nb, grid, path,
                           f"{model_name(cfg)} with {key} {value} (compare.py --sweep)")
                    variants.append(Variant(v, name, key, str(value), str(path)))
    (out_dir.parent / SWEEP_FILE).write_text(json.dumps([asdict(v) for v in variants], indent=1), encoding="utf-8")
    return variants


def read_sweep(job_dir: Path) -> list[Variant]:
    """The job's variants (sweep.json), or [] for a job without --sweep."""
    path = Path(job_dir) / SWEEP_FILE
    if not path.is_file():
        return []
    return [Variant(**v) for v in json.loads(path.read_text(encoding="utf-8"))]
