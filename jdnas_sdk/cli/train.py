"""``jdnas train``: train a detector (from FAMILY_BACKBONE or a detector file) on a COCO-format dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import JdnasError
from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``train``."""
    tr = verbs.add_parser(
        "train",
        formatter_class=common.FMT,
        help="train a detector on a COCO-format dataset",
        description="Train a detector. Killed? Run the same command again: it resumes from OUT.ckpt.",
        epilog="examples:\n"
        "  jdnas train --data data/shapes --model fasterrcnn_resnet18 --out base.pt --until-converged --steps 3000\n"
        "  jdnas train --data data/shapes --model retinanet_resnet18 --out base.pt --optimizer adamw --lr 1e-3 "
        "--weight-decay 0.05",
        parents=[
            common.verbosity(top=False),
            common.data("dataset folder (images/<split>/ + annotations/instances_<split>.json, or COCO's layout)"),
            common.model(
                "FAMILY_BACKBONE (e.g. fasterrcnn_resnet18, retinanet_resnet50) or a detector file to fine-tune"
            ),
            common.input_side("with FAMILY_BACKBONE: longest image side fed to the detector (256 when not given)"),
            common.seed(),
            common.force(),
        ],
    )
    tr.add_argument("--out", required=True, help="detector file to write")
    tr.add_argument("--split", default="train", help="split to train on")
    tr.add_argument("--steps", type=int, default=300, help="optimisation steps (with --until-converged: the most)")
    tr.add_argument(
        "--until-converged",
        action="store_true",
        help="train until the select split's AP (in a folder without one: half of val's) stops improving; keeps "
        "the best weights (a detector file as --model is step 0), the curve in OUT.curve.json and the metadata",
    )
    tr.add_argument("--eval-every", type=int, default=100, help="with --until-converged: steps between evaluations")
    tr.add_argument(
        "--patience",
        type=int,
        default=3,
        help="with --until-converged: evaluations without improvement before stopping",
    )
    tr.add_argument(
        "--trend-window",
        type=int,
        default=8,
        help="with --until-converged: patience stops training only once the line fitted to the last this many "
        "evaluations rises less than 1 AP across them (a best set by noise does not stop a climbing curve; 0: "
        "patience alone)",
    )
    tr.add_argument(
        "--cooldown",
        type=int,
        default=0,
        help="with --until-converged: then this many steps from the best weights with the rate decayed to its "
        "floor (what settles a constant-rate plateau), kept if the select AP gains",
    )
    tr.add_argument(
        "--cycle-steps",
        type=int,
        default=0,
        help="with --until-converged: then rewound cycles of this many steps (peak rate again, cosine decay) while "
        "each gains --cycle-min-gain select AP; give the steps a student or control will train after it, so the "
        "base is converged under that schedule (0: none)",
    )
    tr.add_argument("--max-cycles", type=int, default=3, help="with --cycle-steps: at most this many cycles")
    tr.add_argument(
        "--cycle-min-gain", type=float, default=1.0, help="with --cycle-steps: AP points a cycle must gain to go on"
    )
    tr.add_argument("--batch-size", type=int, default=4, help="images per step")
    tr.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        default="sgd",
        help="sgd (momentum 0.9), or adamw: faster from scratch on small data (use --lr 1e-3 --weight-decay 0.05)",
    )
    tr.add_argument("--lr", type=float, default=0.02, help="peak learning rate after warm-up; cosine decay follows")
    tr.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay")
    tr.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    _shape_flags(tr)
    tr.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    tr.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    tr.set_defaults(func=run, input_size=None)  # None: not given (a detector file keeps its own shape)


def _shape_flags(tr: argparse.ArgumentParser) -> None:
    """The shape of a detector built from FAMILY_BACKBONE (a detector file keeps its own: refused there)."""
    tr.add_argument("--fpn-channels", type=int, help="with FAMILY_BACKBONE: FPN width (256 when not given)")
    tr.add_argument(
        "--representation-size", type=int, help="with FAMILY_BACKBONE: R-CNN box-head width (1024 when not given)"
    )
    tr.add_argument(
        "--anchor-sizes",
        help="with FAMILY_BACKBONE: base anchor size per level: auto (halved below 512 px; when not given), "
        "torchvision, or e.g. 16,32,64,128,256",
    )


def run(args: argparse.Namespace) -> int:
    from .._lock import lock_output
    from .._seed import seeded
    from .._stopwatch import Stopwatch
    from ..arch import DetectorSpec
    from ..data import load_split
    from ..data.checks import check_images
    from ..detectors import build_detector, load_detector, spec_of
    from ..families import get_family
    from ..preflight import check_output_space
    from ..train import TrainConfig, checkpoint_path, train_to_file, wall_path

    if args.steps < 1:  # 0 would save the untrained detector as if trained
        raise JdnasError(f"--steps must be at least 1 (the optimisation steps to train), got {args.steps}")
    common.check_outputs(out=args.out)  # a folder or an unwritable place: refused before training
    out = Path(args.out)
    ckpt = checkpoint_path(out)
    Stopwatch(wall_path(out))  # a killed run's time file, damaged: one line now, not after the image check
    if out.exists() and not ckpt.exists() and not args.force:
        raise JdnasError(f"{out} already exists; pass --force to train again and replace it, or choose another --out")
    shape = {"--input-size": args.input_size, "--fpn-channels": args.fpn_channels}
    shape.update({"--representation-size": args.representation_size, "--anchor-sizes": args.anchor_sizes})
    if Path(args.model).is_file():  # they were dropped without a word: the file keeps its own shape
        common.refuse_given(shape, f"shape a detector built from FAMILY_BACKBONE; {args.model} keeps its own")
    model = load_detector(args.model) if Path(args.model).is_file() else None
    family, backbone = (spec_of(model).family, "") if model is not None else common.parse_model_name(args.model)
    data = load_split(args.data, args.split, with_masks="masks" in get_family(family).target_fields)
    if model is not None:
        data.check_compatible(spec_of(model))
    else:
        common.check_trainable(family)
        side = 256 if args.input_size is None else args.input_size
        spec = DetectorSpec(
            family=family,
            backbone=backbone,
            num_classes=data.num_classes,
            min_size=side,
            max_size=side,
            fpn_channels=256 if args.fpn_channels is None else args.fpn_channels,
            representation_size=1024 if args.representation_size is None else args.representation_size,
            anchor_sizes=common.anchor_sizes(args.anchor_sizes or "auto", family, side),
            category_ids=data.category_ids,
            class_names=data.class_names,
        )
        with seeded(args.seed):  # same --seed, same initial weights, in any process
            model = build_detector(spec)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        num_workers=args.workers,
    )
    check_output_space(out.parent, model, what="the detector and its checkpoints")  # before a training step
    check_images(data, name=f"the {args.split} split", progress=not args.quiet)  # not after hours of training
    with lock_output(out):  # two runs never share one --out and its checkpoints
        if args.until_converged:
            return _until_converged(args, model, data, config, out)
        result = train_to_file(
            model, data, out, config=config, metadata={"data": str(args.data)}, progress=not args.quiet
        )
    start = f"from {args.model}'s weights" if Path(args.model).is_file() else "from scratch"
    how = f"resumed at step {result.resumed_from}" if result.resumed_from else start
    print(
        f"trained {config.steps} steps ({how}) in {result.wall_s:.0f} s, final loss {result.final_loss:.3f}; "
        f"saved {out}"
    )
    return 0


def _until_converged(args: argparse.Namespace, model: Any, data: Any, config: Any, out: Path) -> int:
    from ..converge import ConvergeConfig, curve_path, train_until_converged
    from ..data import load_protocol_splits
    from ..data.checks import check_images
    from ..detectors import spec_of
    from ..families import get_family

    masks = "masks" in get_family(spec_of(model).family).target_fields
    select = load_protocol_splits(args.data, with_masks=masks)[1]
    check_images(select, name="the select split", progress=not args.quiet)
    converge = ConvergeConfig(
        eval_every=args.eval_every,
        patience=args.patience,
        trend_window=args.trend_window,
        max_steps=max(args.steps, args.eval_every),
        cooldown_steps=args.cooldown,
        cycle_steps=args.cycle_steps,
        max_cycles=args.max_cycles,
        cycle_min_gain=args.cycle_min_gain / 100,
    )
    result = train_until_converged(
        model,
        data,
        select,
        out,
        config=config,
        converge=converge,
        metadata={"data": str(args.data)},
        progress=not args.quiet,
        keep_start=Path(args.model).is_file(),  # a detector file's trained weights are step 0's candidate
    )
    if result.curve and result.curve[0]["step"] == 0:
        print(f"starting weights ({args.model}): select AP {100 * result.curve[0]['select_ap']:.1f}")
    how = "converged" if result.converged else "stopped at --steps"
    print(f"{how} after {result.steps} steps: {result.best_text()}; saved {out} (curve: {curve_path(out)})")
    if result.cooldown:
        cool = result.cooldown
        print(
            f"cool-down of {cool['steps']} steps: select AP {100 * cool['select_ap']:.1f}, "
            + ("kept" if cool["kept"] else "not kept (the best weights before it stay)")
        )
    for i, cycle in enumerate(result.cycles, 1):
        print(
            f"rewound cycle {i} of {cycle['steps']} steps: select AP {100 * cycle['select_ap']:.1f} "
            f"({100 * cycle['gain']:+.1f}), " + ("kept" if cycle["kept"] else "not kept")
        )
    return 0
