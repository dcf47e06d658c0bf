"""The estimator and the cost model give the numbers recorded before the family/lowering reshape.

``tests/data/estimate_fingerprint.json`` was written by ``benchmarks/estimate_fingerprint.py
--write`` before the lowering was reorganised; any change of a number (beyond float rounding,
1e-9 relative) is a change of behaviour and fails here. Rewrite the file only for a change that
is meant to move estimates, and say so in the commit.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "estimate_fingerprint", ROOT / "benchmarks" / "estimate_fingerprint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} != recorded {b}"
    else:
        assert a == b, f"{where}: {a!r} != recorded {b!r}"


def test_estimates_and_costs_are_unchanged() -> None:
    script = _script()
    recorded = json.loads(script.FILE.read_text())
    now = json.loads(json.dumps(script.fingerprint()))
    _close(now, recorded, "fingerprint")
    assert len(recorded["estimates"]["fasterrcnn"]) == 31 and len(recorded["costs"]) >= 80
