"""Search latency on a table this machine measures: guess fast, confirm by measuring.

A search tries thousands of proposals; each new width, proposal count or input size is a kernel
or a fixed entry the table may lack. Measuring every one costs a third of a second each (and an
end-to-end run per new head setting), so proposals are *guessed*: missing entries interpolated
from measured ones of the same kind (:mod:`jdnas_sdk.latency.misses`). A guess can be far off,
above all for the fixed entry (pre/post-processing, the RPN's NMS, RoI pooling): a Faster R-CNN
at 192 px spends 125 of its 163 ms there (an ad-hoc probe on one Intel Xeon, not a kept
benchmark). Under the old rule, which scaled that entry by image
area, a student with 300 proposals at 128 px was guessed at 144 ms and runs in 38, the base at
128 px at 78 ms and it runs in 141. So a proposal the guess admits is then *confirmed*: its
missing kernels and its fixed entry are measured (the fixed entry as the residual of one
end-to-end run over measured kernels), and the confirmed time is what the search keeps and
compares with its bound. Everything measured lands in the machine's table.

Resuming: the guesses come from the table as the search found it, pinned in the search's folder
(:meth:`ConfirmedLatency.pin`), not from the table as confirmations grow it; confirmations read
back what they measured. So a killed search, run again, proposes exactly what it proposed before.
Across runs from scratch, a search on a measured table is as repeatable as its measurements.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .._io import atomic_write_json
from ..arch import Arch, DetectorSpec
from ..student import Student
from .backends import Backend
from .estimate import Estimator
from .local import measure_missing_ops
from .table import LatencyTable

__all__ = ["ConfirmedLatency"]

log = logging.getLogger(__name__)


class ConfirmedLatency:
    """:meth:`guess` (interpolated misses, fast) and :meth:`confirm` (missing entries measured on
    ``backend``, this machine, and saved into ``table``) for detectors with head ``spec`` on
    ``input_size`` images. Unpinned, guesses learn from each confirmation; pinned
    (:meth:`pin`), they come from the pinned table alone. ``progress``: a bar while a confirmation
    measures kernels (a new input size or width can need hundreds: minutes, which a caller of the
    Python API, who sees no log, would otherwise watch in silence). ``measure_on``: the detector a new
    head setting's fixed entry is timed on, for a student (:class:`~jdnas_sdk.latency.Estimator`): the
    search gives its trained base morphed to the candidate (its lineage's weights, untrained at the new
    shape, rather than random ones). An entry the table already holds is reused as it is."""

    def __init__(
        self,
        table: LatencyTable,
        spec: DetectorSpec,
        input_size: tuple[int, int],
        backend: Backend,
        *,
        progress: bool = False,
        measure_on: Callable[[Student], nn.Module] | None = None,
    ) -> None:
        self.table, self.spec, self.input_size, self.backend = table, spec, input_size, backend
        self.progress = progress
        self._measure = Estimator(table, spec, input_size, on_miss="measure", backend=backend, measure_on=measure_on)
        self._guess = self._guessing(table)
        self.confirmed = 0
        self.measured = 0
        self.seconds = 0.0

    def pin(self, path: Path) -> None:
        """Guess from the table as saved at ``path`` from now on; written there (the table as it
        is now) when absent: a search pins the table it started with in its folder, so that a
        resumed search guesses, and so proposes, as the killed one did."""
        if not path.is_file():
            atomic_write_json(path, self.table.to_json())
        self._guess = self._guessing(LatencyTable.load(path))

    def _guessing(self, table: LatencyTable) -> Estimator:
        return Estimator(table, self.spec, self.input_size, on_miss="interpolate", backend=self.backend)

    @property
    def estimator(self) -> Estimator:
        """The guessing estimator (its misses interpolated), e.g. for a search's settings."""
        return self._guess

    @property
    def measuring(self) -> Estimator:
        """The confirming estimator (its misses measured), for breakdowns of confirmed students."""
        return self._measure

    def to_json(self) -> dict[str, float | int | bool]:
        """This process's confirmation work (a resumed search counts only its own): candidates
        confirmed, table entries measured for them and the seconds that took, and whether guesses
        came from a pinned table."""
        return {
            "confirmed": self.confirmed,
            "entries_measured": self.measured,
            "seconds": round(self.seconds, 3),
            "pinned": self._guess.table is not self.table,
        }

    def guess(self, arch: Arch | Student) -> float:
        """Estimated ms with missing entries interpolated: cheap, for ranking proposals."""
        return self._guess.total_ms(arch)

    def confirm(self, arch: Arch | Student) -> float:
        """Estimated ms with every missing entry measured first: what a candidate is held to."""
        before, began = len(self.table), time.monotonic()
        student = arch if isinstance(arch, Student) else Student(arch)
        measure_missing_ops(  # the kernels, counted, with a bar; the fixed entry below (one whole-detector timing)
            self.table,
            student.spec(self.spec),
            student.arch,
            self.input_size,
            backend=self.backend,
            progress=self.progress,
        )
        ms = self._measure.total_ms(arch)  # a negative residual is clamped to 0 there (misses.clamped_residual)
        added, spent = len(self.table) - before, time.monotonic() - began
        if added:
            if self._guess.table is self.table:  # unpinned: its caches hold interpolations of what is now measured
                self._guess = self._guessing(self.table)
            self.measured += added
            self.seconds += spent
            log.info(
                "confirmed %s at %.2f ms on %s: %d missing entries measured in %.0f s",
                arch,
                ms,
                self.table.target,
                added,
                spent,
            )
        self.confirmed += 1
        return ms
