"""``jdnas export``: a detector file as ONNX (checked against PyTorch) and a TensorRT engine."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import JdnasError
from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``export``."""
    ex = verbs.add_parser(
        "export",
        formatter_class=common.FMT,
        help="write a detector as ONNX (and a TensorRT engine)",
        description="Export the whole detector (pre-processing and NMS included) to ONNX, check it with "
        "onnx.checker and against PyTorch in ONNX Runtime, and build a TensorRT engine where TensorRT is "
        "installed.",
        epilog="examples:\n  jdnas export --model student.pt --onnx student.onnx\n"
        "  jdnas export --model student.pt --onnx student.onnx --engine student.plan --precision fp16   # on a GPU",
        parents=[
            common.verbosity(top=False),
            common.model(),
            common.input_size("SIZE or HEIGHTxWIDTH the graph is traced for (default: min_size square)"),
            common.target(help="with --measure: the table to compare with"),
        ],
    )
    ex.add_argument("--onnx", required=True, help="ONNX file to write")
    ex.add_argument("--engine", help="TensorRT engine file to write (needs TensorRT and a GPU)")
    ex.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="TensorRT engine precision")
    ex.add_argument("--measure", action="store_true", help="also time it on this machine beside the table's estimate")
    ex.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy import export
    from ..detectors import describe, load_detector
    from ..errors import ExportError
    from ..latency import Estimator, tensorrt_available
    from ..latency.local import measure_missing_ops

    common.check_outputs(onnx=args.onnx, engine=args.engine)  # every refusal before the export
    reason = tensorrt_available() if args.engine is not None else None
    if reason:
        raise JdnasError(f"--engine needs TensorRT here: {reason}; leave out --engine to write the ONNX only")
    table = common.local_table(args.target) if args.measure else None
    model = load_detector(args.model)
    size = common.parse_input_size(args.input_size) if args.input_size else None
    try:
        result = export(model, args.onnx, engine=args.engine, precision=args.precision, input_size=size)
    except ExportError as exc:
        raise JdnasError(str(exc)) from exc
    print(result.summary())
    if table is not None:
        spec, arch = describe(model)
        estimator = Estimator(table, spec, result.input_size)
        measure_missing_ops(table, spec, arch, result.input_size, progress=not args.quiet)  # counted, with a bar
        measured = estimator.backend.measure_detector(model, result.input_size)
        estimated = estimator.total_ms(arch)
        print(
            f"{table.target}: measured {measured.median_ms:.2f} ms (full detection load), estimated "
            f"{estimated:.2f} ms ({100 * (estimated - measured.median_ms) / measured.median_ms:+.1f}%)"
        )
    return 0
