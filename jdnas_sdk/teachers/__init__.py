"""The elastic teacher pool: one detector holding every teacher, trained by progressive shrinking."""

from .pool import DEFAULT_TEACHER_WIDTHS, POOL_KIND, TeacherConfig, TeacherPool, recalibrate_bn, reorder_by_importance
from .shrink import ShrinkConfig, phase_of, train_pool, train_pool_to_file

__all__ = [
    "TeacherConfig",
    "TeacherPool",
    "DEFAULT_TEACHER_WIDTHS",
    "POOL_KIND",
    "recalibrate_bn",
    "reorder_by_importance",
    "ShrinkConfig",
    "train_pool",
    "train_pool_to_file",
    "phase_of",
]
