"""Run bookkeeping of compare.py: a run's log capture and epoch clock, its result file, what a failed run raised,
and the job's options file that `compare.py --resume` reads back.

A job folder holds opt.yaml (the job's options, written when it starts) and one folder per run,
<model>_seed<k>/, which gets result.json once the run is trained and validated. --resume reuses a run with a
readable result.json and its weights; any other run folder is stale and is deleted before the run starts again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import yaml

from utils.compare.results import FailedRun, ModelResult, SeedResult
from utils.errors import UserError
from utils.files import atomic_write
from utils.log import LOGGER

__all__ = ["output_to", "RunRecord", "RESULT_FILE", "OPTIONS_FILE", "run_name", "save_result",
           "load_result", "fresh_run_dir", "failed_run", "save_options", "load_options", "take_job_options",
           "resume_job_dir", "failure_summary"]

RESULT_FILE = "result.json"
OPTIONS_FILE = "opt.yaml"
_FORMAT = 1  # result.json layout version
_NOT_SAVED = ("resume", "nc")  # options of one attempt, not of the job


@contextlib.contextmanager
def output_to(log_file: Path):
    """Send stdout, stderr (progress bars) and the project's log to `log_file` for the duration."""
    streams = [(h, h.stream) for h in LOGGER.handlers if isinstance(h, logging.StreamHandler)]
    with open(log_file, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        for h, _ in streams:
            h.setStream(f)
        try:
            yield
        finally:
            for h, s in streams:
                h.setStream(s)


def run_name(model: str, seed: int) -> str:
    return f"{model}_seed{seed}"


@dataclass(frozen=True)
class RunRecord:
    """What result.json holds: the run's validation figures and its model's size."""

    model: str
    cfg: str
    params: int
    gflops: float
    result: SeedResult


def save_result(rec: RunRecord) -> Path:
    """Write result.json into the run's folder (the last step of a finished run)."""
    res = {**asdict(rec.result), "run_dir": rec.result.run_dir.name}  # relative: the job folder may move
    data = dict(format=_FORMAT, model=rec.model, cfg=rec.cfg, params=rec.params, gflops=rec.gflops, result=res)
    path = rec.result.run_dir / RESULT_FILE
    return atomic_write(path, lambda f: f.write(json.dumps(data, indent=1).encode("utf-8")))  # never half-written


def load_result(run_dir: Path, model: str, seed: int) -> RunRecord | None:
    """The finished run in `run_dir`, or None when it has no usable result.json or weights (re-run it)."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        res = SeedResult(**{**data["result"], "run_dir": Path(run_dir)})
        rec = RunRecord(data["model"], data["cfg"], int(data["params"]), float(data["gflops"]), res)
        ok = data["format"] == _FORMAT and rec.model == model and res.seed == seed
    except (ValueError, KeyError, TypeError) as e:
        LOGGER.warning(f"WARNING: {path} is unreadable ({e}); the run starts again")
        return None
    if not ok:
        LOGGER.warning(f"WARNING: {path} is not the result of {run_name(model, seed)}; the run starts again")
        return None
    if not (Path(run_dir) / "weights" / "best.pt").is_file():
        LOGGER.warning(f"WARNING: {run_dir} has a result but no weights/best.pt; the run starts again")
        return None
    return rec


def fresh_run_dir(run_dir: Path) -> Path:
    """An empty run folder: whatever an unfinished earlier attempt left there is deleted."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


def failed_run(exc: Exception, seed: int, log: Path) -> FailedRun:
    """Record what a run raised; the traceback goes to the end of its log."""
    with contextlib.suppress(OSError), open(log, "a", encoding="utf-8") as f:
        f.write("\ncompare.py: this run failed\n" + "".join(traceback.format_exception(exc)))
    message = " ".join(str(exc).split())  # one line, for the CSV and the report
    return FailedRun(seed, type(exc).__name__, message[:1000], Path(log))


def save_options(opt, save_dir: Path) -> Path:
    """opt.yaml: the job's options, so that --resume runs the rest of the job exactly as it started."""
    data = {k: v for k, v in vars(opt).items() if k not in _NOT_SAVED}
    path = Path(save_dir) / OPTIONS_FILE
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_options(job_dir: Path, defaults: dict) -> dict:
    """The options in `job_dir`/opt.yaml, each of its default's type (`defaults`: option -> default); a missing
    file, YAML that is not plain data, a key compare.py does not know or a value of the wrong type is an error
    naming it."""
    path = Path(job_dir) / OPTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume {job_dir}: no {OPTIONS_FILE} there; give the folder of a compare.py job "
                                "(runs/compare/expN) started by this version")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:  # a !!python tag or broken YAML: refused, never run
        raise UserError(f"{path}: not plain YAML: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of options, got {type(data).__name__}")
    unknown = sorted(set(data) - set(defaults))
    if unknown:
        raise UserError(f"{path}: unknown options {unknown}; known: {sorted(defaults)}")
    for k, v in data.items():
        want = _option_type(k, defaults[k])
        if not _is_option(v, want):
            raise UserError(f"{path}: {k}: {v!r} is not {want}")
    return data


def _option_type(key: str, default) -> str:
    if key == "cfgs":
        return "a list of model configs"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(type(default),
                                                                                             "of its default's type")


def _is_option(v, want: str) -> bool:
    if want == "a list of model configs":
        return isinstance(v, list) and all(isinstance(x, str) and x for x in v)
    if want == "true or false":
        return isinstance(v, bool)
    if want == "an integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if want == "a number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if want == "a string":
        return isinstance(v, str)
    return True


def resume_job_dir(resume: str | bool, project: str | Path) -> Path:
    """The job folder of --resume PATH, or of a bare --resume the latest job under `project` with opt.yaml."""
    if resume is True or resume == "":
        jobs = list(Path(project).glob(f"*/{OPTIONS_FILE}"))
        if not jobs:
            raise FileNotFoundError(f"--resume: no compare.py job (a folder with {OPTIONS_FILE}) in {project}")
        return max(jobs, key=os.path.getmtime).parent
    job = Path(resume)
    if not job.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such folder; give a job folder such as runs/compare/exp2")
    return job


def take_job_options(opt, job: Path, defaults: dict) -> None:
    """Replace opt's options with the job's (opt.yaml). An option given with --resume that differs from its
    default (`defaults`) is a ValueError: the rest of a job runs as it started."""
    given = {k: v for k, v in vars(opt).items()
             if k != "resume" and v != defaults.get(k) and not (k == "project" and opt.resume is True)}
    if given:
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())
        raise UserError(f"--resume {job} runs the job with the options in {Path(job) / OPTIONS_FILE}; drop {flags}")
    for k, v in load_options(job, {k: v for k, v in defaults.items() if k != "resume"}).items():
        setattr(opt, k, v)


def failure_summary(models: Sequence[ModelResult], save_dir: Path) -> str:
    """One line on the failed runs ('' when none): how many, which, where the report is, how to finish."""
    failed = [f"{m.name} seed {f.seed} ({f.error_type})" for m in models for f in m.failures]
    if not failed:
        return ""
    total = sum(len(m.seeds) + len(m.failures) for m in models)
    return (f"{len(failed)} of {total} runs failed: {', '.join(failed)}; report of the finished runs in "
            f"{Path(save_dir) / 'report.md'}; finish with: python compare.py --resume {save_dir}")
