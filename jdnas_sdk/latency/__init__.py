"""Per-op latency tables: lowering a detector to fused kernels, tables, profiling, estimates.

Stages: :mod:`.ops` (the op vocabulary) -> :mod:`.lower` (detector -> ops) -> :mod:`.table`
(the file format) -> :mod:`.backends` (measuring) -> :mod:`.misses` (what an op the table lacks
costs), :mod:`.breakdown` (what an estimate says) -> :mod:`.estimate` (table -> milliseconds)
-> :mod:`.profile` (filling a table); :mod:`.roofline` models devices that cannot be measured.
"""

from __future__ import annotations

from .backends import BACKENDS, OrtBackend, TorchBackend, make_backend, tensorrt_available
from .confirm import ConfirmedLatency
from .estimate import Estimator, LatencyEstimate, OpLatency, estimate_latency, load_table
from .lower import Lowered, detector_input, fixed_key, lower
from .ops import OP_FIELDS, OpKey, op_bytes, op_macs
from .profile import open_table, profile
from .reach import reachable_ops
from .roofline import GPU_MODELS, DeviceModel
from .table import SCHEMA_VERSION, DeviceMismatchWarning, Entry, Fingerprint, LatencyTable, table_path

__all__ = [
    "OpKey",
    "OP_FIELDS",
    "op_macs",
    "op_bytes",
    "Lowered",
    "lower",
    "detector_input",
    "fixed_key",
    "reachable_ops",
    "LatencyTable",
    "Entry",
    "Fingerprint",
    "SCHEMA_VERSION",
    "DeviceMismatchWarning",
    "table_path",
    "BACKENDS",
    "make_backend",
    "OrtBackend",
    "TorchBackend",
    "tensorrt_available",
    "Estimator",
    "ConfirmedLatency",
    "LatencyEstimate",
    "OpLatency",
    "estimate_latency",
    "load_table",
    "profile",
    "open_table",
    "DeviceModel",
    "GPU_MODELS",
]
