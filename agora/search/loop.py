"""Agora's rounds: train every θ of Θ on D, rank on E_sel, grow D from the best student's
mistakes, prune Θ or replay, until Θ is empty, E has no mistakes or the budget is spent.

Method card
-----------
What (de Wynter 2020, arXiv 2010.07990; AGORA.md "The loop")::

    while Θ is not empty:
        train one student per θ on D (from f0 each time); score each on E_sel
        f* = the round's best; if it beats the best so far, it is the new best
        if the best did not improve and replays are left: replay (same Θ, fresh seeds)
        else prune Θ (:func:`agora.search.space.prune`)
        generate from f*'s mistakes on E_gen with G, label with S, filter, append to D
    return the best student seen

Our choices: every round (a replay too) grows D, so a replay trains on fresh G samples; a replay's
fits use ``seed + replay_seed_offset x replay``; a round starts only if the budget covers all its
fits (ranking a partial round would be unfair); "improved" is strictly better; no expansion after
the last round. With ``agora.enabled: false`` nothing is generated and no teacher is used: the same
Θ, E and selection rule give the plain fine-tuning baseline.

Resume: ``<run>/search/state.json`` (rounds, scores, Θ left, the best student) and
``<run>/search/added.jsonl`` (D's additions) are written atomically after every finished fit and
round; rerunning the same recipe with the same ``output.dir`` picks up after the last finished fit
(a fit killed midway is run again from its start).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agora.config import RunConfig, apply_overrides, validate_recipe
from agora.errors import RecipeError
from agora.search.runner import Trial, TrialResult, TrialRunner
from agora.search.space import describe, max_fits, prune, thetas

STATE_VERSION = 1
ADDED_IDX_BASE = 1 << 32
"""D's additions get idx ``ADDED_IDX_BASE + j``: above any dataset idx, below the callback's
generated rows (``agora.callback.GENERATED_IDX_BASE``), so the callback treats them as rows of D."""


# ---------------------------------------------------------------------------------- the plan
@dataclasses.dataclass
class Plan:
    """Θ and what the search may cost, known (and printed) before the first fit."""

    names: list[str]
    thetas: list[tuple]
    grid_size: int
    recipes: list[dict]
    """The recipe of each θ (θ applied, ``search`` removed), validated."""
    epochs: list[int]
    worst_case_fits: int
    fit_cap: int | None
    source: str

    def text(self, cfg: RunConfig) -> str:
        s = cfg.search
        shape = " x ".join(f"{n} {len(v)}" for n, v in s.space.items()) if s.space else f"{len(self.thetas)} listed"
        lines = [f"search: Θ has {self.grid_size} θs ({shape}); order: {', '.join(self.names)}"]
        if len(self.thetas) < self.grid_size:
            lines.append(f"  budget.max_thetas keeps a seeded sample of {len(self.thetas)}")
        most = self.worst_case_fits if self.fit_cap is None else min(self.worst_case_fits, self.fit_cap)
        lines.append(f"  at most {most} fits of {max(self.epochs)} epoch(s) each (round 0: {len(self.thetas)} fits; "
                     f"min_prune_fraction {s.min_prune_fraction:g}, max_replays {s.max_replays}"
                     + (f", budget {self.fit_cap} fits" if self.fit_cap is not None else "") + ")")
        lines.append(f"  E: {'the dev set (paper-faithful, eval_on: dev)' if cfg.agora.eval_on == 'dev' else 'carved from train (E_gen / E_sel)'}; "
                     f"Agora {'on' if cfg.agora.enabled else 'off (plain fine-tuning baseline)'}")
        return "\n".join(lines)


def trial_base(cfg: RunConfig) -> dict[str, Any]:
    data = cfg.to_dict()
    data.pop("search", None)
    data["output"] = {**data["output"], "save_checkpoints": False, "resume_from": None, "export": True}
    return data


def plan(cfg: RunConfig, source: str = "<recipe>") -> Plan:
    """Θ, every θ's recipe validated, the budget checked: all errors before any fit."""
    s = cfg.search
    names, theta_list, grid_size = thetas(s, cfg.seed)
    base = trial_base(cfg)
    recipes, epochs = [], []
    for theta in theta_list:
        data = apply_overrides(base, dict(zip(names, theta)))
        try:
            trial_cfg = validate_recipe(data, source=f"{source} (search θ {describe(names, theta)})")
        except RecipeError as err:
            raise RecipeError(f"{err}\n  fix the value in search.{'space' if s.space else 'trials'}") from None
        recipe = trial_cfg.to_dict()
        recipe.pop("search")
        recipes.append(recipe)
        epochs.append(int(trial_cfg.trainer.get("max_epochs") or 1))
    if cfg.agora.enabled and not cfg.teacher.path:
        raise RecipeError(f"{source}: a search with agora.enabled labels generated rows with a teacher: set "
                          "teacher.path (or agora.enabled: false for the plain baseline)")
    b = s.budget
    caps = []
    if b.max_fits is not None:
        caps.append(b.max_fits)
    if b.max_epochs is not None:
        if b.max_epochs < max(epochs):
            raise RecipeError(f"{source}: search.budget.max_epochs {b.max_epochs} is smaller than one fit "
                              f"({max(epochs)} epochs, trainer.max_epochs): raise it or lower trainer.max_epochs")
        caps.append(b.max_epochs // max(epochs))
    cap = min(caps) if caps else None
    if cap is not None and cap < len(theta_list):
        raise RecipeError(f"{source}: the budget ({cap} fits) is smaller than round 0 ({len(theta_list)} θs, one "
                          f"fit each): raise search.budget.max_fits / max_epochs or set search.budget.max_thetas <= {cap}")
    worst = max_fits(len(theta_list), s.min_prune_fraction, s.max_replays, s.max_rounds)
    return Plan(names, theta_list, grid_size, recipes, epochs, worst, cap, source)


# ---------------------------------------------------------------------------------- growing D
class Expander(Protocol):
    """Grows D between rounds; holds D's additions (rows as written to ``added.jsonl``)."""

    rows: list[dict]

    def grow(self, mistakes: list[int], key: str) -> dict: ...


# ---------------------------------------------------------------------------------- the state
def new_state(cfg: RunConfig, p: Plan) -> dict[str, Any]:
    return {"version": STATE_VERSION, "fingerprint": fingerprint(cfg), "names": p.names,
            "thetas": [list(t) for t in p.thetas], "remaining": list(range(len(p.thetas))),
            "rounds": [], "best": None, "fits": 0, "epochs": 0, "d_rows": 0, "teacher_calls": 0,
            "stopped": None}


def fingerprint(cfg: RunConfig) -> str:
    data = cfg.to_dict()
    data.pop("output", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def save_json(path: Path, obj: Any) -> None:
    from agora.rundir import atomic_write

    atomic_write(path, json.dumps(obj, indent=1, default=str) + "\n")


def write_rows(path: Path, rows: list[dict]) -> None:
    from agora.rundir import atomic_write

    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------------------------- the rounds
def run_rounds(cfg: RunConfig, p: Plan, state: dict, runner: TrialRunner, make_trial: Callable[[dict, int], Trial],
               expander: Expander | None, save: Callable[[dict], None],
               progress: Callable[[str], None] = print, on_fit: Callable[[dict, dict], None] | None = None) -> dict:
    """The loop over rounds on ``state`` (modified and saved after every fit and round).

    ``make_trial(round record, θ id)`` builds a fit; ``expander`` is None with Agora off;
    ``on_fit(record, state)`` runs after each fit is recorded and saved (the search keeps one export).
    """
    s = cfg.search
    while state["stopped"] is None:
        rnd = state["rounds"][-1] if state["rounds"] and not state["rounds"][-1]["done"] else None
        if rnd is None:
            replay = state["rounds"][-1]["next_replay"] if state["rounds"] else 0
            rnd = {"round": len(state["rounds"]), "replay": replay, "seed_offset": replay * s.replay_seed_offset,
                   "thetas": list(state["remaining"]), "fits": {}, "done": False,
                   "best_before": state["best"]["score"] if state["best"] else None,
                   "d_rows": state["d_rows"]}
            state["rounds"].append(rnd)
        for tid in rnd["thetas"]:
            if str(tid) in rnd["fits"]:
                continue
            trial = make_trial(rnd, tid)
            result = runner.run(trial)
            record = fit_record(trial, tid, rnd, result)
            rnd["fits"][str(tid)] = record
            state["fits"] += 1
            state["epochs"] += result.epochs
            new_best = record["score"] is not None and (state["best"] is None or record["score"] > state["best"]["score"])
            if new_best:
                state["best"] = {k: record[k] for k in ("trial", "theta", "round", "score", "dev_score", "model_dir")}
            save(state)
            if on_fit is not None:  # after the save: a kill in between never loses the saved best's export
                on_fit(record, state)
            progress(progress_line(p, state, rnd, record, new_best))
        close_round(cfg, p, state, rnd, expander)
        save(state)
    return state


def fit_record(trial: Trial, tid: int, rnd: dict, result: TrialResult) -> dict:
    return {"trial": trial.name, "theta": tid, "round": rnd["round"], "replay": rnd["replay"],
            "seed": trial.recipe.get("seed"), "score": result.score, "dev_score": result.dev_score,
            "failed": result.failed, "mistakes": result.mistakes, "e_gen_rows": result.e_gen_rows,
            "epochs": result.epochs, "model_dir": result.model_dir,
            "scores": {k: v for k, v in result.scores.items() if isinstance(v, (int, float))}}


def progress_line(p: Plan, state: dict, rnd: dict, record: dict, new_best: bool) -> str:
    theta = describe(p.names, tuple(state["thetas"][record["theta"]]))
    where = f"round {rnd['round']}" + (f" (replay {rnd['replay']})" if rnd["replay"] else "")
    done = len(rnd["fits"])
    if record["failed"]:
        outcome = f"FAILED ({record['failed']})"
    else:
        dev = f", dev {record['dev_score'] * 100:.2f}" if record["dev_score"] is not None else ""
        outcome = f"E_sel {record['score'] * 100:.2f}{dev}" + (" (best so far)" if new_best else "")
    return f"[search] {where}, fit {done}/{len(rnd['thetas'])} (#{state['fits']}): {theta} -> {outcome}"


def close_round(cfg: RunConfig, p: Plan, state: dict, rnd: dict, expander: Expander | None) -> None:
    """Rank the round, decide replay or pruning, check the stopping rules, grow D. Idempotent on
    ``state`` up to its last save (a kill inside it redoes it with the same result)."""
    s = cfg.search
    ids = rnd["thetas"]
    scores = [rnd["fits"][str(t)]["score"] for t in ids]
    scored = [i for i, v in enumerate(scores) if v is not None]
    best_pos = max(scored, key=lambda i: (scores[i], -i)) if scored else None
    rnd["best"] = ids[best_pos] if best_pos is not None else None
    rnd["best_score"] = scores[best_pos] if best_pos is not None else None
    rnd["improved"] = rnd["best_score"] is not None and (rnd["best_before"] is None or rnd["best_score"] > rnd["best_before"])
    replay = not rnd["improved"] and rnd["replay"] < s.max_replays and rnd["best_score"] is not None
    thetas_now = [tuple(state["thetas"][t]) for t in ids]
    if replay:
        failed = [i for i, v in enumerate(scores) if v is None]
        removed = {ids[i]: "failed fit" for i in failed}
        rnd["decision"], rnd["rule"] = "replay", "failed" if failed else "none"
    else:
        pruning = prune(thetas_now, scores, s.min_prune_fraction)
        removed = {ids[i]: pruning.reasons[i] for i in pruning.removed}
        rnd["decision"], rnd["rule"] = "prune", pruning.rule
    rnd["removed"] = {str(k): v for k, v in removed.items()}
    rnd["next_replay"] = rnd["replay"] + 1 if replay else 0
    state["remaining"] = [t for t in ids if t not in removed]
    rnd["remaining"] = list(state["remaining"])
    stop = stop_reason(cfg, p, state, rnd, expander)
    if stop is None and expander is not None:
        best = rnd["fits"][str(rnd["best"])]
        expander.rows = expander.rows[: state["d_rows"]]
        stats = expander.grow(best["mistakes"], key=f"round-{rnd['round']}")
        rnd["added"] = stats
        state["d_rows"] = len(expander.rows)
        state["teacher_calls"] += int(stats.get("teacher_calls", 0))
    rnd["d_rows_after"] = state["d_rows"]
    state["stopped"] = stop
    rnd["done"] = True


def stop_reason(cfg: RunConfig, p: Plan, state: dict, rnd: dict, expander: Expander | None) -> str | None:
    s = cfg.search
    if rnd["best"] is not None and expander is not None and cfg.agora.expand_from == "mistakes":
        if not rnd["fits"][str(rnd["best"])]["mistakes"]:
            return "E_gen has no mistakes left (the best student of the round gets every row right)"
    if not state["remaining"]:
        return "Θ is empty"
    if s.max_rounds is not None and len(state["rounds"]) >= s.max_rounds:
        return f"max_rounds ({s.max_rounds}) reached"
    fits_next = len(state["remaining"])
    if s.budget.max_fits is not None and state["fits"] + fits_next > s.budget.max_fits:
        return f"budget spent: {state['fits']} fits done, the next round needs {fits_next} (budget.max_fits {s.budget.max_fits})"
    if s.budget.max_epochs is not None:
        need = sum(p.epochs[t] for t in state["remaining"])
        if state["epochs"] + need > s.budget.max_epochs:
            return (f"budget spent: {state['epochs']} epochs done, the next round needs {need} "
                    f"(budget.max_epochs {s.budget.max_epochs})")
    return None
