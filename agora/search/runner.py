"""Where a search's fits run: a small interface, and the local backend.

The rounds (:mod:`agora.search.loop`) hand a :class:`Trial` to a :class:`TrialRunner` and get a
:class:`TrialResult` back; nothing else of the algorithm knows where fits run. :class:`LocalRunner`
runs them one after the other in this process with :func:`agora.trainer.run_fit` (each fit may
itself use Lightning DDP through the recipe's ``trainer:``). A cluster backend implements
``run`` the same way (submit, wait, read the trial's run dir).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclasses.dataclass
class Trial:
    """One fit of a search: the trial's recipe (θ applied) and what the rounds add to it."""

    name: str
    """``r<round>.<replay>-t<θ id>``, also the trial's run dir name."""
    recipe: dict[str, Any]
    run_dir: Path
    e_seed: int
    extra_rows: Path | None


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


class TrialRunner(Protocol):
    def run(self, trial: Trial) -> TrialResult: ...


def diverged(history: list[dict], score: float | None) -> str | None:
    """The reason a fit counts as failed: a non-finite training loss or score, else None."""
    for record in history:
        loss = record.get("train_loss")
        if loss is not None and not math.isfinite(loss):
            return f"diverged: training loss {loss} at epoch {record.get('epoch')}"
    if score is None or not math.isfinite(score):
        return f"diverged: selection score {score}"
    return None


class LocalRunner:
    """Fits one after the other in this process; each fit's printed output goes to ``<trial>/fit.log``."""

    def run(self, trial: Trial) -> TrialResult:
        from agora.config import validate_recipe
        from agora.datamodule import TrialInputs
        from agora.expand import find_mistakes
        from agora.tasks import load_task
        from agora.trainer import run_fit

        cfg = validate_recipe(trial.recipe, source=f"trial {trial.name}")
        if trial.run_dir.exists():  # a fit killed midway: start it again
            shutil.rmtree(trial.run_dir)
        trial.run_dir.mkdir(parents=True)
        inputs = TrialInputs(e_seed=trial.e_seed, extra_rows=str(trial.extra_rows) if trial.extra_rows else None)
        with open(trial.run_dir / "fit.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            result = run_fit(cfg, source=trial.name, trial=inputs)
        shutil.rmtree(trial.run_dir / "checkpoints", ignore_errors=True)  # the export in best/ is kept
        card = load_task(cfg.task)
        select = card.select_split if cfg.agora.eval_on == "dev" else "e_sel"
        score = result.scores.get(f"{select}/{card.main_metric}")
        dev = result.scores.get(f"{card.select_split}/{card.main_metric}")
        e_gen = result.eval.get("e_gen") or (result.eval.get(card.select_split) if cfg.agora.eval_on == "dev" else None)
        mistakes: list[int] = []
        if e_gen:
            mask = find_mistakes(e_gen["logits"], e_gen["labels"], card.format == "regression")
            mistakes = [int(i) for i in np.asarray(e_gen["idx"])[mask]]
        failed = diverged(result.history, score)
        return TrialResult(score=None if failed else float(score), dev_score=_finite(dev), scores=result.scores,
                           mistakes=mistakes, e_gen_rows=len(e_gen["idx"]) if e_gen else 0,
                           epochs=len(result.history), failed=failed,
                           model_dir=str(result.best_model_dir) if result.best_model_dir else None)


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
