"""The search's report: ``report.md`` (a table per round, D's growth, teacher calls, replays, the
final dev score) and PNG plots (matplotlib, Agg backend), written in the run dir."""

from __future__ import annotations

from pathlib import Path

from agora.search.space import describe


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def _mistakes(fit: dict) -> str:
    """``mistakes/rows`` on E_gen, or ``-`` where E_gen was not evaluated (Agora off)."""
    return f"{len(fit['mistakes'])}/{fit['e_gen_rows']}" if fit["e_gen_rows"] else "-"


def write_report(run_dir: Path, state: dict, summary: dict, plan_text: str) -> Path:
    """Write ``report.md``, ``plots/scores.png`` and ``plots/sizes.png``; returns report.md's path."""
    from agora.rundir import atomic_write

    plots = write_plots(run_dir / "plots", state)
    names = state["names"]
    lines = [f"# Agora search: {summary['task']}", "", "```", plan_text, "```", ""]
    if summary["eval_on"] == "dev":
        lines += ["**E = the official dev set (`agora.eval_on: dev`, paper-faithful): the dev score below "
                  "was also used to rank θs and rounds, so it is not an independent measure.**", ""]
    best = state["best"] or {}
    lines += [
        "## Result", "",
        f"- returned student: `{best.get('trial')}` (θ {describe(names, tuple(state['thetas'][best['theta']])) if best else '-'}), "
        f"round {best.get('round')}",
        f"- selection score ({summary['selection']}): {_pct(best.get('score'))}",
        f"- **official dev score ({summary['dev_metric']}): {_pct(summary['dev_score'])}**",
        f"- Agora: {'on' if summary['agora'] else 'off (plain fine-tuning baseline: same Θ, E and selection rule)'}",
        f"- stopped: {state['stopped']}",
        f"- rounds: {len(state['rounds'])} (replays: {sum(1 for r in state['rounds'] if r['replay'])}), "
        f"fits: {state['fits']}, epochs: {state['epochs']}",
        f"- D: {summary['d_original']} original rows + {state['d_rows']} generated rows kept; "
        f"teacher forward passes: {state['teacher_calls']}",
        "",
    ]
    lines += ["## Rounds", "", "| round | replay | θs trained | best E_sel | its dev | generated rows in D | decision | Θ left |",
              "|---|---|---|---|---|---|---|---|"]
    for rnd in state["rounds"]:
        best_fit = rnd["fits"].get(str(rnd.get("best")), {})
        lines.append(f"| {rnd['round']} | {rnd['replay']} | {len(rnd['fits'])} | {_pct(rnd.get('best_score'))} | "
                     f"{_pct(best_fit.get('dev_score'))} | {rnd['d_rows']} | {rnd.get('decision', 'running')} | "
                     f"{len(rnd['remaining']) if 'remaining' in rnd else '-'} |")
    lines.append("")
    for rnd in state["rounds"]:
        title = f"## Round {rnd['round']}" + (f" (replay {rnd['replay']}, seeds +{rnd['seed_offset']})" if rnd["replay"] else "")
        lines += [title, "", f"| θ | {' | '.join(names)} | E_sel | dev | E_gen mistakes | outcome |",
                  "|---|" + "---|" * len(names) + "---|---|---|---|"]
        for tid in rnd["thetas"]:
            fit = rnd["fits"].get(str(tid))
            if fit is None:
                continue
            removed = rnd.get("removed", {}).get(str(tid))
            if fit["failed"]:
                outcome = f"pruned: {fit['failed']}"
            elif removed:
                outcome = f"pruned: {removed}"
            else:
                outcome = "kept" + (" (round best)" if rnd.get("best") == tid else "")
            values = " | ".join(str(v) for v in state["thetas"][tid])
            lines.append(f"| {tid} | {values} | {_pct(fit['score'])} | {_pct(fit['dev_score'])} | "
                         f"{_mistakes(fit)} | {outcome} |")
        lines.append("")
        if rnd.get("done"):
            if rnd["best_before"] is None:
                improved = "the first scores"
            else:
                improved = f"{'improved' if rnd['improved'] else 'did not improve'} on {_pct(rnd['best_before'])}"
            lines.append(f"Best {_pct(rnd['best_score'])} ({improved}); "
                         f"decision: {rnd['decision']} (rule: {rnd['rule']}); Θ left: {len(rnd['remaining'])}.")
            added = rnd.get("added")
            if added:
                rejected = ", ".join(f"{k} {v}" for k, v in added.get("rejected", {}).items() if v)
                lines.append(f"D grew by {added.get('kept', 0)} rows ({added.get('sources', 0)} sources, "
                             f"{added.get('variants', 0)} variants; rejected: {rejected or 'none'}; "
                             f"teacher agreement with gold {_pct(added.get('agreement'))}, "
                             f"label balance {added.get('label_balance')}; teacher calls {added.get('teacher_calls', 0)}); "
                             f"D's additions now {rnd['d_rows_after']} rows.")
            lines.append("")
    lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(lines))
    return path


def write_plots(out_dir: Path, state: dict) -> list[Path]:
    """``scores.png``: E_sel score per round, the best and the spread of θs (min..max, every θ a dot);
    ``sizes.png``: |Θ| and D's additions per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    rounds = [r for r in state["rounds"] if r["fits"]]
    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rounds:
        values = [f["score"] * 100 for f in r["fits"].values() if f["score"] is not None]
        if values:
            ax.scatter([r["round"]] * len(values), values, color="0.6", s=14, zorder=2)
            ax.vlines(r["round"], min(values), max(values), color="0.8", lw=6, zorder=1)
    best = [max((f["score"] for f in r["fits"].values() if f["score"] is not None), default=float("nan")) * 100
            for r in rounds]
    ax.plot(xs, best, "o-", color="C0", label="round best", zorder=3)
    dev = [next((f["dev_score"] * 100 for f in r["fits"].values() if f["theta"] == r.get("best")
                 and f["dev_score"] is not None), float("nan")) for r in rounds]
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
    ax.plot(xs, [len(r["thetas"]) for r in rounds], "o-", label="|Θ| trained")
    ax.set_xlabel("round")
    ax.set_ylabel("|Θ| trained")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["d_rows"] for r in rounds], "s--", color="C1", label="generated rows in D")
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
