"""Agora's rounds: train every θ of Θ on D, rank on E_sel, grow D from the best student's
mistakes, prune Θ or replay, until Θ is empty, E has no mistakes or the budget is spent.

Method card
-----------
What (de Wynter 2020, arXiv 2010.07990; docs/method.md, "The loop")::

    while Θ is not empty:
        train one student per θ on D (from f0 each time); score each on E_sel
        f* = the round's best; if it beats the best so far, it is the new best
        if the best did not improve and replays are left: replay (same Θ, fresh seeds)
        else prune Θ (:func:`agora.search.pruning.prune`)
        generate from f*'s mistakes on E_gen with G, label with S, filter, append to D
    return the best student seen

Our choices: every round (a replay too) grows D, so a replay trains on fresh G samples; a replay's
fits use ``seed + replay_seed_offset x replay``; a round starts only if the budget covers all its
fits (ranking a partial round would be unfair); "improved" is strictly better; no expansion after
the last round. With ``agora.enabled: false`` nothing is generated and no teacher is used: the same
Θ, E and selection rule give the plain fine-tuning baseline.

Resume: the state (:class:`agora.search.state.SearchState`) and D's additions are saved after
every finished fit and round; a rerun with ``output.resume_from: last`` continues after the last
finished fit (a fit killed midway is run again from its start); without it, a dir holding a search
is refused (``output.overwrite: true`` starts again). Closing a round is idempotent on the saved state.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from agora.config import RunConfig, TrialConfig
from agora.data.cards import load_task
from agora.errors import RecipeError
from agora.files import read_jsonl, write_jsonl
from agora.fit import rundir, trackers
from agora.fit.model import check_lengths
from agora.fit.progress import say
from agora.fit.run import LocalRunner, with_resolved_precision
from agora.method.extension import agora_extension
from agora.search.plan import Plan, check_e_fits, plan
from agora.search.report import SearchResult, finish
from agora.search.pruning import describe, prune, rank_key
from agora.method.generated import ExpansionStats, GeneratedRow
from agora.search.state import AddedRecord, Best, FitRecord, RoundRecord, SearchState, fingerprint
from agora.search.trial import Trial, TrialResult, TrialRunner, read_result


def run_search(cfg: RunConfig, source: str | None = None, runner: TrialRunner | None = None,
               progress=say) -> SearchResult:
    """Run (or resume) the search of ``cfg.search``; see :mod:`agora.search.rounds` for the algorithm.
    ``progress`` gets its lines (the plan, one per finished fit, the summary); by default they are printed
    and flushed, so a log written through a file or a pipe shows each at once."""
    source = source or "<recipe>"
    cfg, precision = with_resolved_precision(cfg, announce=None)  # once, for every fit of the search
    p = plan(cfg, source)
    card = load_task(cfg.task)
    run_dir = rundir.resolve_run_dir(cfg.output.dir, card.name)
    with rundir.locked(run_dir):  # one writer per run dir, for the whole search (its fits lock their own dirs)
        return _search(cfg, source, runner, progress, precision, p, card, run_dir)


def _search(cfg: RunConfig, source: str, runner: TrialRunner | None, progress, precision, p: Plan, card,
            run_dir) -> SearchResult:
    state_path, added_path = run_dir / "search" / "state.json", run_dir / "search" / "added.jsonl"
    claimed = rundir.claim(run_dir, cfg.output.overwrite, cfg.output.resume_from,
                           "from search/state.json, after its last finished fit")
    check_e_fits(cfg, card, source)
    check_lengths(theta.cfg for theta in p.space.thetas)
    check_resume_from(cfg, source, run_dir, state_path)
    owned = runner is None  # built here, before any fit: a missing Ray fails now
    runner = runner or default_runner(cfg, run_dir, progress)
    progress(p.text(cfg) + f"\n  {precision.line()}")
    claimed.clear_earlier()
    state = SearchState.load(state_path, fingerprint(cfg), run_dir) or SearchState(
        fingerprint=fingerprint(cfg), names=p.names, thetas=[list(t) for t in p.thetas],
        remaining=list(range(len(p.thetas))))
    if state.fits:
        progress(f"[search] resuming {run_dir}: {state.fits} fits done, {len(state.rounds)} round(s) started")
    rundir.write_config(run_dir, cfg.to_dict(), f"# resolved recipe from {source}; continue it with: "
                                                f"agora-finetune {run_dir}/config.yaml output.resume_from=last"
                                                f"\n# {precision.line()}")
    link = trackers.open_search(cfg, run_dir, card.name, precision)  # output.loggers: the fits' parent run, group
    grower = None
    if cfg.agora.enabled:
        from agora.search.grow import Grower

        grower = Grower(cfg, cfg.seed, read_jsonl(added_path)[: state.d_rows])

    def save(st: SearchState) -> None:
        if grower is not None:
            write_jsonl(added_path, grower.jsonl(st.d_rows))
        st.save(state_path)

    make_trial = trial_maker(p, run_dir, precision.precision, cfg.seed, state, grower, link)
    try:
        Rounds(cfg, p, state, runner, make_trial, grower, save, progress, keep_one_export).run()
    except BaseException:
        if not state.fits:
            claimed.release()  # no fit finished: no stray run dir
        raise
    finally:
        if owned:
            runner.close()
    return finish(cfg, card, run_dir, state, p, source, progress, precision)


def check_resume_from(cfg: RunConfig, source: str, run_dir: Path, state_path: Path) -> None:
    """A search resumes only from its own state (``output.resume_from: last``), which must be there."""
    if cfg.output.resume_from not in (None, "last"):
        raise RecipeError(f"{source}: a search resumes from its own state (search/state.json): write "
                          f"output.resume_from: last, not a checkpoint ({cfg.output.resume_from})")
    if cfg.output.resume_from and not state_path.is_file():
        raise RecipeError(f"output.resume_from: last: {run_dir} holds no search to continue (no {state_path}); "
                          "leave resume_from unset to start one")


def trial_maker(p: Plan, run_dir: Path, precision: str, e_seed: int, state: SearchState,
                grower: Grows | None, link=None) -> Callable[[RoundRecord, int], Trial]:
    """``(round, θ id) -> Trial``: θ's recipe with the round's seed offset, the search's precision, its run dir
    under ``trials/`` and its ``trial:`` section (E's seed, D's additions as the round saw them, and ``link``:
    where the search's trackers are, :func:`agora.fit.trackers.trial_link`)."""

    def make_trial(rnd: RoundRecord, tid: int) -> Trial:
        name = f"r{rnd.round}.{rnd.replay}-t{tid}"
        theta_cfg = p.space.thetas[tid].cfg
        extra = None
        if grower is not None and state.d_rows:  # D's additions as this round saw them (kept for reruns)
            extra = run_dir / "search" / f"added-{state.d_rows}.jsonl"
            write_jsonl(extra, grower.jsonl(state.d_rows))
        trial_cfg = theta_cfg.model_copy(update={
            "seed": theta_cfg.seed + rnd.seed_offset,
            "trainer": {**theta_cfg.trainer, "precision": precision},
            "output": theta_cfg.output.model_copy(update={"dir": str(run_dir / "trials" / name)}),
            "trial": TrialConfig(e_seed=e_seed, extra_rows=str(extra.resolve()) if extra else None,
                                 tracking=trackers.trial_link(link, name, rnd.round, rnd.replay,
                                                              describe(p.names, tuple(state.thetas[tid])))),
        })
        return Trial(name=name, theta=tid, cfg=trial_cfg, run_dir=run_dir / "trials" / name)

    return make_trial


def keep_one_export(record: FitRecord, st: SearchState) -> None:
    """Delete every fit's exported model but the best one's (called after each fit is recorded and saved)."""
    for rnd in st.rounds:
        for fit in rnd.fits.values():
            if fit.model_dir and (st.best is None or fit.trial != st.best.trial):
                shutil.rmtree(fit.model_dir, ignore_errors=True)


def default_runner(cfg: RunConfig, run_dir, progress=print) -> TrialRunner:
    """``search.runner``: the fits one after the other in this process, or a round's fits at once on Ray."""
    if cfg.search.runner == "ray":
        from agora.search.ray_runner import RayRunner

        return RayRunner(cfg.search.ray, run_dir, extend=agora_extension, progress=progress)
    return LocalRunner(extend=agora_extension)


class Grows(Protocol):
    """Grows D between rounds (:class:`agora.search.grow.Grower`); holds D's additions."""

    added: list[GeneratedRow]

    def keep(self, n: int) -> None: ...

    def jsonl(self, n: int | None = None) -> list[dict]: ...

    def grow(self, mistakes: list[int], key: str) -> ExpansionStats: ...


class Rounds:
    """The loop over rounds on a state (modified, and saved through ``save``, after every fit and round).

    Args:
        cfg, plan: the search's recipe and plan.
        state: a new or a loaded state.
        runner: where fits run.
        make_trial: ``(round, θ id) -> Trial``.
        grower: grows D (None with Agora off).
        save: persists the state (and D's additions).
        progress: one line per finished fit.
        on_fit: after each fit is recorded and saved (the search keeps one export).
        read: a finished fit's result (default: read from its run dir, :func:`agora.search.trial.read_result`).
    """

    def __init__(self, cfg: RunConfig, plan: Plan, state: SearchState, runner: TrialRunner,
                 make_trial: Callable[[RoundRecord, int], Trial], grower: Grows | None,
                 save: Callable[[SearchState], None], progress: Callable[[str], None] = print,
                 on_fit: Callable[[FitRecord, SearchState], None] | None = None,
                 read: Callable[[Trial], TrialResult] = lambda trial: read_result(trial.run_dir, trial.cfg)):
        self.cfg, self.plan, self.state, self.runner = cfg, plan, state, runner
        self.make_trial, self.grower, self.save, self.progress, self.on_fit = make_trial, grower, save, progress, on_fit
        self.read = read

    def run(self) -> SearchState:
        state, s = self.state, self.cfg.search
        while state.stopped is None:
            rnd = state.rounds[-1] if state.rounds and not state.rounds[-1].done else None
            if rnd is None:
                replay = state.rounds[-1].next_replay if state.rounds else 0
                rnd = RoundRecord(round=len(state.rounds), replay=replay, seed_offset=replay * s.replay_seed_offset,
                                  thetas=list(state.remaining), best_before=state.best.score if state.best else None,
                                  d_rows=state.d_rows)
                state.rounds.append(rnd)
            todo = [self.make_trial(rnd, tid) for tid in rnd.thetas if str(tid) not in rnd.fits]
            self.runner.run(todo, lambda trial, failure, rnd=rnd: self._record(rnd, trial, failure))
            self.close(rnd)
            self.save(state)
        return state

    def _record(self, rnd: RoundRecord, trial: Trial, failure: str | None) -> None:
        state = self.state
        result = self.read(trial) if failure is None else TrialResult(None, None, {}, [], 0, 0, failed=failure)
        record = fit_record(trial, rnd, result)
        rnd.fits[str(trial.theta)] = record
        state.fits += 1
        state.epochs += result.epochs
        best = state.best
        # a tie on the score goes to the finer signal, then (within a round) to the θ first in Θ's order,
        # whatever order the fits finish in
        position = rnd.thetas.index(record.theta)
        best_position = rnd.thetas.index(best.theta) if best is not None and best.round == rnd.round else -1
        new_best = record.score is not None and (best is None or rank_key(record.score, record.loglik, position) >
                                                 rank_key(best.score, best.loglik, best_position))
        if new_best:
            state.best = Best(**record.model_dump(include={"trial", "theta", "round", "score", "dev_score", "model_dir",
                                                           "loglik"}))
        self.save(state)
        if self.on_fit is not None:  # after the save: a kill in between never loses the saved best's export
            self.on_fit(record, state)
        self.progress(progress_line(self.plan, state, rnd, record, new_best, trial.seconds))

    def close(self, rnd: RoundRecord) -> None:
        """Rank the round, decide replay or pruning, check the stopping rules, grow D."""
        state, s = self.state, self.cfg.search
        ids = rnd.thetas
        scores = [rnd.fits[str(t)].score for t in ids]
        logliks = [rnd.fits[str(t)].loglik for t in ids]
        scored = [i for i, v in enumerate(scores) if v is not None]
        best_pos = max(scored, key=lambda i: rank_key(scores[i], logliks[i], i)) if scored else None
        tied = [i for i in scored if scores[i] == scores[best_pos]] if best_pos is not None else []
        if len(tied) > 1:
            by = "E_sel log-likelihood" if logliks[best_pos] is not None else "Θ's order"
            rnd.tie = f"{len(tied)} θs tied for the best E_sel score: the best chosen by {by}"
        rnd.best = ids[best_pos] if best_pos is not None else None
        rnd.best_score = scores[best_pos] if best_pos is not None else None
        rnd.improved = rnd.best_score is not None and (rnd.best_before is None or rnd.best_score > rnd.best_before)
        replay = not rnd.improved and rnd.replay < s.max_replays and rnd.best_score is not None
        if replay:
            failed = [i for i, v in enumerate(scores) if v is None]
            removed = {ids[i]: "failed fit" for i in failed}
            rnd.decision, rnd.rule = "replay", "failed" if failed else "none"
        else:
            pruning = prune([tuple(state.thetas[t]) for t in ids], scores, s.min_prune_fraction, logliks)
            removed = {ids[i]: pruning.reasons[i] for i in pruning.removed}
            rnd.decision, rnd.rule = "prune", pruning.rule
            if pruning.tie:
                rnd.tie = "; ".join(filter(None, [rnd.tie, "the worst E_sel score was tied: no prefix pruned"]))
        rnd.removed = {str(k): v for k, v in removed.items()}
        rnd.next_replay = rnd.replay + 1 if replay else 0
        state.remaining = [t for t in ids if t not in removed]
        rnd.remaining = list(state.remaining)
        stop = self.stop_reason(rnd)
        if stop is None and self.grower is not None:
            best = rnd.fits[str(rnd.best)]
            self.grower.keep(state.d_rows)
            stats = self.grower.grow(best.mistakes, key=f"round-{rnd.round}")
            rnd.added = AddedRecord(**stats.as_record(), seconds=stats.teacher.seconds)
            state.d_rows = len(self.grower.added)
            state.teacher_forward_calls += rnd.added.teacher_forward_calls
        rnd.d_rows_after = state.d_rows
        state.stopped = stop
        rnd.done = True

    def stop_reason(self, rnd: RoundRecord) -> str | None:
        state, s, p = self.state, self.cfg.search, self.plan
        if rnd.best is not None and self.grower is not None and self.cfg.agora.expand_from == "mistakes":
            if not rnd.fits[str(rnd.best)].mistakes:
                return "E_gen has no mistakes left (the best student of the round gets every row right)"
        if not state.remaining:
            return "Θ is empty"
        if s.max_rounds is not None and len(state.rounds) >= s.max_rounds:
            return f"max_rounds ({s.max_rounds}) reached"
        fits_next = len(state.remaining)
        if s.budget.max_fits is not None and state.fits + fits_next > s.budget.max_fits:
            return f"budget spent: {state.fits} fits done, the next round needs {fits_next} (budget.max_fits {s.budget.max_fits})"
        if s.budget.max_epochs is not None:
            need = sum(p.epochs[t] for t in state.remaining)
            if state.epochs + need > s.budget.max_epochs:
                return (f"budget spent: {state.epochs} epochs done, the next round needs {need} "
                        f"(budget.max_epochs {s.budget.max_epochs})")
        return None


def fit_record(trial: Trial, rnd: RoundRecord, result: TrialResult) -> FitRecord:
    return FitRecord(trial=trial.name, theta=trial.theta, round=rnd.round, replay=rnd.replay, seed=trial.cfg.seed,
                     score=result.score, dev_score=result.dev_score, loglik=result.loglik, failed=result.failed,
                     mistakes=result.mistakes,
                     e_gen_rows=result.e_gen_rows, epochs=result.epochs, model_dir=result.model_dir,
                     scores={k: v for k, v in result.scores.items() if isinstance(v, (int, float))})


def progress_line(p: Plan, state: SearchState, rnd: RoundRecord, record: FitRecord, new_best: bool,
                  seconds: float | None = None) -> str:
    theta = describe(p.names, tuple(state.thetas[record.theta]))
    where = f"round {rnd.round}" + (f" (replay {rnd.replay})" if rnd.replay else "")
    if record.failed:
        outcome = f"FAILED ({record.failed})"
    else:
        dev = f", dev {record.dev_score * 100:.2f}" if record.dev_score is not None else ""
        outcome = f"E_sel {record.score * 100:.2f}{dev}" + (" (best so far)" if new_best else "")
    left = len(rnd.thetas) - len(rnd.fits)
    took = f"{seconds:.1f} s, " if seconds is not None else ""
    return (f"[search] {where}, fit {len(rnd.fits)}/{len(rnd.thetas)} (#{state.fits}): {theta} -> {outcome}; "
            f"{took}{left} left in the round")
