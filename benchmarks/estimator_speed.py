"""Estimates per second of the search's hot path, ``Estimator.total_ms``, on archs it has not seen.

An R50-FPN Faster R-CNN at 800x1333 on the modelled ``v100-trt`` table (its misses are modelled,
so any machine runs it); the op cache is warmed on 300 archs first, then every timed arch is new
to the estimator (new blocks and FPN widths are lowered and summed as the search would meet
them). Reports the first round (the most misses) and the best of ``--repeats`` rounds.

    PYTHONPATH=$PWD python benchmarks/estimator_speed.py
"""

from __future__ import annotations

import argparse
import random
import time
import warnings

from jdnas_sdk import DetectorSpec, SearchSpace, standard_arch
from jdnas_sdk.latency import Estimator, load_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", type=int, default=4000, help="new archs per round")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--students",
        action="store_true",
        help="whole students of the detector-level space (heads and input size varied), not backbones",
    )
    args = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = load_table("v100-trt")
    spec = DetectorSpec(family="fasterrcnn", backbone="resnet50", num_classes=91)
    space = SearchSpace(standard_arch("resnet50"), spec=spec if args.students else None)
    sample = space.sample_student if args.students else space.sample
    estimator = Estimator(table, spec, (800, 1333), save=False)
    for seed in range(300):
        estimator.total_ms(sample(seed))
    rates = []
    for r in range(args.repeats):
        archs = [sample(random.Random(10**6 + r * args.archs + i)) for i in range(args.archs)]
        start = time.perf_counter()
        for arch in archs:
            estimator.total_ms(arch)
        rates.append(len(archs) / (time.perf_counter() - start))
    print(
        f"{rates[0]:.0f} estimates/s on the first {args.archs} new archs (most blocks and FPN widths new), "
        f"best round {max(rates):.0f}/s ({args.repeats} x {args.archs}; R50-FPN Faster R-CNN 800x1333"
        f"{'; whole students' if args.students else ''})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
