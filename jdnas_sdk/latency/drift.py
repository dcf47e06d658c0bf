"""The machine's speed now against the table's: a guard for residuals measured long after the kernels.

A fixed entry is a residual, a whole detector's end-to-end time minus its op entries, and the op
entries were measured earlier in the profile (tens of minutes on a CPU). On a machine whose speed
moves over that time (shared hosts, turbo budgets), the subtraction hands the whole move to the
residual: on the benchmark Xeon the fixed entries of one profile ran 14-26% slower end to end than
the same detectors re-timed half an hour later, while the kernels agreed within 6%, and that alone
put a small student's estimate 27% high (re-measured in step with its kernels, 1.5%). So before and
after each fixed entry's detectors, a few of the profiled detector's largest ops (at its own input
size, the same for every entry) are timed again;
the ratio of now to the table is the machine's relative speed, and the end-to-end times are divided
by it: every entry of the table then speaks for the same machine state (the kernels').

The reference ops are the detector's largest by work (multiply-accumulates times uses), not by their
table time, and the speed is the median of their own ratios: ranked by the table, an entry that read
high by chance is picked first, and re-timed at its true cost it reads the machine several times faster
than it is (an independent check of stop 45: two outlier entries, 5.6 and 5.1 ms against 1.6 and 1.0
re-timed, read the machine 3x faster and scaled every fixed entry of that table 3x up).

Only a move beyond :data:`SPEED_TOLERANCE` is corrected. Smaller readings are mostly the reading's
own error: on an AMD EPYC the same reference ops read 0.92-1.02 of their entries depending on what
had just run (lower after small detectors), while the detectors around them ran at the speed the
accuracy benchmark later measured; scaling by those readings put 128 px students' estimates 13%
high on average (``benchmarks/results/epyc26/``).
"""

from __future__ import annotations

import statistics
from collections import Counter

from ..arch import Arch, DetectorSpec
from .backends import Backend
from .lower import lower
from .ops import OpKey, op_macs
from .table import LatencyTable

__all__ = ["reference_ops", "machine_speed", "applied_speed", "SPEED_TOLERANCE"]

#: Speed readings within this of 1.0 are left uncorrected (see the module docstring).
SPEED_TOLERANCE = 0.10


def reference_ops(
    table: LatencyTable, spec: DetectorSpec, arch: Arch, size: tuple[int, int], *, count: int
) -> list[tuple[OpKey, int]]:
    """The ``count`` ops of detector ``(spec, arch)`` at ``size`` with the most work in it
    (multiply-accumulates times uses) among those ``table`` holds, with their number of uses. Not
    ranked by the table's times: those favour an entry that read high by chance."""
    uses: Counter[OpKey] = Counter()
    for _, ops in lower(spec, arch, size).stages:
        for key, n in ops:
            if key in table.entries and table.entries[key].median_ms > 0:
                uses[key] += n
    ranked = sorted(uses.items(), key=lambda kn: (-op_macs(kn[0]) * kn[1], str(kn[0])))
    return ranked[:count]


def machine_speed(table: LatencyTable, backend: Backend, refs: list[tuple[OpKey, int]]) -> float:
    """How long ``refs`` take now over how long the table says (1.0: as when they were measured;
    1.2: everything runs 20% slower now): the median of each op's own ratio, so that one entry far
    off its true cost does not decide it. 1.0 without references."""
    ratios = [backend.measure_op(key).median_ms / table.entries[key].median_ms for key, _ in refs]
    return statistics.median(ratios) if ratios else 1.0


def applied_speed(reading: float) -> float:
    """The speed a residual is corrected by: ``reading`` where the machine moved by more than
    :data:`SPEED_TOLERANCE`, else 1.0 (no correction)."""
    return reading if abs(reading - 1) > SPEED_TOLERANCE else 1.0
