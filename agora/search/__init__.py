"""Agora's rounds over a hyperparameter space: ``AgoraTrainer`` runs this when a recipe has ``search:``.

```
<run>/config.yaml, metrics.json, best/, predictions/   the returned student, as a single run leaves them
<run>/report.md, plots/*.png                            rounds, pruning, D's growth, the final dev score
<run>/search/state.json, added.jsonl                    resume state and D's additions (atomic)
<run>/search/added-<n>.jsonl                            D's additions as the fits of a round saw them
<run>/trials/r<round>.<replay>-t<θ>/                    each fit's run dir: recipe.yaml (reruns the fit
                                                        alone), fit.log, metrics, predictions; best/
                                                        only for the best fit, no checkpoints
```

Modules: :mod:`~agora.search.space` (Θ, pruning), :mod:`~agora.search.loop` (the rounds, the
plan, the state), :mod:`~agora.search.grow` (growing D), :mod:`~agora.search.runner` (where fits
run), :mod:`~agora.search.report`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from agora.config import RunConfig
from agora.errors import RecipeError
from agora.search.loop import Plan, new_state, plan, run_rounds, save_json, trial_base, write_rows
from agora.search.runner import LocalRunner, Trial, TrialResult, TrialRunner
from agora.trainer import RunResult

__all__ = ["SearchResult", "run_search", "plan", "Plan", "Trial", "TrialResult", "TrialRunner", "LocalRunner"]


@dataclasses.dataclass
class SearchResult(RunResult):
    """A :class:`RunResult` for the returned student, plus the search: ``main_score`` is its
    official dev score, ``selection_score`` its E_sel score."""

    selection_score: float | None = None
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    report: Path | None = None


def run_search(cfg: RunConfig, source: str | None = None, runner: TrialRunner | None = None,
               progress=print) -> SearchResult:
    """Run (or resume) the search of ``cfg.search``; see :mod:`agora.search.loop` for the algorithm."""
    from agora import rundir
    from agora.tasks import load_task

    from agora.trainer import with_resolved_precision

    source = source or "<recipe>"
    cfg, precision = with_resolved_precision(cfg, announce=None)  # once, for every fit of the search
    p = plan(cfg, source)
    card = load_task(cfg.task)
    check_e_fits(cfg, card, source)
    run_dir = rundir.resolve_run_dir(cfg.output.dir, card.name)
    progress(p.text(cfg) + f"\n  {precision.line()}")
    state_path, added_path = run_dir / "search" / "state.json", run_dir / "search" / "added.jsonl"
    state = load_state(state_path, cfg, run_dir) or new_state(cfg, p)
    if state["fits"]:
        progress(f"[search] resuming {run_dir}: {state['fits']} fits done, {len(state['rounds'])} round(s) started")
    rundir.write_config(run_dir, cfg.to_dict(), f"# resolved recipe from {source}; rerun (resumes) with: "
                                                f"agora-finetune {run_dir}/config.yaml\n# {precision.line()}")
    expander = None
    if cfg.agora.enabled:
        from agora.search.grow import TeacherExpander

        rows = read_rows(added_path)[: state["d_rows"]]
        expander = TeacherExpander(cfg, cfg.seed, rows)

    def save(st: dict) -> None:
        if expander is not None:
            write_rows(added_path, expander.rows[: st["d_rows"]])
        save_json(state_path, st)

    def make_trial(rnd: dict, tid: int) -> Trial:
        recipe = json.loads(json.dumps(p.recipes[tid]))
        recipe["seed"] = int(recipe["seed"]) + rnd["seed_offset"]
        name = f"r{rnd['round']}.{rnd['replay']}-t{tid}"
        recipe["output"]["dir"] = str(run_dir / "trials" / name)
        extra = None
        if expander is not None and state["d_rows"]:  # D's additions as this round saw them (kept for reruns)
            extra = run_dir / "search" / f"added-{state['d_rows']}.jsonl"
            write_rows(extra, expander.rows[: state["d_rows"]])
        recipe["trial"] = {"e_seed": cfg.seed, "extra_rows": str(extra.resolve()) if extra else None}
        return Trial(name=name, recipe=recipe, run_dir=run_dir / "trials" / name)

    def keep_one_export(record: dict, st: dict) -> None:
        best = st["best"]
        for rnd in st["rounds"]:
            for fit in rnd["fits"].values():
                if fit["model_dir"] and (best is None or fit["trial"] != best["trial"]):
                    shutil.rmtree(fit["model_dir"], ignore_errors=True)

    run_rounds(cfg, p, state, runner or LocalRunner(), make_trial, expander, save, progress, keep_one_export)
    return finish(cfg, card, run_dir, state, p, source, progress, precision)


def split_sizes(cfg: RunConfig, card) -> tuple[int, int]:
    """Rows of train and of the selection (dev) split, after ``data.max_*_samples``."""
    from agora.paths import cache_dir, data_dir
    from agora.splits import load_split

    def rows(split: str, limit: int | None) -> int:
        n = len(load_split(card, split, data_dir(cfg.data.dir), cfg.data.source, cache_dir(cfg.data.cache_dir),
                           cfg.data.files.get(split)))
        return n if limit is None else min(n, limit)

    n_dev = rows(card.select_split, cfg.data.max_eval_samples) if card.eval_splits else 0
    return rows(card.train_split, cfg.data.max_train_samples), n_dev


def d_size(cfg: RunConfig, card) -> int:
    """Rows of D before any addition: train minus E (all of train with ``eval_on: dev``)."""
    from agora.evalset import default_e_size

    n_train, n_dev = split_sizes(cfg, card)
    if cfg.agora.eval_on == "dev":
        return n_train
    return n_train - (cfg.agora.e_size or default_e_size(n_train, n_dev or n_train, cfg.agora.e_max_fraction))


def check_e_fits(cfg: RunConfig, card, source: str) -> None:
    """E must leave D a row and give each half one: checked on the train split's size, before any fit."""
    if cfg.agora.eval_on == "dev" or cfg.agora.e_size is None:
        return
    n = split_sizes(cfg, card)[0]
    if cfg.agora.e_size > n - 1:
        raise RecipeError(f"{source}: agora.e_size {cfg.agora.e_size} is not smaller than the training set "
                          f"({n} rows{' after data.max_train_samples' if cfg.data.max_train_samples else ''}): "
                          f"set agora.e_size to at most {n - 1}, or leave it unset (the dev size, capped at "
                          f"agora.e_max_fraction of train)")


def load_state(path: Path, cfg: RunConfig, run_dir: Path) -> dict | None:
    from agora.search.loop import STATE_VERSION, fingerprint

    if not path.is_file():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("version") != STATE_VERSION or state.get("fingerprint") != fingerprint(cfg):
        raise RecipeError(f"{run_dir} holds a different search (its recipe differs from this one): "
                          "use another output.dir, or rerun with the recipe saved in its config.yaml")
    return state


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def finish(cfg: RunConfig, card, run_dir: Path, state: dict, p: Plan, source: str, progress, precision) -> SearchResult:
    """Copy the best student's export and predictions to the run dir, write metrics, report, summary."""
    from agora import rundir
    from agora.search.report import write_report

    best = state["best"]
    if best is None:
        raise RecipeError(f"{source}: every fit of the search failed; see {run_dir}/search/state.json")
    trial_dir = run_dir / "trials" / best["trial"]
    best_dir = run_dir / "best"
    if (trial_dir / "best").is_dir():
        shutil.rmtree(best_dir, ignore_errors=True)
        shutil.copytree(trial_dir / "best", best_dir)
    if (trial_dir / "predictions").is_dir():
        shutil.rmtree(run_dir / "predictions", ignore_errors=True)
        shutil.copytree(trial_dir / "predictions", run_dir / "predictions")
    fit = next(f for r in state["rounds"] for f in r["fits"].values() if f["trial"] == best["trial"])
    scores = fit["scores"]
    dev_metric = f"{card.select_split}/{card.main_metric}"
    selection = f"{'e_sel' if cfg.agora.eval_on != 'dev' else card.select_split}/{card.main_metric}"
    summary = {"task": card.name, "eval_on": cfg.agora.eval_on, "selection": selection, "dev_metric": dev_metric,
               "dev_score": best["dev_score"], "agora": cfg.agora.enabled, "d_original": d_size(cfg, card)}
    report = write_report(run_dir, state, summary, p.text(cfg))
    predictions = {path.stem: path for path in sorted((run_dir / "predictions").glob("*.jsonl"))}
    rundir.write_metrics(run_dir, {
        "task": card.name, "main_metric": dev_metric, "main_score": best["dev_score"], "final": scores,
        "best_model_dir": str(best_dir) if best_dir.is_dir() else None,
        "predictions": {k: str(v) for k, v in predictions.items()},
        "precision": {"value": precision.precision, "requested": precision.requested, "why": precision.reason},
        "search": {"best": best, "selection_metric": selection, "eval_on": cfg.agora.eval_on,
                   "agora": cfg.agora.enabled, "rounds": len(state["rounds"]), "fits": state["fits"],
                   "epochs": state["epochs"], "stopped": state["stopped"], "generated_rows": state["d_rows"],
                   "teacher_calls": state["teacher_calls"],
                   "replays": sum(1 for r in state["rounds"] if r["replay"]), "report": str(report)},
    })
    extra = {"selection (" + selection + ")": _pct(best["score"]), "rounds / fits": f"{len(state['rounds'])} / {state['fits']}",
             "generated rows in D": str(state["d_rows"]), "teacher calls": str(state["teacher_calls"]),
             "stopped": str(state["stopped"]), "report": str(report)}
    progress("\n" + rundir.summary_table(f"{card.name} search", {dev_metric: best["dev_score"]}, run_dir,
                                         best_dir if best_dir.is_dir() else None, extra))
    return SearchResult(run_dir=run_dir, best_model_dir=best_dir if best_dir.is_dir() else None, scores=scores,
                        main_score=best["dev_score"], predictions=predictions, selection_score=best["score"],
                        state=state, report=report)


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.2f}"
