"""``jdnas latency``: a detector's latency estimated from a target's table (and measured here)."""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from typing import Any

from ..errors import JdnasError
from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``latency``."""
    la = verbs.add_parser(
        "latency",
        formatter_class=common.FMT,
        help="estimate a detector's latency on a target",
        description="Estimate a detector's latency from a target's table: total, breakdown by stage, misses. "
        "With --measure, also run it on this machine (the target must be this machine).",
        epilog="examples:\n  jdnas latency --model base.pt --target cpu-ort --measure\n"
        "  jdnas latency --model base.pt --target cpu-ort --floor --json floor.json",
        parents=[
            common.verbosity(top=False),
            common.model(),
            common.target(help="target name or table file"),
            common.input_size(),
        ],
    )
    la.add_argument(
        "--arch",
        help="estimate this student instead of the file's: a backbone code (the file's heads kept) or a whole "
        "student code, backbone@heads, as --floor and the search print (e.g. ...@fpn64,in192x192,p300,b256); "
        "the image fed is still --input-size, and the student's own inMINxMAX is its resize",
    )
    la.add_argument(
        "--on-miss",
        choices=("auto", "measure", "interpolate", "model", "error"),
        default="auto",
        help="ops the table lacks: auto measures them on the table's own device (a missing fixed entry, the "
        "detector's pre/post-processing, on the detector itself), models them on a modelled table, else interpolates",
    )
    la.add_argument("--measure", action="store_true", help="also measure the whole detector here (ONNX Runtime)")
    la.add_argument("--json", help="also write the estimate (and measurement) to this JSON file")
    la.add_argument(
        "--floor",
        action="store_true",
        help="name the cheapest student of the default search space around the model (its code) and its "
        "latency beside the base's (with --measure, both timed side by side in 3 interleaved rounds, each at "
        "its median); --json then holds {base: {code, estimated_ms, measured_ms}, floor: {...}}",
    )
    la.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._io import atomic_write_json
    from ..detectors import describe, load_detector
    from ..latency import Estimator, load_table
    from ..latency.local import measure_missing_ops
    from ..latency.nms_load import nms_load, nms_ms_per_test
    from ..latency.probe import TIMED_LOAD
    from ..morph import inherited
    from ..student import Student, as_student

    common.check_outputs(json=args.json)
    model = load_detector(args.model)
    spec, arch = describe(model)
    if args.floor:
        return _floor(args, model, spec, arch)
    size = common.parse_input_size(args.input_size) if args.input_size else (spec.min_size, spec.min_size)
    if args.arch:  # the image stays the file's; a whole student code brings its own heads (and resize)
        spec, arch = as_student(spec, args.arch, arch)
    table = common.local_table(args.target) if args.measure else load_table(args.target)
    if args.on_miss in ("auto", "measure"):  # this machine's table: the missing kernels, counted, with a progress bar
        measure_missing_ops(table, spec, arch, size, progress=not args.quiet)
    estimator = Estimator(table, spec, size, on_miss=args.on_miss, measure_on=partial(inherited, model))
    if args.arch and args.measure:
        model = inherited(model, Student.of(spec, arch))
    if not args.arch or args.measure:  # the detector at hand runs the estimated setting
        _fixed_on(estimator, model, args)
    # the fixed entry follows the NMS load of the detector that exists: the file's, or the student measured
    # here (counted on the timing's own forward); an --arch estimate alone is a guess for an untrained
    # student and keeps the entry's mean
    measured = estimator.backend.measure_detector(model, size) if args.measure else None  # this machine's table
    follow = nms_ms_per_test(table) is not None and (args.measure or not args.arch)
    tests = (measured.info.get(TIMED_LOAD) if measured is not None else nms_load(model, size)) if follow else None
    estimate = estimator.estimate(arch, nms_tests=tests)
    print(estimate)
    report: dict[str, object] = {"code": str(Student.of(spec, arch)), "estimate": estimate.to_dict()}
    if measured is not None:
        error = 100 * (estimate.total_ms - measured.median_ms) / measured.median_ms
        print(
            f"measured on this machine: {measured.median_ms:.2f} ms (IQR {measured.spread_ms:.2f} ms, "
            f"{measured.samples} runs, full detection load); estimate error {error:+.1f}%"
        )
        report["measured_ms"] = measured.median_ms
    if args.json is not None:
        atomic_write_json(args.json, report)
    return 0


def _fixed_on(estimator: Any, model: Any, args: argparse.Namespace) -> None:
    """On this machine's table, the fixed entry of the estimated setting, where the table lacks it, is
    measured on ``model`` itself, as ``compress`` does for its base: its weights decide how many boxes
    post-processing handles (one trained Faster R-CNN read 53% below an entry timed on random weights,
    an independent check of stop 45). Other settings' entries (``--arch``, ``--floor``'s grid) are timed on
    ``model`` morphed to the student (:func:`~jdnas_sdk.morph.inherited`)."""
    if args.on_miss not in ("auto", "measure") or not estimator.lacks_fixed():  # not asked for, or not needed
        return
    if not args.quiet:
        print(f"measuring the fixed part (pre/post-processing) of this detector on {estimator.table.target}")
    estimator.calibrate_fixed(model)


def _floor(args: argparse.Namespace, model: Any, spec: Any, arch: Any) -> int:
    """``--floor``: the base and the cheapest student of its default space, estimated (and measured)."""
    from .._io import atomic_write_json
    from ..latency import Estimator, load_table
    from ..measured import interleaved_ms
    from ..morph import inherited
    from ..space import SearchSpace
    from ..student import Student

    if args.arch:
        raise JdnasError("--floor searches the space around the model's own backbone: leave out --arch")
    size = common.parse_input_size(args.input_size) if args.input_size else (spec.min_size, spec.min_size)
    table = common.local_table(args.target) if args.measure else load_table(args.target)
    estimator = Estimator(table, spec, size, on_miss=args.on_miss, measure_on=partial(inherited, model))
    _fixed_on(estimator, model, args)
    base = Student.of(spec, arch)
    if not args.quiet and estimator.backend is not None:  # each grid step estimated; kernels the table lacks timed
        print(
            f"finding the cheapest student of the default space on {table.target}; kernels this machine's table "
            "lacks are measured as they are met (minutes on a new machine)"
        )
    floor = SearchSpace(arch, spec=spec).cheapest(estimator.total_ms)
    timed: dict[str, list[float]] = {}
    if args.measure:  # side by side, in interleaved rounds (as compress's claim): the ratio is of one moment
        timed = interleaved_ms({"base": model, "floor": inherited(model, floor)}, estimator.backend, size)
    report: dict[str, dict[str, Any]] = {}
    for name, student in (("base", base), ("floor", floor)):
        estimated = estimator.total_ms(student)
        measured = statistics.median(timed[name]) if timed else None
        report[name] = {"code": str(student), "estimated_ms": estimated, "measured_ms": measured}
        shown = f", measured {measured:.2f} ms" if measured is not None else ""
        print(f"{name:<5} {student}\n      estimated {estimated:.2f} ms{shown}")
    ratio = report["floor"]["estimated_ms"] / report["base"]["estimated_ms"]
    line = f"floor / base: {ratio:.3f}x estimated"
    if args.measure:
        line += f", {report['floor']['measured_ms'] / report['base']['measured_ms']:.3f}x measured"
    print(line)
    if args.json is not None:
        atomic_write_json(args.json, report)
    return 0
