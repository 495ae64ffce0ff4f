"""What a search leaves behind: the returned student's files, ``metrics.json``, ``report.md`` (a table per
round, D's growth, teacher forward calls, replays, the final dev score) and PNG plots (matplotlib, Agg backend).

```
<run>/config.yaml, metrics.json, best/, predictions/   the returned student, as a single run leaves them
<run>/report.md, plots/*.png                            rounds, pruning, D's growth, the final dev score
<run>/search/state.json, added.jsonl                    resume state and D's additions (atomic)
<run>/search/added-<n>.jsonl                            D's additions as the fits of a round saw them
<run>/trials/r<round>.<replay>-t<θ>/                    each fit's run dir: recipe.yaml (reruns the fit
                                                        alone), fit.log, metrics, predictions; best/
                                                        only for the best fit, no checkpoints
```
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from agora.errors import RecipeError
from agora.fit import publish, rundir
from agora.fit.run import RunResult

from agora.config.space import describe
from agora.files import atomic_write
from agora.files import pct as _pct
from agora.search.plan import search_evalset, split_sizes
from agora.search.state import FitRecord, RoundRecord, SearchState


@dataclasses.dataclass
class SearchResult(RunResult):
    """A :class:`RunResult` for the returned student, plus the search: ``main_score`` is its
    official dev score, ``selection_score`` its E_sel score."""

    selection_score: float | None = None
    state: SearchState | None = None
    report: Path | None = None


def _mistakes(fit: FitRecord) -> str:
    """``mistakes/rows`` on E_gen, or ``-`` where E_gen was not evaluated (Agora off)."""
    return f"{len(fit.mistakes)}/{fit.e_gen_rows}" if fit.e_gen_rows else "-"


def failed_fits(state: SearchState) -> list[FitRecord]:
    """Every fit recorded as failed, in the order they ran."""
    return [fit for rnd in state.rounds for fit in rnd.fits.values() if fit.failed]


def write_report(run_dir: Path, state: SearchState, summary: dict, plan_text: str) -> Path:
    """Write ``report.md``, ``plots/scores.png`` and ``plots/sizes.png``; returns report.md's path."""

    plots = write_plots(run_dir / "plots", state)
    lines = [f"# Agora search: {summary['task']}", "", "```", plan_text, "```", ""]
    if summary["eval_on"] == "dev":
        lines += ["**E = the official dev set (`agora.eval_on: dev`, paper-faithful): the dev score below "
                  "was also used to rank θs and rounds, so it is not an independent measure.**", ""]
    lines += _result_lines(state, summary) + _rounds_table(state)
    for rnd in state.rounds:
        lines += _round_lines(state, rnd)
    lines += _failed_lines(state)
    lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(lines))
    return path


def _failed_lines(state: SearchState) -> list[str]:
    """The fits that failed, each with its θ and why (none: no section)."""
    failed = failed_fits(state)
    if not failed:
        return []
    lines = ["## Failed fits", "", f"{len(failed)} fit(s) failed; each was recorded, its θ pruned, and the "
             "search went on:", ""]
    lines += [f"- `{fit.trial}` ({describe(state.names, tuple(state.thetas[fit.theta]))}): {fit.failed}" for fit in failed]
    return lines + [""]


def _result_lines(state: SearchState, summary: dict) -> list[str]:
    """The returned student, its scores, and what the search did to get it."""
    best = state.best
    return [
        "## Result", "",
        f"- returned student: `{best.trial if best else None}` (θ {describe(state.names, tuple(state.thetas[best.theta])) if best else '-'}), "
        f"round {best.round if best else None}",
        f"- selection score ({summary['selection']}): {_pct(best.score if best else None)}",
        f"- **official dev score ({summary['dev_metric']}): {_pct(summary['dev_score'])}**",
        f"- Agora: {'on' if summary['agora'] else 'off (plain fine-tuning baseline: same Θ, E and selection rule)'}",
        f"- stopped: {state.stopped}",
        f"- rounds: {len(state.rounds)} (replays: {sum(1 for r in state.rounds if r.replay)}), "
        f"fits: {state.fits}, epochs: {state.epochs}",
        f"- D: {summary['d_original']} original rows + {state.d_rows} generated rows kept; "
        f"teacher forward passes: {state.teacher_forward_calls}",
        "",
    ]


def _rounds_table(state: SearchState) -> list[str]:
    """One row per round: its best, the rows D had, the decision and the θs left."""
    lines = ["## Rounds", "", "| round | replay | θs trained | best E_sel | its dev | generated rows in D | decision | Θ left |",
             "|---|---|---|---|---|---|---|---|"]
    for rnd in state.rounds:
        best_fit = rnd.fits.get(str(rnd.best))
        lines.append(f"| {rnd.round} | {rnd.replay} | {len(rnd.fits)} | {_pct(rnd.best_score)} | "
                     f"{_pct(best_fit.dev_score if best_fit else None)} | {rnd.d_rows} | {rnd.decision or 'running'} | "
                     f"{len(rnd.remaining) if rnd.remaining is not None else '-'} |")
    lines.append("")
    return lines


def _round_lines(state: SearchState, rnd: RoundRecord) -> list[str]:
    """A round's section: one row per fit (θ, scores, mistakes, outcome), then, once it is done, its decision."""
    names = state.names
    title = f"## Round {rnd.round}" + (f" (replay {rnd.replay}, seeds +{rnd.seed_offset})" if rnd.replay else "")
    lines = [title, "", f"| θ | {' | '.join(names)} | E_sel | dev | E_gen mistakes | outcome |",
             "|---|" + "---|" * len(names) + "---|---|---|---|"]
    for tid in rnd.thetas:
        fit = rnd.fits.get(str(tid))
        if fit is None:
            continue
        removed = rnd.removed.get(str(tid))
        if fit.failed:
            outcome = f"pruned: {fit.failed}"
        elif removed:
            outcome = f"pruned: {removed}"
        else:
            outcome = "kept" + (" (round best)" if rnd.best == tid else "")
        values = " | ".join(str(v) for v in state.thetas[tid])
        lines.append(f"| {tid} | {values} | {_pct(fit.score)} | {_pct(fit.dev_score)} | "
                     f"{_mistakes(fit)} | {outcome} |")
    lines.append("")
    if rnd.done:
        lines += _decision_lines(rnd)
    return lines


def _decision_lines(rnd: RoundRecord) -> list[str]:
    """A finished round: its best against the best before, the decision and its rule, a tie, how D grew."""
    if rnd.best_before is None:
        improved = "the first scores"
    else:
        improved = f"{'improved' if rnd.improved else 'did not improve'} on {_pct(rnd.best_before)}"
    lines = [f"Best {_pct(rnd.best_score)} ({improved}); "
             f"decision: {rnd.decision} (rule: {rnd.rule}); Θ left: {len(rnd.remaining or [])}."]
    if rnd.tie:
        lines.append(f"**A tie decided this round**: {rnd.tie}.")
    added = rnd.added
    if added:
        rejected = ", ".join(f"{k} {v}" for k, v in added.rejected.items() if v)
        lines.append(f"D grew by {added.kept} rows ({added.sources} sources, "
                     f"{added.variants} variants; rejected: {rejected or 'none'}; "
                     f"teacher agreement with gold {_pct(added.agreement)}, "
                     f"label balance {added.label_balance}; teacher forward calls "
                     f"{added.teacher_forward_calls}); D's additions now {rnd.d_rows_after} rows.")
    lines.append("")
    return lines


def write_plots(out_dir: Path, state: SearchState) -> list[Path]:
    """``scores.png``: E_sel score per round, the best and the spread of θs (min..max, every θ a dot);
    ``sizes.png``: |Θ| and D's additions per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    rounds = [r for r in state.rounds if r.fits]
    xs = [r.round for r in rounds]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rounds:
        values = [f.score * 100 for f in r.fits.values() if f.score is not None]
        if values:
            ax.scatter([r.round] * len(values), values, color="0.6", s=14, zorder=2)
            ax.vlines(r.round, min(values), max(values), color="0.8", lw=6, zorder=1)
    best = [max((f.score for f in r.fits.values() if f.score is not None), default=float("nan")) * 100
            for r in rounds]
    ax.plot(xs, best, "o-", color="C0", label="round best", zorder=3)
    dev = [next((f.dev_score * 100 for f in r.fits.values() if f.theta == r.best
                 and f.dev_score is not None), float("nan")) for r in rounds]
    ax.plot(xs, dev, "s--", color="C1", label="dev score of the round best", zorder=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("score x100")
    ax.set_title("E_sel score per round (grey: every θ)")
    ax.legend(loc="best")
    fig.tight_layout()
    scores = out_dir / "scores.png"
    fig.savefig(scores, dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [len(r.thetas) for r in rounds], "o-", label="|Θ| trained")
    ax.set_xlabel("round")
    ax.set_ylabel("|Θ| trained")
    ax2 = ax.twinx()
    ax2.plot(xs, [r.d_rows for r in rounds], "s--", color="C1", label="generated rows in D")
    ax2.set_ylabel("generated rows in D")
    for axis in (ax.xaxis, ax.yaxis, ax2.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Θ and D per round")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(loc="lower center", ncol=2)
    sizes = out_dir / "sizes.png"
    fig.savefig(sizes, dpi=80)
    plt.close(fig)
    return [scores, sizes]


def finish(cfg, card, run_dir: Path, state: SearchState, p, source: str, progress,
           precision) -> SearchResult:
    """Copy the best student's export and predictions to the run dir, write metrics, report, summary."""
    best = state.best
    if best is None:
        why = sorted({fit.failed.split(" (traceback in ")[0] for fit in failed_fits(state)})
        raise RecipeError(f"{source}: every fit of the search failed ({'; '.join(why)[:600]}); each fit's "
                          f"traceback is in its trials/<fit>/fit.log, the record in {run_dir}/search/state.json")
    trial_dir = run_dir / "trials" / best.trial
    best_dir = run_dir / "best"
    if (trial_dir / "best").is_dir():
        shutil.rmtree(best_dir, ignore_errors=True)
        shutil.copytree(trial_dir / "best", best_dir)
    if (trial_dir / "predictions").is_dir():
        shutil.rmtree(run_dir / "predictions", ignore_errors=True)
        shutil.copytree(trial_dir / "predictions", run_dir / "predictions")
    scores = state.fit_of(best.trial).scores
    e = search_evalset(cfg, card)
    dev_metric = f"{card.select_split}/{card.main_metric}"
    selection = f"{e.select}/{card.main_metric}"
    summary = {"task": card.name, "eval_on": cfg.agora.eval_on, "selection": selection, "dev_metric": dev_metric,
               "dev_score": best.dev_score, "agora": cfg.agora.enabled, "d_original": e.d_size(*split_sizes(cfg, card))}
    report = write_report(run_dir, state, summary, p.text(cfg))
    predictions = {path.stem: path for path in sorted((run_dir / "predictions").glob("*.jsonl"))}
    replays = sum(1 for r in state.rounds if r.replay)
    rundir.write_metrics(run_dir, {
        "task": card.name, "main_metric": dev_metric, "main_score": best.dev_score, "final": scores,
        "best_model_dir": str(best_dir) if best_dir.is_dir() else None,
        "predictions": {k: str(v) for k, v in predictions.items()},
        "precision": {"value": precision.precision, "requested": precision.requested, "why": precision.reason},
        "search": {"best": best.model_dump(mode="json"), "selection_metric": selection, "eval_on": cfg.agora.eval_on,
                   "agora": cfg.agora.enabled, "rounds": len(state.rounds), "fits": state.fits,
                   "epochs": state.epochs, "stopped": state.stopped, "generated_rows": state.d_rows,
                   "teacher_forward_calls": state.teacher_forward_calls, "replays": replays, "report": str(report)},
    })
    publish.after_run(run_dir, cfg, card, search=True)  # the returned student's card, the trackers, push_to_hub
    extra = {"selection (" + selection + ")": _pct(best.score), "rounds / fits": f"{len(state.rounds)} / {state.fits}",
             "generated rows in D": str(state.d_rows), "teacher forward calls": str(state.teacher_forward_calls),
             "stopped": str(state.stopped), "report": str(report)}
    if failed_fits(state):
        extra["failed fits"] = f"{len(failed_fits(state))} (listed in report.md)"
    progress("\n" + rundir.summary_table(f"{card.name} search", {dev_metric: best.dev_score}, run_dir,
                                         best_dir if best_dir.is_dir() else None, extra))
    return SearchResult(run_dir=run_dir, best_model_dir=best_dir if best_dir.is_dir() else None, scores=scores,
                        main_score=best.dev_score, predictions=predictions, selection_score=best.score,
                        state=state, report=report)
