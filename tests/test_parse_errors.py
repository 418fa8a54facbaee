"""parse_model's errors name the YAML row they come from."""

from __future__ import annotations

import pytest

from models.config import load_model_config
from models.yolo import Model
from utils.errors import UserError


def _cfg(edit):
    d = load_model_config("yolov5n.yaml")
    edit(d)
    return d


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["head"].__setitem__(2, [[-1, 60], 1, "Concat", [1]]),
     r"model YAML layer 12 \[\[-1, 60\], 1, 'Concat', \[1\]\]: from index 60 is out of range; valid: -1 or a "
     r"layer index 0..11"),
    (lambda d: d["backbone"].__setitem__(0, [-2, 1, "Conv", [64, 6, 2, 2]]),
     r"model YAML layer 0 .*: from index -2 is out of range; valid: -1 \(the previous layer\)"),
    (lambda d: d["backbone"].__setitem__(1, [-1, 1, "Conv", [128, 3, 2, 1, 1, 1, True, 7, 8, 9]]),
     r"model YAML layer 1 \[-1, 1, 'Conv', .*\]: TypeError: .*positional argument"),
    (lambda d: d["head"].insert(4, [-1, 1, "BiLevelRoutingAttention", [7, 8, None, None, 4, 4, None,
                                                                      "identity", 99]]),
     r"model YAML layer 14 .*: topk must be in 1..n_win\^2 = 49 regions, got topk=99"),
])
def test_errors_name_the_row(edit, message):
    with pytest.raises(UserError, match=message):
        Model(_cfg(edit), verbose=False)
