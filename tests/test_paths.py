"""Run folders: numbered past existing ones, and claimed atomically, so processes started at once never share one."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from utils.paths import increment_path

ROOT = Path(__file__).resolve().parent.parent


def test_numbering(tmp_path):
    assert [increment_path(tmp_path / "exp").name for _ in range(3)] == ["exp", "exp2", "exp3"]
    assert all((tmp_path / n).is_dir() for n in ("exp", "exp2", "exp3"))  # claimed even without mkdir
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"
    assert increment_path(tmp_path / "exp2").name == "exp4"  # trailing digits are the counter
    assert increment_path(tmp_path / "deep" / "er" / "run").is_dir()
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert increment_path(tmp_path / "a.jpg").name == "a2.jpg" and not (tmp_path / "a2.jpg").exists()  # a file path


def test_processes_at_once_get_distinct_folders(tmp_path):
    """12 processes ask for project/exp at the same instant, 3 times each: 36 distinct folders exp..exp36. (Checking
    that a folder exists and then creating it with exist_ok=True gave 4 processes the same expN 33 times in 150.)"""
    start = time.time() + 3.0
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from utils.paths import increment_path\n"
            f"time.sleep(max(0.0, {start} - time.time()))\n"
            f"for _ in range(3): print(increment_path({str(tmp_path / 'exp')!r}).name, flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(12)]
    names = [line for p in procs for line in p.communicate(timeout=120)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert len(names) == 36 and len(set(names)) == 36, sorted(names)
    assert set(names) == {"exp"} | {f"exp{n}" for n in range(2, 37)}
