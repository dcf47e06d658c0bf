"""``jdnas demo``: the whole job on a synthetic dataset (a thin call of :func:`jdnas_sdk.demo.run_demo`)."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from ..demo import run_demo
from . import common

__all__ = ["add_parser", "run"]


def _default(name: str) -> Any:
    """``run_demo``'s default for ``name``: the defaults are written once, in the library."""
    return inspect.signature(run_demo).parameters[name].default


def add_parser(verbs: Any) -> None:
    """Add ``demo``; every default is :func:`~jdnas_sdk.demo.run_demo`'s."""
    demo = verbs.add_parser(
        "demo",
        formatter_class=common.FMT,
        help="the whole job on a synthetic dataset, on this machine",
        description="Make a synthetic dataset (train, select, test), train a small detector until it converges, "
        "compress "
        "it for this machine's CPU (cpu-ort), show base, student and the extra-steps control on the test "
        "images, export the student to ONNX and write the report. Reuses what a previous run left in WORKDIR.",
        epilog="examples:\n  jdnas demo\n  jdnas demo --workdir runs/demo2 --seed 1",
        parents=[
            common.verbosity(top=False),
            common.seed(),
            common.target(default=_default("target"), help="latency table to compress for"),
        ],
    )
    demo.add_argument("--workdir", default=_default("workdir"), help="where everything is written")
    demo.add_argument(
        "--steps",
        type=int,
        default=_default("steps"),
        help="the most training steps of the base (it stops once its select AP stops improving)",
    )
    demo.add_argument(
        "--eval-every",
        type=int,
        default=_default("eval_every"),
        help="base steps between evaluations on the select split",
    )
    demo.add_argument(
        "--patience",
        type=int,
        default=_default("patience"),
        help="evaluations without improvement before the base stops",
    )
    demo.add_argument("--train-images", type=int, default=_default("train_images"), help="synthetic training images")
    demo.add_argument(
        "--select-images",
        type=int,
        default=_default("select_images"),
        help="synthetic select images (every choice: early stopping, ranking candidates)",
    )
    demo.add_argument(
        "--test-images",
        type=int,
        default=_default("test_images"),
        help="synthetic test images (the final numbers only)",
    )
    demo.add_argument("--size", type=int, default=_default("size"), help="image side in pixels")
    demo.add_argument(
        "--latency", type=float, default=_default("latency"), help="wanted fraction of the base's latency"
    )
    demo.add_argument(
        "--vary-input-size",
        action="store_true",
        help="let the search change the input size too (each size it tries costs about 30 s of kernel "
        "measurements on a fresh machine)",
    )
    demo.add_argument("--candidates", type=int, default=_default("candidates"), help="students the search evaluates")
    demo.add_argument(
        "--finetune-steps", type=int, default=_default("finetune_steps"), help="fine-tuning steps per student"
    )
    demo.add_argument(
        "--final-steps",
        type=int,
        default=_default("final_steps"),
        help="more training steps for the chosen student (the control gets as many more in all)",
    )
    demo.add_argument(
        "--teacher",
        choices=("auto", "base", "pool", "none"),
        default=_default("teacher"),
        help="where the teacher comes from (auto: the base if it converged, else none)",
    )
    demo.add_argument(
        "--pool-steps", type=int, default=_default("pool_steps"), help="with --teacher pool: steps of the teacher pool"
    )
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = run_demo(
        args.workdir,
        steps=args.steps,
        eval_every=args.eval_every,
        patience=args.patience,
        train_images=args.train_images,
        select_images=args.select_images,
        test_images=args.test_images,
        size=args.size,
        seed=args.seed,
        target=args.target,
        latency=args.latency,
        vary_input_size=args.vary_input_size,
        candidates=args.candidates,
        finetune_steps=args.finetune_steps,
        final_steps=args.final_steps,
        teacher=args.teacher,
        pool_steps=args.pool_steps,
        say=lambda line: print(line, flush=True),
        progress=not args.quiet,
    )
    print(f"\n{result.files()}")
    print(f"done in {result.wall_s:.0f} s")
    return 0
