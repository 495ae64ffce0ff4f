"""``AgoraTrainer``: one recipe in, a finished run directory out.

A recipe without ``search:`` is one fit (:func:`agora.fit.run.run_fit`), extended by Agora
(:func:`agora.method.extension.agora_extension`: plain fine-tuning with ``agora.enabled: false``,
the baseline of every comparison). With ``search:`` it is Agora's rounds over Θ
(:func:`agora.search.run_search`), which return the best student of all rounds.
"""

from __future__ import annotations

from typing import Any

from agora.config import RunConfig, load_recipe, validate_recipe
from agora.fit.run import RunResult, run_fit
from agora.method.extension import agora_extension

__all__ = ["AgoraTrainer", "RunResult"]


class AgoraTrainer:
    """Runs a recipe. ``AgoraTrainer.from_recipe("rte", trainer__max_epochs=1).fit()``."""

    def __init__(self, cfg: RunConfig, source: str | None = None):
        self.cfg = cfg
        self.source = source

    @classmethod
    def from_recipe(cls, path_or_name, **overrides) -> "AgoraTrainer":
        """Load a recipe file or shipped name; overrides use dotted or ``__`` keys, or sections."""
        return cls(load_recipe(path_or_name, overrides), source=str(path_or_name))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgoraTrainer":
        return cls(validate_recipe(data, source="<dict>"))

    def fit(self) -> RunResult:
        """One fit, or with a ``search:`` section Agora's rounds over Θ (a :class:`agora.search.SearchResult`
        for the best student of all rounds). A user's generator is first tried on one real row."""
        self.check_generators()
        if self.cfg.search is not None:
            from agora.search import run_search

            return run_search(self.cfg, source=self.source)
        return run_fit(self.cfg, source=self.source, extend=agora_extension)

    def check_generators(self) -> None:
        """Call every user generator of the recipe (and of its θs) on the first train row and check its
        answer, before the run dir exists (:mod:`agora.method.generator_check`)."""
        from agora.data.cards import load_task
        from agora.method.generator_check import check_recipe_generators

        if self.cfg.agora.enabled or self.cfg.search is not None:
            check_recipe_generators(self.cfg, load_task(self.cfg.task))
