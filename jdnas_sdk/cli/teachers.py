"""``jdnas teachers train|report``: the elastic teacher pool."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..arch import BACKBONES, FAMILIES
from ..errors import JdnasError
from . import common

__all__ = ["add_parser", "run_report", "run_train"]


def add_parser(verbs: Any) -> None:
    """Add ``teachers`` and its actions ``train`` and ``report``."""
    te = verbs.add_parser(
        "teachers",
        formatter_class=common.FMT,
        help="the elastic teacher pool: train it, report on it",
        description="The elastic teacher pool that compress's dynamic distillation samples teachers from: trained "
        "once per base, reused by every search (jdnas compress --teacher pool trains one itself).",
        epilog="examples:\n  jdnas teachers train --base base.pt --data data/shapes --out pool.pt --steps 600\n"
        "  jdnas teachers report --pool pool.pt --data data/shapes --target cpu-ort",
    )
    te_verbs = te.add_subparsers(dest="teachers_verb", metavar="ACTION", required=True)
    tt = te_verbs.add_parser(
        "train",
        formatter_class=common.FMT,
        help="train an elastic teacher pool by progressive shrinking",
        description="Grow a trained detector into an elastic pool (deeper, wider; function-preserving) and train "
        "every teacher in it at once. Killed? Run the same command again: it resumes from OUT.ckpt.",
        epilog="example:\n  jdnas teachers train --base base.pt --data data/shapes --out pool.pt --steps 600",
        parents=[
            common.verbosity(top=False),
            common.data(),
            common.input_side("with --family: image side (256 when not given)"),
            common.seed(),
            common.force(),
        ],
    )
    tt.add_argument("--base", help="trained detector file the pool grows from (recommended)")
    tt.add_argument("--family", choices=sorted(FAMILIES), help="or: a family to build from scratch ...")
    tt.add_argument("--backbone", choices=BACKBONES, help="... with this backbone")
    tt.add_argument("--out", required=True, help="pool file to write")
    tt.add_argument("--split", default="train", help="split to train on")
    tt.add_argument("--steps", type=int, default=300, help="optimisation steps (each runs up to 3 teachers)")
    tt.add_argument("--batch-size", type=int, default=4, help="images per step")
    tt.add_argument("--lr", type=float, default=2e-4, help="AdamW peak learning rate")
    tt.add_argument("--widths", default="0.75,1,1.25", help="teacher width ratios per stage, relative to the base")
    tt.add_argument("--depth-delta", type=int, default=1, help="teachers' blocks per stage: base depth +- this")
    tt.add_argument("--phases", default="0.2,0.3,0.5", help="step fractions: largest only, + depth, + width")
    tt.add_argument("--inplace-kd", type=float, default=1.0, help="weight of smaller teachers imitating the largest")
    tt.add_argument("--fpn-channels", type=int, help="with --family: FPN width (256 when not given)")
    tt.add_argument("--checkpoint-every", type=int, default=20, help="steps between checkpoints")
    tt.set_defaults(func=run_train, input_size=None)  # None: not given (a --base file keeps its own shape)
    tr = te_verbs.add_parser(
        "report",
        formatter_class=common.FMT,
        help="mAP and estimated latency of sampled teachers",
        description="Sample teachers from a trained pool (BatchNorm recalibrated on the train split) and report "
        "each one's mAP on a split and estimated latency on a target, as Markdown and JSON.",
        epilog="example:\n  jdnas teachers report --pool pool.pt --data data/shapes --target cpu-ort --count 4",
        parents=[
            common.verbosity(top=False),
            common.data("dataset folder (train split recalibrates BatchNorm)"),
            common.target(help="latency table"),
            common.seed("seed of the random teachers"),
        ],
    )
    tr.add_argument("--pool", required=True, help="pool file")
    tr.add_argument(
        "--split",
        default="select",
        help="split the teachers are scored on: select (where choices are made), test, val; a folder with only val "
        "gives select / test as that half of val",
    )
    tr.add_argument("--count", type=int, default=6, help="teachers: largest, base, smallest, then random")
    tr.add_argument("--md", help="also write the Markdown report here")
    tr.add_argument("--json", help="also write the report as JSON here")
    tr.set_defaults(func=run_report)


def _given_base(args: argparse.Namespace) -> Any:
    """``--base FILE``'s detector (trainable), or ``None`` for ``--family/--backbone``."""
    from ..detectors import load_detector, thaw

    if not args.base:
        return None
    if args.family or args.backbone:
        raise JdnasError("give either --base FILE or --family/--backbone, not both")
    shape = {"--input-size": args.input_size, "--fpn-channels": args.fpn_channels}
    common.refuse_given(shape, f"shape a pool built with --family; {args.base} keeps its own")  # were dropped
    return thaw(load_detector(args.base))


def _base(args: argparse.Namespace, data: Any, given: Any) -> Any:
    """The detector the pool grows from: ``--base FILE`` (``given``) or a fresh ``--family/--backbone``."""
    from .._seed import seeded
    from ..arch import DetectorSpec
    from ..detectors import build_detector, spec_of

    if given is not None:
        data.check_compatible(spec_of(given))
        return given
    if args.family and args.backbone:
        side = 256 if args.input_size is None else args.input_size
        spec = DetectorSpec(
            family=args.family,
            backbone=args.backbone,
            num_classes=data.num_classes,
            min_size=side,
            max_size=side,
            fpn_channels=256 if args.fpn_channels is None else args.fpn_channels,
            anchor_sizes=common.anchor_sizes("auto", args.family, side),
            category_ids=data.category_ids,
            class_names=data.class_names,
        )
        with seeded(args.seed):  # same --seed, same pool, in any process
            return build_detector(spec)
    raise JdnasError("name the pool's base: --base FILE (a trained detector, recommended), or --family F --backbone B")


def run_train(args: argparse.Namespace) -> int:
    from .._lock import lock_output
    from .._stopwatch import Stopwatch
    from ..data import load_split
    from ..detectors import spec_of
    from ..families import get_family
    from ..preflight import check_output_space
    from ..teachers import ShrinkConfig, TeacherPool, train_pool_to_file
    from ..train import TrainConfig, checkpoint_path, wall_path

    common.check_outputs(out=args.out)  # a folder or an unwritable place: refused before training
    out = Path(args.out)
    ckpt = checkpoint_path(out)
    Stopwatch(wall_path(out))  # a killed run's time file, damaged: one line now, not after the image check
    if out.exists() and not ckpt.exists() and not args.force:
        raise JdnasError(f"{out} already exists; pass --force to train again and replace it, or choose another --out")
    if args.steps < 1:  # 0 would save the grown, untrained pool as if trained
        raise JdnasError(f"--steps must be at least 1 (the optimisation steps to train), got {args.steps}")
    widths = common.ratios(args.widths, "--widths")
    config = ShrinkConfig(  # its numbers checked here, before the data is read and the pool grown
        train=TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            optimizer="adamw",
            lr=args.lr,
            weight_decay=0.05,
            warmup_steps=min(10, args.steps // 5),
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
        ),
        phases=common.phases(args.phases),
        inplace_kd=args.inplace_kd,
    )
    given = _given_base(args)
    family = spec_of(given).family if given is not None else args.family
    masks = family is not None and "masks" in get_family(family).target_fields  # a Mask R-CNN trains on them
    data = load_split(args.data, args.split, with_masks=masks)
    base = _base(args, data, given)
    pool = TeacherPool.from_base(base, widths=widths, depth_delta=args.depth_delta, seed=args.seed)
    print(
        f"pool: base {pool.base_arch}; largest teacher {pool.max_arch}; "
        f"{sum(1 for _ in pool.configs())} teachers (depth +-{pool.depth_delta}, widths {pool.widths})"
    )
    check_output_space(out.parent, pool.model, what="the pool and its checkpoints")  # before a training step
    with lock_output(out):
        result = train_pool_to_file(
            pool, data, out, config=config, metadata={"data": str(args.data)}, progress=not args.quiet
        )
    how = f"resumed at step {result.resumed_from}" if result.resumed_from else "from the start"
    print(f"trained the pool {args.steps} steps ({how}) in {result.wall_s:.0f} s; saved {out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .._io import atomic_write_json, atomic_write_text
    from ..data import load_any_split, load_split
    from ..report import pool_report
    from ..teachers import TeacherPool

    common.check_outputs(md=args.md, json=args.json)
    if args.count < 1:
        raise JdnasError(f"--count must be at least 1 teacher, got {args.count}")
    pool = TeacherPool.load(args.pool)
    report = pool_report(
        pool,
        val_data=load_any_split(args.data, args.split),
        calibration=load_split(args.data, "train"),
        target=args.target,
        count=args.count,
        seed=args.seed,
        split=args.split,
        progress=not args.quiet,
    )
    text = report.to_markdown()
    print(text)
    if args.md is not None:
        atomic_write_text(args.md, text)
    if args.json is not None:
        atomic_write_json(args.json, report.to_dict())
    return 0
