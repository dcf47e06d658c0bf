"""Estimates per second of the search's hot path, ``Estimator.total_ms``, on archs it has not seen.

An R50-FPN Faster R-CNN at 800x1333 on the modelled ``v100-trt`` table (its misses are modelled,
so any machine runs it); the op cache is warmed on 300 archs first, then every timed arch is new
to the estimator (new blocks and FPN widths are lowered and summed as the search would meet
them). Reports the first round (the most misses) and the best of ``--repeats`` rounds, for backbones
(``SearchSpace(base)``) and for whole students (heads and input size varied too: issue 12's space).

    python benchmarks/estimator_speed.py                       # both kinds, 3 rounds of 2,000
    python benchmarks/estimator_speed.py --kinds students --archs 500 --repeats 2 --results /tmp/e

Writes ``RESULTS/estimator_speed.{json,md}`` with the machine it ran on. Run it alone: it times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time
import warnings
from pathlib import Path
from typing import Any

from jdnas_sdk import DetectorSpec, SearchSpace, standard_arch
from jdnas_sdk._io import atomic_write_json, atomic_write_text
from jdnas_sdk.latency import Estimator, load_table
from jdnas_sdk.machine import command_line, machine_info

HERE = Path(__file__).resolve().parent
KINDS = {
    "backbones": "backbones (`SearchSpace(base)`)",
    "students": "whole students (`SearchSpace(base, spec=spec)`: heads and input size varied)",
}
GOAL = 10_000  # estimates/s, issue 12


def rates(kind: str, archs: int, repeats: int) -> list[float]:
    """Estimates/s of each round of ``archs`` candidates new to the estimator, after 300 warm-up ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = load_table("v100-trt")
    spec = DetectorSpec(family="fasterrcnn", backbone="resnet50", num_classes=91)
    space = SearchSpace(standard_arch("resnet50"), spec=spec if kind == "students" else None)
    sample = space.sample_student if kind == "students" else space.sample
    estimator = Estimator(table, spec, (800, 1333), save=False)
    for seed in range(300):
        estimator.total_ms(sample(seed))
    out = []
    for r in range(repeats):
        candidates = [sample(random.Random(10**6 + r * archs + i)) for i in range(archs)]
        start = time.perf_counter()
        for candidate in candidates:
            estimator.total_ms(candidate)
        out.append(len(candidates) / (time.perf_counter() - start))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", type=int, default=2000, help="new candidates per round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kinds", nargs="+", choices=tuple(KINDS), default=list(KINDS))
    p.add_argument("--results", type=Path, default=HERE / "results", help="where results go")
    args = p.parse_args(argv)
    if args.archs < 1 or args.repeats < 1:
        p.error("--archs and --repeats must be >= 1")
    began = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for kind in args.kinds:
        measured = rates(kind, args.archs, args.repeats)
        rows.append({"kind": kind, "rates_per_s": measured, "first_round": measured[0], "best_round": max(measured)})
        print(f"{kind}: {measured[0]:.0f} estimates/s on the first round, best {max(measured):.0f}/s")
    report = {
        "date": began,
        "machine": machine_info(),
        "command": command_line("benchmarks/estimator_speed.py", argv),
        "detector": "fasterrcnn resnet50 FPN256, 800x1333, table v100-trt (modelled: its misses are modelled too)",
        "archs_per_round": args.archs,
        "repeats": args.repeats,
        "goal_per_s": GOAL,
        "results": rows,
    }
    atomic_write_json(args.results / "estimator_speed.json", report)
    atomic_write_text(args.results / "estimator_speed.md", markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Estimator speed on the detector-level space",
        "",
        f"Run {report['date']} on {m['cpu']} ({m['cores']} cores); `{report['command']}`. R50-FPN Faster R-CNN at "
        f"800x1333 on the modelled `v100-trt` table, `Estimator.total_ms` on {report['archs_per_round']:,} "
        f"candidates new to the estimator per round, {report['repeats']} rounds, after 300 warm-up candidates.",
        "",
        "| candidates | first round (estimates/s) | best round (estimates/s) |",
        "|---|---|---|",
        *(f"| {KINDS[r['kind']]} | {r['first_round']:.0f} | {r['best_round']:.0f} |" for r in report["results"]),
        "",
        f"Goal: >= {report['goal_per_s']:,} estimates/s.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
