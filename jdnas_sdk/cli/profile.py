"""``jdnas profile``: measure a target's per-op latency table around a detector."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..arch import BACKBONES, FAMILIES
from ..errors import JdnasError
from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``profile``."""
    pr = verbs.add_parser(
        "profile",
        formatter_class=common.FMT,
        help="measure a target's per-op latency table",
        description="Measure every op the search space around a detector can reach, on this machine, into a "
        "latency table. Killed? Run the same command again: done entries are kept.",
        epilog="examples:\n  jdnas profile --target cpu-ort --model base.pt --input-size 256\n"
        "  jdnas profile --target my-gpu-trt --backend tensorrt --precision fp16 --family fasterrcnn "
        "--backbone resnet50 --input-size 800x1344",
        parents=[
            common.verbosity(top=False),
            common.target(None, "target name (the table is TARGET.json)"),
            common.model(
                "detector file whose neighbourhood to profile (its weights time the fixed entry)", required=False
            ),
            common.seed("seed of those students' architectures"),
            common.ray_cluster("the ops are measured (Ray: split between workers of this device type)"),
            common.wait("another profile of this table"),
            common.heads("the space to profile"),
        ],
    )
    pr.add_argument("--family", choices=sorted(FAMILIES), help="or: a detector family ...")
    pr.add_argument("--backbone", choices=BACKBONES, help="... and its standard backbone")
    pr.add_argument("--num-classes", type=int, default=9, help="with --family: classes including background")
    pr.add_argument("--fpn-channels", type=int, default=256, help="with --family: FPN width")
    pr.add_argument("--representation-size", type=int, default=1024, help="with --family: R-CNN box-head width")
    pr.add_argument("--input-size", nargs="+", default=["256"], help="image size(s): SIZE or HEIGHTxWIDTH")
    pr.add_argument("--width-ratios", help="width grid of the search space, e.g. 0.5,0.75,1 (default: 0.25..1.5)")
    pr.add_argument(
        "--backend",
        choices=("ort", "torch", "tensorrt", "roofline"),
        default="ort",
        help="what runs the ops; roofline MODELS them for --device v100-trt|t4-trt|a100-trt (a modelled table)",
    )
    pr.add_argument(
        "--trt-profiler",
        choices=("auto", "native", "python"),
        default="auto",
        help="tensorrt backend: the native profiler (cmake-built jdnas_trt_profiler), TensorRT's Python API, "
        "or the native one where it is built (auto)",
    )
    pr.add_argument("--threads", type=int, default=1, help="CPU threads (1 gives repeatable numbers)")
    pr.add_argument("--device", default="cpu", help="torch backend: cpu or cuda; roofline backend: the device model")
    pr.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        help="fp16: torch on CUDA, tensorrt (default: fp16 for tensorrt, fp32 for ort and torch)",
    )
    pr.add_argument("--min-runs", type=int, default=10, help="timed runs per op, at least")
    pr.add_argument("--min-time", type=float, default=0.25, help="seconds of timed runs per op, at least")
    pr.add_argument(
        "--out",
        help="table file (default: the one a later --target TARGET reads here, so a rerun resumes it: this "
        "machine's cached table of a shipped measured target such as cpu-ort, the file of a table of your own, else "
        "TARGET.json in the first folder of $JDNAS_LATENCY_TABLES or in $JDNAS_CACHE/tables)",
    )
    pr.add_argument("--dry-run", action="store_true", help="only count the ops to measure")
    pr.add_argument(
        "--backbone-only",
        action="store_true",
        help="profile only the backbone's space (heads and input size fixed), as before the detector-level space",
    )
    _fixed_entry_options(pr)
    pr.add_argument(
        "--workers", type=int, help="with --executor ray: workers measuring at once (default: all that fit)"
    )
    pr.add_argument("--cpus-per-worker", type=float, help="with --executor ray: Ray CPUs per worker (1)")
    pr.add_argument("--gpus-per-worker", type=float, help="with --executor ray: Ray GPUs per worker (0)")
    pr.set_defaults(func=run)


def _fixed_entry_options(pr: argparse.ArgumentParser) -> None:
    """The options that decide how the fixed entries (whole-detector residuals) are timed."""
    pr.add_argument(
        "--fixed-students",
        type=int,
        default=8,
        help="with --model: students of the space (the model morphed to random students, in the model's own "
        "fixed settings) whose timings average into the fixed entry, beside the model's own",
    )
    pr.add_argument(
        "--variant-students",
        type=int,
        default=3,
        help="with --model: the fixed entry of every other head setting averages over the model and this many "
        "of those students, each moved into that setting (its box head and towers kept: with its weights, "
        "inherited, they decide how much post-processing is left; 3 with the model's own covers a one-stage "
        "detector's four tower depths; without --model the base backbone with random weights is timed)",
    )
    pr.add_argument(
        "--refit-data",
        help="with --model: a dataset folder; students with fewer tower convs are refit by least squares on its "
        "first 16 training images, as the search's candidates are, so the boxes post-processing keeps are "
        "the search's (default: plain morphs)",
    )
    pr.add_argument(
        "--reference-ops",
        type=int,
        default=6,
        help="the profiled detector's largest ops (at its input size), timed again before and after each fixed "
        "entry's detectors: their end-to-end times are scaled to "
        "the speed the ops were measured at where it moved by more than 10%%, so a machine whose speed moved "
        "meanwhile does not skew the residual (0: not checked)",
    )


def _detector(args: argparse.Namespace, sizes: list[tuple[int, int]]) -> tuple[Any, Any, Any]:
    """``(model or None, spec, base arch)`` from ``--model`` or ``--family/--backbone``."""
    from ..arch import DetectorSpec, standard_arch
    from ..detectors import describe, load_detector

    if args.model:
        if args.family or args.backbone:
            raise JdnasError("give either --model FILE or --family/--backbone, not both")
        model = load_detector(args.model)
        spec, base = describe(model)
        return model, spec, base
    if args.family and args.backbone:
        largest = max(max(s) for s in sizes)
        spec = DetectorSpec(
            family=args.family,
            backbone=args.backbone,
            num_classes=args.num_classes,
            min_size=min(min(s) for s in sizes),
            max_size=largest,
            fpn_channels=args.fpn_channels,
            representation_size=args.representation_size,
            anchor_sizes=common.anchor_sizes("auto", args.family, largest),
        )
        return None, spec, standard_arch(args.backbone)
    raise JdnasError("name the detector to profile around: --model FILE, or --family F --backbone B")


def _fixed_models(args: argparse.Namespace, model: Any, spec: Any, base: Any, space: Any) -> tuple[list[Any], Any]:
    """The detectors timed for the fixed entries, from ``--model``: the model morphed to
    ``--fixed-students`` students sampled from the space (the base setting's entry), and a function
    giving the model and the first ``--variant-students`` of those students, each morphed into
    another head setting. A student keeps its box head and towers in every setting
    (:func:`~jdnas_sdk.latency.reach.in_setting`): they decide how many boxes post-processing keeps;
    the students' take every value of the grid in turn (:func:`~jdnas_sdk.latency.reach.spread_timed`)."""
    if model is None:
        return [], None
    import random

    from ..latency.reach import in_setting, spread_timed
    from ..morph import morph_to
    from ..morph.refit import depth_refit_hook
    from ..student import Heads, Student

    rng = random.Random(10_000_019 + args.seed)  # a stream of its own, apart from benchmark seeds
    count = max(args.fixed_students, args.variant_students)
    sampled = spread_timed([space.sample_student(rng) for _ in range(count)], space)  # every timed head covered
    hook = depth_refit_hook(_refit_images(args.refit_data), 16, []) if args.refit_data else None
    students = [morph_to(model, in_setting(s, spec), after_step=hook) for s in sampled[: args.fixed_students]]

    def variant_models(variant: Any) -> list[Any]:
        own = morph_to(model, Student(base, Heads.of(variant)))
        chosen = sampled[: args.variant_students]
        return [own, *(morph_to(model, in_setting(s, variant), after_step=hook) for s in chosen)]

    return students, variant_models


def _check_counts(args: argparse.Namespace) -> None:
    """The profile's counts and Ray shares, before any work (a dry run included): ``-1`` students
    were taken as a slice end (one fewer, silently), ``--threads -2`` passed a dry run."""
    import math

    least = [
        ("--fixed-students", args.fixed_students, 0),
        ("--variant-students", args.variant_students, 0),
        ("--reference-ops", args.reference_ops, 0),
        ("--threads", args.threads, 1),
        ("--workers", 1 if args.workers is None else args.workers, 1),
    ]
    bad = [f"{flag} {value} (at least {floor})" for flag, value, floor in least if value < floor]
    if args.cpus_per_worker is not None and not (math.isfinite(args.cpus_per_worker) and args.cpus_per_worker > 0):
        bad.append(f"--cpus-per-worker {args.cpus_per_worker} (more than 0)")
    if args.gpus_per_worker is not None and not (math.isfinite(args.gpus_per_worker) and args.gpus_per_worker >= 0):
        bad.append(f"--gpus-per-worker {args.gpus_per_worker} (0 or more)")
    if bad:
        raise JdnasError(f"out of range: {'; '.join(bad)}")


def _check_ray(args: argparse.Namespace) -> None:
    """The Ray flags, before any work: refused without ``--executor ray`` (they would do nothing);
    with it, Ray installed and the cluster of ``--address`` answering."""
    if args.executor != "ray":
        ray_only = {
            "--address": args.address,
            "--workers": args.workers,
            "--cpus-per-worker": args.cpus_per_worker,
            "--gpus-per-worker": args.gpus_per_worker,
        }
        common.refuse_given(ray_only, "set how Ray measures: give them with --executor ray")
        return
    if args.dry_run:  # counts ops only: no Ray needed
        return
    from .._ray import check_address, require_ray

    require_ray(JdnasError, "--executor ray")
    check_address(args.address, JdnasError)


def _default_out(target: str, backend: Any) -> Path:
    """The table a later ``--target TARGET`` reads on this machine, so that what is profiled is used
    and a killed run's rerun finds its table: a path target is written where it names; a new name
    goes to ``TARGET.json`` in the first folder names are looked up in (``$JDNAS_LATENCY_TABLES``,
    else this user's tables); a name of the user's own table is that file; a *shipped* measured
    table whose backend runs here (``cpu-ort``) is only read, so this machine's cached table of it
    (:func:`~jdnas_sdk.latency.local.resolve_local`)."""
    from ..errors import LatencyTableError
    from ..latency.local import local_device, local_table_path
    from ..latency.table import SHIPPED_TABLES, LatencyTable, table_path, tables_dirs

    if target.endswith(".json") or os.sep in target:
        return Path(target)
    try:
        found = table_path(target)
    except LatencyTableError:  # a new target: where the name will be found
        return tables_dirs()[0] / f"{target}.json"
    if found.parent.resolve() != SHIPPED_TABLES:
        return found  # the user's own table: profiling goes on in it
    shipped = LatencyTable.load(found)
    read = local_device(shipped)  # whose table a later --target TARGET reads here
    if read is None:
        return found  # open_table explains a table made another way
    if backend.fingerprint() != read:
        print(
            f"note: a later --target {target} reads this machine's table measured as [{read.describe()}], not "
            f"[{backend.fingerprint().describe()}] as asked here: pass this table by path (--target FILE)",
            file=sys.stderr,  # a warning: stdout holds results only
        )
    return local_table_path(target, backend.fingerprint())


def _refit_images(folder: str) -> Any:
    """The training split of ``folder``, checked before any timing."""
    from ..data import load_split

    return load_split(folder, "train")


def run(args: argparse.Namespace) -> int:
    from ..latency import make_backend, open_table, profile, reachable_ops
    from ..latency.backends import Timing
    from ..space import SearchSpace

    _check_ray(args)
    if args.refit_data and not args.model:
        raise JdnasError("--refit-data refits the students of --model's fixed entries: give --model too")
    sizes = [common.parse_input_size(t) for t in args.input_size]
    timing = Timing(min_runs=args.min_runs, max_runs=max(200, args.min_runs), min_time_s=args.min_time)  # checked now
    _check_counts(args)
    common.check_outputs(out=args.out)
    model, spec, base = _detector(args, sizes)
    ratios = common.ratios(args.width_ratios, "--width-ratios") if args.width_ratios else None
    heads = None if args.backbone_only else spec
    grid = {"heads": g} if (g := common.head_grid(args.heads)) else {}
    space = SearchSpace(base, **({"width_ratios": ratios} if ratios else {}), spec=heads, **grid)
    if args.dry_run:
        ops = {k for size in sizes for k in reachable_ops(spec, space, size)}
        print(f"{len(ops)} ops reachable around {spec.family} {base} at {', '.join(f'{h}x{w}' for h, w in sizes)}")
        return 0
    native = {"auto": None, "native": True, "python": False}[args.trt_profiler]
    backend = make_backend(
        args.backend, threads=args.threads, device=args.device, precision=args.precision, timing=timing, native=native
    )
    out = Path(args.out) if args.out else _default_out(args.target, backend)
    if not args.out:  # the default, once known: writable before the first op is timed (--out was checked above)
        common.check_outputs(out=str(out))
    table = open_table(out, args.target, backend)
    print(
        f"profiling {args.target} on [{backend.fingerprint().describe()}] into {out} ({len(table)} entries "
        f"already there)"
    )
    students, variant_models = _fixed_models(args, model, spec, base, space)
    ray_options = {
        "workers": args.workers,
        "num_cpus": 1.0 if args.cpus_per_worker is None else args.cpus_per_worker,
        "num_gpus": 0.0 if args.gpus_per_worker is None else args.gpus_per_worker,
        "address": args.address,
    }
    profile(
        table,
        backend,
        spec,
        base=base,
        input_sizes=sizes,
        space=space,
        model=model,
        fixed_models=students,
        variant_models=variant_models,
        reference_count=args.reference_ops,
        progress=not args.quiet,
        executor=args.executor,
        ray_options=ray_options,
        wait=args.wait,
    )
    print(f"{out}: {len(table)} entries")
    return 0
