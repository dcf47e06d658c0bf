"""``jdnas compress``: search a faster student of a detector for a target (a thin call of ``compress``)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..errors import JdnasError
from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``compress``."""
    co = verbs.add_parser(
        "compress",
        formatter_class=common.FMT,
        help="search a faster student of a detector for a target",
        description="The joint search (student morphism + dynamic distillation from a teacher pool), or the naive "
        "pipeline baseline. Killed? Run the same command again: finished candidates are kept.",
        epilog="example:\n"
        "  jdnas compress --model base.pt --data data/shapes --target cpu-ort --latency 0.8 --budget 8",
        parents=[
            common.verbosity(top=False),
            common.model("trained detector file"),
            common.data(
                "dataset folder: train split to fine-tune, select split for every choice, test split for "
                "the final numbers (a folder with only val has it cut in halves by image id)"
            ),
            common.target(),
            common.seed("random seed (same seed and --parallel, same search)"),
            common.ray_cluster("candidates train"),
            common.wait(),
            common.heads("the space the search explores"),
        ],
    )
    _request_options(co)
    _teacher_options(co)
    _training_options(co)
    _recipe_options(co)
    _executor_options(co)
    co.set_defaults(func=run)


def _request_options(co: argparse.ArgumentParser) -> None:
    """What is asked for: the latency (a ratio or a bound), the budget, the workdir and the method."""
    co.add_argument(
        "--latency", type=float, help="wanted fraction of the base's estimated latency (0.5 when --ms is not given)"
    )
    co.add_argument("--ms", type=float, help="or an absolute latency bound in ms (not both)")
    co.add_argument("--budget", default="12", help="candidates (12) or wall time (90s, 30m, 2h)")
    co.add_argument("--workdir", default="runs/compress", help="where candidates, archive, student and report go")
    co.add_argument(
        "--method", choices=("joint", "pipeline"), default="joint", help="joint search or the naive pipeline"
    )
    co.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        metavar="RATIO",
        help="input sizes the student may take, as ratios of the base's (1.0: keep the base's input size, where a "
        "smaller one would cap the accuracy; default: 0.5 0.75 1.0 1.25); the same as --heads size=RATIO,...",
    )


def _teacher_options(co: argparse.ArgumentParser) -> None:
    """Where teachers come from: the pool (given, or trained here for --pool-steps), the base, none, or
    the user's own detector file."""
    co.add_argument(
        "--teacher",
        default="pool",
        metavar="{pool,base,none,FILE}",
        help="where teachers come from: the elastic pool, the base itself, none, or a detector file of your own "
        "(same family and classes, e.g. a larger or longer-trained model) that every student distils from",
    )
    co.add_argument("--pool", help="a trained pool file (default: train one in WORKDIR)")
    co.add_argument("--pool-steps", type=int, default=100, help="steps of the pool trained when none is given")


def _training_options(co: argparse.ArgumentParser) -> None:
    """How much candidates and the chosen student train, how many select images rank them, and the
    controls the claim is made against."""
    co.add_argument("--finetune-steps", type=int, default=50, help="fine-tuning steps per candidate")
    co.add_argument(
        "--final-steps",
        type=int,
        default=200,
        help="more training steps for the chosen student, with its teacher (0: none)",
    )
    co.add_argument(
        "--checkpoint-every",
        type=int,
        default=50,
        metavar="N",
        help="every training here (candidates, race, final student, control) saves a checkpoint every N steps: "
        "a kill loses at most N (default 50)",
    )
    co.add_argument(
        "--select-images",
        "--val-images",
        type=int,
        default=0,
        dest="select_images",
        help="use only the first N select images to rank candidates (0: all; --val-images: the old name)",
    )
    co.add_argument(
        "--no-control",
        action="store_true",
        help="skip the extra-steps control (the base trained as many more steps as the student received)",
    )
    co.add_argument(
        "--arch-control",
        action="store_true",
        help="also train the student's architecture cut from the base, same steps, no lineage or teacher",
    )


def _recipe_options(co: argparse.ArgumentParser) -> None:
    """The training recipe (:class:`~jdnas_sdk.protocol.Recipe`): learning rate and its rewinding,
    adaptive BatchNorm, gradual morphism, free moves first, the candidates' rate, keep-better, the final race."""
    co.add_argument(
        "--base-lr",
        type=float,
        default=1e-3,
        help="the base's peak learning rate: the final student trains at it (LR rewinding)",
    )
    co.add_argument(
        "--no-lr-rewind", action="store_true", help="train candidates and the final student at a fifth of --base-lr"
    )
    co.add_argument(
        "--bn-images",
        type=int,
        default=200,
        help="adaptive BatchNorm: recalibrate each candidate on N training images before scoring (0: off)",
    )
    co.add_argument(
        "--refit-images",
        type=int,
        default=16,
        help="a candidate that removed a head tower conv has the conv beside the gap refit by least squares on N "
        "training images before it trains (0: off)",
    )
    co.add_argument(
        "--max-step-share",
        type=float,
        default=None,
        help="gradual morphism: each candidate removes at most this share of its parent's latency (default: no bound)",
    )
    co.add_argument(
        "--parent-reach",
        type=float,
        default=None,
        help="a candidate over the search's current latency bound may still be a parent when cutting this "
        "share of its latency brings it within (default: only candidates within the bound)",
    )
    co.add_argument(
        "--search-lr-ratio",
        type=float,
        default=None,
        help="candidates fine-tune at this fraction of the final student's rate (default: the recipe's, 1.0)",
    )
    co.add_argument(
        "--no-free-moves",
        action="store_true",
        help="do not score the students that change no weight (fewer proposals, another input size) first",
    )
    co.add_argument(
        "--no-keep-better",
        action="store_true",
        help="keep the final training (and the control's) even where select says it lost accuracy",
    )
    co.add_argument(
        "--final-race",
        type=int,
        default=1,
        metavar="K",
        help="the search's K most accurate candidates within the target each train the first --race-share of "
        "the final steps; the one select ranks first then finishes it (1: the search's best alone)",
    )
    co.add_argument(
        "--race-share", type=float, default=0.25, help="with --final-race: the share of the final steps raced"
    )


def _executor_options(co: argparse.ArgumentParser) -> None:
    """Where candidates train: rounds of --parallel, and each one's Ray resources with --executor ray."""
    co.add_argument("--parallel", type=int, default=1, help="candidates per round, trained at once by --executor ray")
    co.add_argument("--cpus-per-candidate", type=float, help="with --executor ray: Ray CPUs per candidate (1)")
    co.add_argument("--gpus-per-candidate", type=float, help="with --executor ray: Ray GPUs per candidate (0)")
    co.add_argument("--threads-per-candidate", type=int, help="with --executor ray: torch threads per candidate (1)")
    co.add_argument("--retries", type=int, help="with --executor ray: retries of a candidate whose worker died (3)")


def _executor(args: argparse.Namespace) -> Any:
    """``"local"`` or a RayExecutor from the flags (a SearchError at once when Ray is not installed)."""
    ray_only = {
        "--address": args.address,
        "--cpus-per-candidate": args.cpus_per_candidate,
        "--gpus-per-candidate": args.gpus_per_candidate,
        "--threads-per-candidate": args.threads_per_candidate,
        "--retries": args.retries,
    }
    least = [("--parallel", args.parallel, 1), ("--threads-per-candidate", args.threads_per_candidate, 1)]
    least += [("--retries", args.retries, 0), ("--cpus-per-candidate", cpus := args.cpus_per_candidate, 0)]
    least += [("--gpus-per-candidate", gpus := args.gpus_per_candidate, 0)]
    bad = [f"{flag} {v} (at least {floor})" for flag, v, floor in least if v is not None and not v >= floor]
    bad += [f"{flag} {v} (a finite number)" for flag, v, _ in least if v is not None and v > 0 and math.isinf(v)]
    if cpus == 0 and not gpus:
        bad.append("--cpus-per-candidate 0 without --gpus-per-candidate (a candidate needs one of them)")
    if bad:
        raise JdnasError(f"out of range: {'; '.join(bad)}")
    if args.executor == "local":  # they would do nothing in this process
        common.refuse_given(ray_only, "set how Ray runs candidates: give them with --executor ray")
        return "local"
    from ..search import RayExecutor

    return RayExecutor(
        address=args.address,
        num_cpus=1.0 if cpus is None else cpus,
        num_gpus=0.0 if gpus is None else gpus,
        threads=1 if args.threads_per_candidate is None else args.threads_per_candidate,
        max_retries=3 if args.retries is None else args.retries,
    )


def run(args: argparse.Namespace) -> int:
    from ..compress import Recipe, compress
    from ..data import load_protocol_splits
    from ..detectors import load_detector, spec_of
    from ..families import get_family

    grid = common.head_grid(args.heads) | ({"size": tuple(args.sizes)} if args.sizes else {})
    executor = _executor(args)
    recipe = Recipe(  # its settings checked before the model and data are read
        lr_rewind=not args.no_lr_rewind,
        base_lr=args.base_lr,
        bn_images=args.bn_images,
        refit_images=args.refit_images,
        max_step_share=args.max_step_share,
        free_moves=not args.no_free_moves,
        keep_better=not args.no_keep_better,
        final_race=args.final_race,
        race_share=args.race_share,
        parent_reach=args.parent_reach,
        checkpoint_every=args.checkpoint_every,
        **({"search_lr_ratio": args.search_lr_ratio} if args.search_lr_ratio is not None else {}),
    )
    model = load_detector(args.model)
    masks = "masks" in get_family(spec_of(model).family).target_fields  # a Mask R-CNN trains on them
    train_set, select_set, test_set = load_protocol_splits(args.data, with_masks=masks)
    if args.select_images:
        select_set = select_set.head(args.select_images)
    budget: int | str = int(args.budget) if args.budget.isdigit() else args.budget
    result = compress(
        model,
        target=args.target,
        train_data=train_set,
        select_data=select_set,
        test_data=test_set,
        recipe=recipe,
        heads=grid or None,
        control=not args.no_control,
        arch_control=args.arch_control,
        latency=args.latency,
        ms=args.ms,
        budget=budget,
        workdir=args.workdir,
        method=args.method,
        pool=args.pool,
        teacher=args.teacher,
        finetune_steps=args.finetune_steps,
        final_steps=args.final_steps,
        pool_steps=args.pool_steps,
        seed=args.seed,
        progress=not args.quiet,
        parallel=args.parallel,
        executor=executor,
        wait=args.wait,
    )
    common.print_result(result)
    return 0
