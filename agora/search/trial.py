"""A fit of the search (a trial), where it runs (a runner), and what the search reads back from it.

The rounds (:mod:`agora.search.rounds`) hand trials to a :class:`TrialRunner` and read each
finished fit's result from its run dir (:func:`read_result`): nothing else of the algorithm knows
where fits run. A trial's recipe is complete (θ applied, its seed, and its ``trial:`` section: E's
seed and D's additions), so it reruns alone: ``agora-finetune <trial>/recipe.yaml``. The default
runner runs fits one after the other on this machine (:class:`agora.fit.run.LocalRunner`);
``search.runner: ray`` runs a round's fits at once on Ray (:class:`agora.search.ray_runner.RayRunner`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from agora.config import RunConfig
from agora.data.cards import load_task
from agora.data.evalset import EvalSet


@dataclasses.dataclass
class Trial:
    """One fit of a search."""

    name: str
    """``r<round>.<replay>-t<θ id>``, also the trial's run dir name."""
    theta: int
    cfg: RunConfig
    """Its complete, typed recipe (validated once, where the search's recipe entered)."""
    run_dir: Path
    seconds: float | None = None
    """Wall time of the fit, set by the runner when it finishes (the progress line shows it)."""


class TrialRunner(Protocol):
    def run(self, trials: Iterable[Trial], done: Callable[[Trial, str | None], None]) -> None:
        """Run the trials (one round's, any order, any concurrency); call ``done(trial, failure)`` as each
        finishes, in this process (the one writer of the search's state; ``failure``: why it failed, or
        None: its result is then read from its run dir)."""

    def close(self) -> None:
        """Release what the runner holds (Ray, where the runner started it); the search that built the
        runner calls it once, when the search ends."""


@dataclasses.dataclass
class TrialResult:
    score: float | None
    """E_sel score (the official metric); None when the fit failed."""
    dev_score: float | None
    scores: dict[str, float]
    mistakes: list[int]
    """idx of E_gen rows the student gets wrong (empty when E_gen is not evaluated)."""
    e_gen_rows: int
    epochs: int
    failed: str | None = None
    """Why the fit failed (diverged), or None."""
    model_dir: str | None = None
    loglik: float | None = None
    """Mean log-likelihood of E_sel's gold labels (the tie-breaker), where the fit measured it."""


def diverged(history: list[dict], score: float | None) -> str | None:
    """The reason a fit counts as failed: a non-finite training loss or score, else None."""
    for record in history:
        loss = record.get("train_loss")
        if loss is not None and not math.isfinite(loss):
            return f"diverged: training loss {loss} at epoch {record.get('epoch')}"
    if score is None or not math.isfinite(score):
        return f"diverged: selection score {score}"
    return None


def read_result(run_dir: Path, cfg: RunConfig) -> TrialResult:
    """A finished fit's result from its run dir: ``metrics.json`` (scores, per-epoch losses) and
    ``mistakes.json`` (E_gen's rows the student gets wrong, per model row: argmax != gold;
    ``|score - gold| > 0.5`` for regression)."""
    card = load_task(cfg.task)
    e = EvalSet.of(cfg, card)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    scores = metrics.get("final") or {}
    score = scores.get(f"{e.select}/{card.main_metric}")
    dev = scores.get(f"{card.select_split}/{card.main_metric}")
    found = run_dir / "mistakes.json"
    e_gen = (json.loads(found.read_text(encoding="utf-8")) if cfg.agora.enabled and found.is_file() else {}).get(
        e.gen, {"rows": 0, "mistakes": []})
    history = metrics.get("epochs") or []
    failed = diverged(history, score)
    return TrialResult(score=None if failed else float(score), dev_score=_finite(dev), scores=scores,
                       mistakes=[int(i) for i in e_gen["mistakes"]], e_gen_rows=int(e_gen["rows"]),
                       epochs=len(history), failed=failed, model_dir=metrics.get("best_model_dir"),
                       loglik=_finite(scores.get("e_sel/loglik")))


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
