"""The SDK's exceptions.

Every error the SDK raises on purpose is a :class:`JdnasError`, so callers can catch one type.
Messages name the bad value (a file, a field, a key) and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "JdnasError",
    "ArgumentError",
    "DataError",
    "DetectorFileError",
    "UnsupportedModelError",
    "TrainingError",
    "NonFiniteLossError",
    "ArchError",
    "LatencyTableError",
    "NegativeResidualError",
    "SearchError",
    "OtherSettingsError",
    "ExportError",
    "StorageError",
    "LockError",
    "WorkdirError",
]


class JdnasError(Exception):
    """Base class of every error the SDK raises deliberately."""


class ArgumentError(JdnasError, TypeError, ValueError):
    """A public function was handed an argument of the wrong type or value (the message names it)."""


class DataError(JdnasError, ValueError):
    """A dataset (images folder or COCO instances JSON) is missing, malformed or inconsistent."""


class DetectorFileError(JdnasError, ValueError):
    """A detector file is missing, corrupt, truncated, foreign or from an unknown format version."""


class UnsupportedModelError(JdnasError, TypeError):
    """A model (or family/backbone name) lies outside what the SDK supports."""


class TrainingError(JdnasError, RuntimeError):
    """Training cannot start or cannot go on (bad options, mismatched checkpoint, ...)."""


class NonFiniteLossError(TrainingError):
    """A training loss became NaN or infinite; the last good checkpoint is kept."""


class ArchError(JdnasError, ValueError):
    """An architecture description or code is invalid."""


class LatencyTableError(JdnasError, ValueError):
    """A latency table is missing, corrupt or does not fit the request."""


class NegativeResidualError(LatencyTableError):
    """A detector ran faster end to end than its ops' entries add up to: no fixed entry fits."""


class SearchError(JdnasError, RuntimeError):
    """A compression search cannot start or go on."""


class OtherSettingsError(SearchError):
    """A workdir holds a search made with other settings: refused before this call did anything
    of that run's, so the call is no sitting of it (``discards_sitting``: its stopwatch, entered
    first, does not count it)."""

    discards_sitting = True


class ExportError(JdnasError, RuntimeError):
    """A model could not be exported or the export failed its checks."""


class StorageError(JdnasError, OSError):
    """A folder cannot be written: the disk is full, the file system is read-only or access is denied."""


class LockError(JdnasError, RuntimeError):
    """A workdir or table is in use by another run (the message names the holder)."""


class WorkdirError(JdnasError, ValueError):
    """A work folder holds a run made with other settings (or by an older version)."""
