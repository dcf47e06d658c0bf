"""Time an ONNX detector in a fresh process: ``python -m jdnas_sdk.latency.backends.ort_worker SPEC.json``.

End-to-end timings drift with the state of the process that takes them: after a few dozen models
have been built, exported and run, a long-lived Python process runs the same ONNX graph several
percent slower (allocation and paging of the large post-processing buffers). Every whole-detector
measurement of :class:`~jdnas_sdk.latency.backends.ort.OrtBackend` therefore runs here, in a
process of its own, so a table's fixed entries, ``--measure`` and the benchmarks all time under the
same conditions. Input and output are plain files (JSON and ``.npy``): nothing is unpickled.
"""

from __future__ import annotations

import json
import sys

import numpy as np

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8") as handle:
        job = json.load(handle)
    from .base import Timing
    from .ort import OrtBackend

    backend = OrtBackend(
        threads=job["threads"],
        optimization=job["optimization"],
        sessions=job["sessions"],
        timing=Timing(**job["timing"]),
        isolate=False,
        flush_mib=1,
    )
    image = np.load(job["image"], allow_pickle=False)
    with open(job["model"], "rb") as handle:
        model = handle.read()
    json.dump({"samples": backend.time_sessions(model, image)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
