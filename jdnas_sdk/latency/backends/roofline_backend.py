"""The roofline "backend": fills a *modelled* table through the same profiling path as a device."""

from __future__ import annotations

import platform

from torch import nn

from ..._version import __version__
from ...errors import LatencyTableError
from ..ops import OpKey
from ..roofline import DeviceModel
from ..table import Entry, Fingerprint

__all__ = ["RooflineBackend"]


class RooflineBackend:
    """Models ops on ``model``'s device instead of running them (entries are labelled modelled)."""

    name = "roofline"

    def __init__(self, model: DeviceModel) -> None:
        self.model = model

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            device=self.model.name,
            backend="roofline",
            backend_version=f"jdnas_sdk {__version__}",
            precision=self.model.precision,
            batch=1,
            threads=1,
            optimization="modelled",
            machine=platform.machine(),
        )

    def measure_op(self, key: OpKey) -> Entry:
        return Entry(median_ms=self.model.op_ms(key), source="modelled")

    def fixed_entry(self, key: OpKey) -> Entry:
        return Entry(median_ms=self.model.op_ms(key), source="modelled")

    def measure_detector(self, model: nn.Module, image_size: tuple[int, int], *, seed: int = 0) -> Entry:
        raise LatencyTableError(
            f"{self.model.name} is modelled, not reachable: a detector cannot be run on it from here"
        )
