"""benchmarks/train_base.py killed during its second family: the first family's row is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("train_base")


def test_a_finished_family_is_in_the_results_before_the_next_one_trains(
    bench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results file was written once, after every family: a kill in the second left none."""
    train = bench.train_until_converged
    families: list[str] = []

    def killed_in_the_second(model, *args, **kwargs):
        families.append(type(model).__name__)
        if len(families) == 2:
            raise KeyboardInterrupt
        return train(model, *args, **kwargs)

    monkeypatch.setattr(bench, "train_until_converged", killed_in_the_second)
    args = ["--families", "retinanet,fasterrcnn", "--workdir", str(tmp_path / "w"), "--results", str(tmp_path / "r")]
    args += ["--train", "4", "--val", "4", "--size", "64", "--steps", "2", "--eval-every", "1", "--fpn-channels", "16"]
    args += ["--cooldown", "0", "--cycle-steps", "0", "--batch-size", "2"]
    with pytest.raises(KeyboardInterrupt):
        bench.main(args)
    report = json.loads((tmp_path / "r" / "train_base.json").read_text())
    assert [r["family"] for r in report["results"]] == ["retinanet"] and report["complete"] is False
    md = (tmp_path / "r" / "train_base.md").read_text()
    assert "| retinanet |" in md and "**partial**" in md
