"""Reports: what a pool, a search or a benchmark produced, as Markdown (and JSON)."""

from .pool import PoolReport, PoolRow, pool_report
from .search import write_report

__all__ = ["PoolReport", "PoolRow", "pool_report", "write_report"]
