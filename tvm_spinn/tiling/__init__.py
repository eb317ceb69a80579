"""Tiling: the resource and cycle model of a core and a board (:mod:`.resources`) and the
one planner (:mod:`.planner`) with a strategy per op kind (:mod:`.dense`, :mod:`.tensor`)."""
from .planner import GraphPlan, plan_graph  # noqa: F401
