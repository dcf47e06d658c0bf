"""The search: the joint loop (morphism + dynamic distillation), the pipeline baseline, the archive."""

from .archive import Archive, Candidate, pareto_front
from .joint import SearchConfig, joint_search, latency_bound, moves, propose
from .pipeline import pipeline_search, uniform_prune

__all__ = ["Archive", "Candidate", "pareto_front", "SearchConfig", "joint_search", "latency_bound", "moves", "propose",
           "pipeline_search", "uniform_prune"]
