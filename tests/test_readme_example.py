"""The README's "Adding your own attention module" example runs as written: its Python block, saved as a file and
run from a folder laid out as the checkout's root, registers the module, builds the config with the plug-in
behind Residual, counts its GFLOPs and runs a forward pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_adding_your_own_attention_module_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Adding your own attention module", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "Residual, [MyAttention, 4]" in code and "class MyAttention(nn.Module)" in code
    (tmp_path / "my_attention.py").write_text(code)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "my_attention.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "torch.Size([1, 5040, 85])"  # 3 * (40*32 + 20*16 + 10*8)
    assert "Residual" in out and "MyAttention" in out
    gflops = float(re.search(r"([\d.]+) GFLOPs at 640", out).group(1))
    assert gflops > 4.6  # yolov5n alone counts 4.5 at 640: the attention (SDPA included) is counted
