"""``jdnas data synth``: write a synthetic COCO-format dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import JdnasError
from . import common

__all__ = ["add_parser", "run_synth"]


def add_parser(verbs: Any) -> None:
    """Add ``data`` and its action ``synth``."""
    data = verbs.add_parser(
        "data",
        formatter_class=common.FMT,
        help="datasets: make a synthetic one",
        description="Datasets in COCO format: `synth` writes a synthetic one (no download) with train, select "
        "and test splits.",
        epilog="example:\n  jdnas data synth --out data/shapes --train 600 --select 100 --test 100 --size 256",
    )
    data_verbs = data.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    synth = data_verbs.add_parser(
        "synth",
        formatter_class=common.FMT,
        help="write a synthetic COCO-format dataset",
        parents=[common.verbosity(top=False), common.seed(), common.force()],
        description="Write a synthetic COCO-format shapes dataset (images + instances JSON), deterministic by seed.",
        epilog="example:\n  jdnas data synth --out data/shapes --train 600 --select 100 --test 100 --size 256",
    )
    synth.add_argument("--out", required=True, help="folder to write (images/, annotations/)")
    synth.add_argument("--train", type=int, default=600, help="number of training images")
    synth.add_argument(
        "--select",
        type=int,
        default=100,
        help="images of the select split (every choice of a search: ranking, early stopping)",
    )
    synth.add_argument("--test", type=int, default=100, help="images of the test split (the final numbers only)")
    synth.add_argument(
        "--val",
        type=int,
        default=0,
        help="images of a val split (the single held-out split of the layout before select/test)",
    )
    synth.add_argument("--size", type=int, default=256, help="image side in pixels")
    synth.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image file format")
    synth.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from ..data import SynthConfig, make_synthetic_dataset
    from ..data.synth import MARKER

    marker = Path(args.out) / MARKER
    if marker.is_file() and not args.force:  # an earlier synthetic dataset, maybe the one a workdir was run on
        made = marker.read_text(encoding="utf-8", errors="replace").strip()
        raise JdnasError(f"{args.out} holds a synthetic dataset ({made}); pass --force to replace it, or another --out")
    cfg = SynthConfig(size=args.size, image_format=args.format)
    root = make_synthetic_dataset(
        args.out,
        train=args.train,
        val=args.val,
        select=args.select,
        test=args.test,
        size=args.size,
        seed=args.seed,
        config=cfg,
        progress=not args.quiet,
    )
    counts = {"train": args.train, "select": args.select, "test": args.test, "val": args.val}
    held = ", ".join(f"{k}: {n} images" for k, n in counts.items() if n)
    print(f"dataset written to {root} ({held}, {args.size} px)")
    return 0
