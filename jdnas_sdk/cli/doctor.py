"""``jdnas doctor``: what this machine can measure (CPU, GPU, CUDA, TensorRT, ONNX Runtime) and,
per shipped target, whether it can be profiled here or only modelled, in one screen."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``doctor``."""
    doctor = verbs.add_parser(
        "doctor",
        formatter_class=common.FMT,
        help="what this machine can measure, before profiling new hardware",
        description="What this machine can measure before you profile it: CPU, GPU, CUDA, ONNX Runtime and "
        "TensorRT, which targets it can time (and the table each would use), and what is missing with how to "
        "install it.",
        epilog="examples:\n  jdnas doctor\n  jdnas doctor --json > doctor.json",
        parents=[common.verbosity(top=False)],
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    doctor.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..doctor import doctor, format_report

    report = doctor()
    print(json.dumps(dataclasses.asdict(report), indent=1, default=str) if args.json else format_report(report))
    return 0
