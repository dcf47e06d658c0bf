"""benchmarks/gpu_check.py where there is no CUDA device: it runs nothing and says so plainly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: run the check itself")
def test_gpu_check_refuses_without_cuda(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 2
    assert "no CUDA device here" in run.stderr and "nothing was run" in run.stderr
    assert not list(tmp_path.iterdir())  # no results written
