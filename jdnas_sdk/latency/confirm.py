"""Search latency on a table this machine measures: guess fast, confirm by measuring.

A search tries thousands of proposals; each new width, proposal count or input size is a kernel
or a fixed entry the table may lack. Measuring every one costs seconds each (minutes per
candidate), so proposals are *guessed*: missing kernels interpolated from measured ones of the
same kind. A guess can be far off, above all for the fixed entry (pre/post-processing, the RPN's
NMS, RoI pooling): a Faster R-CNN at 192 px spends 125 of its 163 ms there, and that part scales
with the proposal count far more than with the image area that interpolation scales it by (a
student with 300 proposals at 128 px was guessed at 144 ms and runs in 38; the base at 128 px
was guessed at 78 and runs in 141). So a proposal the guess admits is then *confirmed*: its
missing kernels and its fixed entry are measured (the fixed entry as the residual of one
end-to-end run over measured kernels), and the confirmed time is what the search keeps and
compares with its bound. Everything measured lands in the machine's table, so later guesses
and later searches are better and cheaper.
"""

from __future__ import annotations

import logging
import time

from ..arch import Arch, DetectorSpec
from ..student import Student
from .backends import Backend
from .estimate import Estimator
from .table import LatencyTable

__all__ = ["ConfirmedLatency"]

log = logging.getLogger(__name__)


class ConfirmedLatency:
    """:meth:`guess` (interpolated misses, fast) and :meth:`confirm` (missing entries measured on
    ``backend``, this machine, and saved into ``table``) for detectors with head ``spec`` on
    ``input_size`` images."""

    def __init__(self, table: LatencyTable, spec: DetectorSpec, input_size: tuple[int, int], backend: Backend) -> None:
        self.table, self.spec, self.input_size, self.backend = table, spec, input_size, backend
        self._measure = Estimator(table, spec, input_size, on_miss="measure", backend=backend)
        self._guess = self._fresh_guess()
        self.confirmed = 0
        self.measured = 0
        self.seconds = 0.0

    def _fresh_guess(self) -> Estimator:
        return Estimator(self.table, self.spec, self.input_size, on_miss="interpolate", backend=self.backend)

    @property
    def estimator(self) -> Estimator:
        """The guessing estimator (its misses interpolated), e.g. for a search's settings."""
        return self._guess

    @property
    def measuring(self) -> Estimator:
        """The confirming estimator (its misses measured), for breakdowns of confirmed students."""
        return self._measure

    def guess(self, arch: Arch | Student) -> float:
        """Estimated ms with missing entries interpolated: cheap, for ranking proposals."""
        return self._guess.total_ms(arch)

    def confirm(self, arch: Arch | Student) -> float:
        """Estimated ms with every missing entry measured first: what a candidate is held to."""
        before, began = len(self.table), time.monotonic()
        ms = self._measure.total_ms(arch)
        added = len(self.table) - before
        if added:  # the guess's caches hold interpolations of what is now measured
            self._guess = self._fresh_guess()
            self.measured += added
            self.seconds += time.monotonic() - began
            log.info(
                "confirmed %s at %.2f ms on %s: %d missing entries measured in %.0f s",
                arch,
                ms,
                self.table.target,
                added,
                time.monotonic() - began,
            )
        self.confirmed += 1
        return ms
