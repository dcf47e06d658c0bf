"""The search: the joint loop (morphism + dynamic distillation), the pipeline baseline, the archive,
and the executors that train candidates (in this process, or as Ray tasks)."""

from .archive import Archive, Candidate, load_candidate, pareto_front
from .executor import CandidateJob, CandidateOutcome, Executor, LocalExecutor, run_candidate
from .joint import SearchConfig, joint_search, latency_bound
from .moves import moves, propose
from .pipeline import pipeline_search, uniform_prune
from .ray_executor import RayExecutor
from .rounds import make_executor

__all__ = [
    "Archive",
    "Candidate",
    "pareto_front",
    "load_candidate",
    "SearchConfig",
    "joint_search",
    "latency_bound",
    "moves",
    "propose",
    "pipeline_search",
    "uniform_prune",
    "CandidateJob",
    "CandidateOutcome",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "run_candidate",
]
