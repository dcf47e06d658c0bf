"""The elastic teacher pool: one detector holding every teacher, trained by progressive shrinking,
its largest first grown into a teacher stronger than the base."""

from .grow import GrownTeacher, grow_teacher
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
    "GrownTeacher",
    "grow_teacher",
]
