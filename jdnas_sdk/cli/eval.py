"""``jdnas eval``: COCO mAP of a detector file on a dataset split."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import JdnasError
from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``eval``."""
    ev = verbs.add_parser(
        "eval",
        formatter_class=common.FMT,
        help="COCO mAP of a detector file on a dataset",
        description="COCO mAP (pycocotools: AP, AP50, AP75, by object size) of a detector file on one split of a "
        "COCO-format dataset; the test split by default, the images that report final numbers.",
        epilog="example:\n  jdnas eval --model student.pt --data data/shapes --json metrics.json",
        parents=[common.verbosity(top=False), common.model(), common.data()],
    )
    ev.add_argument(
        "--split",
        default="test",
        help="split to evaluate on: test (the final numbers), select, val, train; a folder with only val gives "
        "select / test as that half of val, as compress cuts it",
    )
    ev.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._io import atomic_write_json
    from ..data import load_any_split
    from ..detectors import load_detector
    from ..evaluate import evaluate

    common.check_outputs(json=args.json)
    if args.batch_size < 1:
        raise JdnasError(f"--batch-size must be at least 1 image, got {args.batch_size}")
    model = load_detector(args.model)
    data = load_any_split(args.data, args.split)
    result = evaluate(model, data, batch_size=args.batch_size, progress=not args.quiet)
    print(f"{args.model} on {args.data} [{args.split}, {result.images} images]: {result.summary()}")
    if args.json is not None:
        atomic_write_json(args.json, result.to_dict())
        print(f"metrics written to {args.json}")
    return 0
