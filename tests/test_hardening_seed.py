"""Same seed, same weights, from scratch too (issue 16, item 8): initial build, pool growth and
morphism give identical weights in two separate processes (torch seeds each one from the OS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import hashlib, sys
import torch
sys.path.insert(0, {tests!r})
from conftest import tiny_spec
from jdnas_sdk import build_detector, standard_arch
from jdnas_sdk._seed import seeded
from jdnas_sdk.morph import morph
from jdnas_sdk.morph.actions import AddBlock, SetStageWidth
from jdnas_sdk.teachers import TeacherPool

def digest(model):
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode()); h.update(value.detach().numpy().tobytes())
    return h.hexdigest()[:16]

seed = int(sys.argv[1])
torch.rand(int(sys.argv[2]))          # each process's own earlier draws must not matter
with seeded(seed):
    base = build_detector(tiny_spec(), standard_arch("resnet18"))
pool = TeacherPool.from_base(base, widths=(1.0, 1.25), depth_delta=1, seed=seed)
student = morph(base, [AddBlock(stage=2, index=0), SetStageWidth(stage=3, width=200)])
print(digest(base), digest(pool.model), digest(student))
"""


def _digests(seed: int, noise: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=str(ROOT / "tests")), str(seed), str(noise)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def test_the_same_seed_gives_the_same_weights_in_two_processes() -> None:
    first, second, other = _digests(0, 3), _digests(0, 17), _digests(1, 3)
    assert first == second
    assert other[0] != first[0] and other[1] != first[1]
