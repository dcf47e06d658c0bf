"""``jdnas info``: what a detector file holds (spec, metadata, parameter count, SDK version)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import common

__all__ = ["add_parser", "run"]


def add_parser(verbs: Any) -> None:
    """Add ``info``."""
    info = verbs.add_parser(
        "info",
        formatter_class=common.FMT,
        help="show what a detector file holds",
        description="What a detector file holds, as JSON: its spec (family, backbone, classes, input size, head "
        "settings), its parameter count, the metadata it was saved with (how it was trained) and the SDK version.",
        epilog="example:\n  jdnas info --model runs/compress/student.pt",
        parents=[common.verbosity(top=False), common.model()],
    )
    info.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..arch import DetectorSpec
    from ..detectors import read_detector_file
    from ..errors import ArchError, DetectorFileError

    payload = read_detector_file(args.model)
    try:  # a spec that loading would refuse is refused here too, not shown as if valid
        DetectorSpec.from_dict(payload["spec"])
    except ArchError as exc:
        raise DetectorFileError(f"{args.model} has an invalid detector spec: {exc}") from exc
    params = sum(
        v.numel()
        for k, v in payload["state_dict"].items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    print(
        json.dumps(
            {
                "spec": payload["spec"],
                "metadata": payload["metadata"],
                "parameters": params,
                "sdk_version": payload.get("sdk_version"),
            },
            indent=1,
        )
    )
    return 0
