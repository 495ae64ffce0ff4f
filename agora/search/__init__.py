"""Agora's rounds over a hyperparameter space Θ (the fourth stage a run crosses).

Modules: :mod:`~agora.search.rounds` (the entry and the loop), :mod:`~agora.search.plan` (Θ, the
budget and E, checked before any fit), :mod:`~agora.search.pruning` (pruning),
:mod:`~agora.search.state` (the typed, resumable state), :mod:`~agora.search.grow` (growing D),
:mod:`~agora.search.trial` (a fit, where it runs, its result), :mod:`~agora.search.report` (what the
search leaves behind).
"""

from agora.fit.run import LocalRunner
from agora.search.plan import Plan, plan
from agora.search.report import SearchResult
from agora.search.rounds import run_search
from agora.search.state import SearchState
from agora.search.trial import Trial, TrialResult, TrialRunner

__all__ = ["LocalRunner", "Plan", "SearchResult", "SearchState", "Trial", "TrialResult", "TrialRunner", "plan",
           "run_search"]
