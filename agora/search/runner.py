"""Where a search's fits run: a small interface, and the local backend.

The rounds (:mod:`agora.search.loop`) hand a :class:`Trial` to a :class:`TrialRunner` and get a
:class:`TrialResult` back; nothing else of the algorithm knows where fits run. A trial is a
complete recipe (θ applied, plus its ``trial:`` section: E's seed and D's additions), so it runs
alone: ``agora-finetune <trial>/recipe.yaml``. Its result is read back from its run dir
(:func:`read_result`), which is what a cluster backend does too (submit, wait, read).

:class:`LocalRunner` runs fits one after the other on this machine: in this process, or, when the
trial's ``trainer:`` asks for several devices with a DDP strategy, as ``python -m agora.cli`` in a
child process, so that Lightning's launcher starts the ranks of that one fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol


@dataclasses.dataclass
class Trial:
    """One fit of a search: its complete recipe and its run dir (``recipe["output"]["dir"]``)."""

    name: str
    """``r<round>.<replay>-t<θ id>``, also the trial's run dir name."""
    recipe: dict[str, Any]
    run_dir: Path


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


def uses_ddp(recipe: dict) -> bool:
    trainer = recipe.get("trainer") or {}
    strategy, devices = str(trainer.get("strategy", "auto")), trainer.get("devices", "auto")
    return strategy.startswith("ddp") and devices not in (1, "1", [0]) or int(trainer.get("num_nodes", 1)) > 1


class LocalRunner:
    """Fits one after the other on this machine; a fit's printed output goes to ``<trial>/fit.log``."""

    def run(self, trial: Trial) -> TrialResult:
        import yaml

        from agora.config import validate_recipe

        cfg = validate_recipe(trial.recipe, source=f"trial {trial.name}")
        if trial.run_dir.exists():  # a fit killed midway: start it again
            shutil.rmtree(trial.run_dir)
        trial.run_dir.mkdir(parents=True)
        recipe_path = trial.run_dir / "recipe.yaml"
        recipe_path.write_text(yaml.safe_dump(trial.recipe, sort_keys=False), encoding="utf-8")
        with open(trial.run_dir / "fit.log", "w", encoding="utf-8") as log:
            if uses_ddp(trial.recipe):
                proc = subprocess.run([sys.executable, "-m", "agora.cli", str(recipe_path)], stdout=log,
                                      stderr=subprocess.STDOUT)
                if proc.returncode != 0:
                    raise RuntimeError(f"fit {trial.name} failed (exit {proc.returncode}); see {trial.run_dir}/fit.log")
            else:
                from agora.trainer import run_fit

                with contextlib.redirect_stdout(log):
                    run_fit(cfg, source=trial.name)
        shutil.rmtree(trial.run_dir / "checkpoints", ignore_errors=True)  # the export in best/ is kept
        return read_result(trial.run_dir, cfg)


def read_result(run_dir: Path, cfg) -> TrialResult:
    """A finished fit's result from its run dir: ``metrics.json`` (scores, per-epoch losses) and
    ``mistakes.json`` (E_gen's rows the student gets wrong, per model row, as
    :func:`agora.expand.find_mistakes`: argmax != gold; ``|score - gold| > 0.5`` for regression)."""
    from agora.tasks import load_task

    card = load_task(cfg.task)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    scores = metrics.get("final") or {}
    select = card.select_split if cfg.agora.eval_on == "dev" else "e_sel"
    score = scores.get(f"{select}/{card.main_metric}")
    dev = scores.get(f"{card.select_split}/{card.main_metric}")
    found = run_dir / "mistakes.json"
    e_gen = (json.loads(found.read_text(encoding="utf-8")) if cfg.agora.enabled and found.is_file() else {}).get(
        select if cfg.agora.eval_on == "dev" else "e_gen", {"rows": 0, "mistakes": []})
    mistakes = [int(i) for i in e_gen["mistakes"]]
    history = metrics.get("epochs") or []
    failed = diverged(history, score)
    return TrialResult(score=None if failed else float(score), dev_score=_finite(dev), scores=scores,
                       mistakes=mistakes, e_gen_rows=int(e_gen["rows"]), epochs=len(history), failed=failed,
                       model_dir=metrics.get("best_model_dir"))


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
