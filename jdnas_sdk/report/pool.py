"""The pool report: accuracy and estimated latency of a sweep of teachers sampled from a pool."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import JdnasError
from ..evaluate import evaluate
from ..latency import Estimator, load_table
from ..teachers import TeacherConfig, TeacherPool
from .markdown import code_cell

__all__ = ["PoolRow", "PoolReport", "pool_report"]


@dataclass(frozen=True)
class PoolRow:
    config: str
    arch: str
    params: int
    ap: float
    ap50: float
    latency_ms: float


@dataclass
class PoolReport:
    target: str
    modelled: bool
    input_size: tuple[int, int]
    rows: list[PoolRow] = field(default_factory=list)
    wall_s: float = 0.0
    split: str = "select"
    images: int = 0

    def to_markdown(self) -> str:
        label = "MODELLED latency (roofline, not measured)" if self.modelled else "latency from a measured table"
        lines = [
            f"# Teacher pool: {len(self.rows)} teachers",
            "",
            f"{label}, target `{self.target}`, input {self.input_size[0]}x{self.input_size[1]}; "
            f"COCO AP on the `{self.split}` split ({self.images} images) after BatchNorm recalibration, no training.",
            "",
            "| teacher | params (M) | AP | AP50 | est. latency (ms) | backbone |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| `{r.config}` | {r.params / 1e6:.2f} | {100 * r.ap:.1f} | {100 * r.ap50:.1f} | "
                f"{r.latency_ms:.2f} | {code_cell(r.arch)} |"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "modelled": self.modelled,
            "input_size": list(self.input_size),
            "split": self.split,
            "images": self.images,
            "wall_s": self.wall_s,
            "rows": [r.__dict__ for r in self.rows],
        }


def pool_report(
    pool: TeacherPool,
    *,
    val_data: Any,
    calibration: Any,
    target: str = "cpu-ort",
    configs: list[TeacherConfig] | None = None,
    count: int = 6,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    split: str = "select",
    progress: bool = False,
) -> PoolReport:
    """Sample ``configs`` (default: largest, base, smallest and ``count - 3`` random teachers),
    recalibrate each on ``calibration``, evaluate it on ``val_data`` (the dataset's ``split``, named
    in the report) and estimate its latency."""
    began = time.perf_counter()
    if configs is None:
        if count < 1:
            raise JdnasError(f"count must be at least 1 teacher (largest, base, smallest, then random), got {count}")
        rng = random.Random(seed)
        configs = list(dict.fromkeys([pool.largest(), pool.base_config(), pool.smallest()]))[:count]  # may coincide
        wanted = min(count, sum(1 for _ in pool.configs()))  # a small pool has fewer teachers than asked for
        while len(configs) < wanted:
            candidate = pool.random(rng)
            if candidate not in configs:
                configs.append(candidate)
    size = input_size or (pool.spec.min_size, pool.spec.min_size)
    table = load_table(target)
    estimator = Estimator(table, pool.spec, size)
    report = PoolReport(
        target=table.target, modelled=table.modelled, input_size=size, split=split, images=len(val_data)
    )
    for config in configs:
        teacher = pool.sample(config, calibration=calibration)
        metrics = evaluate(teacher, val_data, progress=progress)
        arch = pool.arch_of(config)
        report.rows.append(
            PoolRow(
                config=str(config),
                arch=str(arch),
                params=sum(p.numel() for p in teacher.parameters()),
                ap=metrics.ap,
                ap50=metrics.ap50,
                latency_ms=estimator.total_ms(arch),
            )
        )
    report.wall_s = time.perf_counter() - began
    return report
