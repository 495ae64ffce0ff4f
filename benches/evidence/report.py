"""The evidence bench's tables and plot: per task and arm, the lr chosen on E_sel, E_sel and dev with
their spread and 95% intervals, the cost; what the expansions did (rows scored and kept, anchors,
agreement, near-duplicates); E_sel per seed (the exploration's table); then the contrasts fixed before
the run, with paired t-tests, Holm's correction over all of them and Holm-adjusted intervals."""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
from collections import Counter
from pathlib import Path

from evidence import settings
from evidence.arms import contrasts_of
from evidence.fits import Fit
from evidence.stats import Paired, holm, paired


@dataclasses.dataclass
class TaskResult:
    task: str
    metric: str
    split: str
    arms: list[str]
    lrs: list[float]
    fits: list[Fit]
    teacher: dict
    majority: dict | None
    pool_note: str
    control: bool = False
    chosen: dict[str, float] = dataclasses.field(default_factory=dict)
    lr_seeds: list[int] | None = None
    """The seeds that fit every lr and choose each arm's (None: every seed)."""
    explore: bool = False
    """An exploration run (``--explore``): its report shows E_sel only."""

    def lr_fits(self, arm: str, lr: float) -> list[Fit]:
        """The fits that choose the arm's lr: those of the ``lr_seeds``."""
        return [f for f in self.fits if f.arm == arm and f.lr == lr
                and (self.lr_seeds is None or f.seed in self.lr_seeds)]

    def at(self, arm: str) -> dict[int, Fit]:
        """seed -> the arm's fit at its chosen lr."""
        return {f.seed: f for f in self.fits if f.arm == arm and f.lr == self.chosen.get(arm)}


def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def choose(res: TaskResult) -> None:
    """Each arm's lr: the best mean E_sel score over the lr seeds (ties: the first lr of the grid). Never dev."""
    for arm in res.arms:
        best = None
        for lr in res.lrs:
            scores = [f.e_sel for f in res.lr_fits(arm, lr)]
            if scores and (best is None or statistics.fmean(scores) > best[0]):
                best = (statistics.fmean(scores), lr)
        if best is not None:
            res.chosen[arm] = best[1]


def contrasts(results: list[TaskResult]) -> list[tuple[TaskResult, Paired]]:
    """Every fixed contrast on every task (the control: the first only), Holm-corrected together."""
    out = []
    for res in results:
        for arm, base, name in contrasts_of(res.control):
            a, b = res.at(arm), res.at(base)
            seeds = sorted(set(a) & set(b))
            if len(seeds) >= 2:
                out.append((res, paired(f"{res.task}: {name}", [100 * a[s].dev for s in seeds],
                                        [100 * b[s].dev for s in seeds])))
    holm([p for _, p in out])
    return out


def code_note(results: list[TaskResult]) -> str:
    """Which commit each task's fits ran on (a reused fit keeps the commit it was made with)."""
    parts = []
    for res in results:
        counts = Counter(f.code for f in res.fits)
        parts.append(f"{res.task}: " + ", ".join(f"{code} ({n} fits)" for code, n in sorted(counts.items())))
    return "; ".join(parts)


def task_table(results: list[TaskResult]) -> str:
    lines = [("| task | arm | lr (E_sel) | E_sel, mean | dev, mean ± std | dev 95% CI | other dev metrics | seeds "
              "| steps | teacher rows labelled | generated rows labelled | s / fit (median) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for arm in res.arms:
            fits = list(res.at(arm).values())
            if not fits:
                continue
            devs = [100 * f.dev for f in fits]
            m, s = mean_std(devs)
            ci = paired("ci", devs, [0.0] * len(devs)) if len(devs) > 1 else None
            others = ", ".join("{} {:.1f}".format(k.split("/", 1)[1], 100 * statistics.fmean(f.dev_all[k] for f in fits))
                               for k in sorted(fits[0].dev_all) if k.startswith(f"{res.split}/")
                               and not k.endswith(f"/{res.metric}"))
            lines.append(f"| {res.task} ({res.metric}) | {arm} | {res.chosen[arm]:g} "
                         f"| {100 * statistics.fmean(f.e_sel for f in fits):.1f} | {m:.1f} ± {s:.1f} "
                         f"| {'-' if ci is None else f'{ci.ci_low:.1f} .. {ci.ci_high:.1f}'} | {others or '-'} "
                         f"| {len(fits)} | {statistics.fmean(f.steps for f in fits):.0f} "
                         f"| {statistics.fmean(f.teacher_rows for f in fits):,.0f} "
                         f"| {statistics.fmean(f.generated_labelled for f in fits):,.0f} "
                         f"| {statistics.median(f.wall_s for f in fits):.0f} |")
        maj = res.majority or {}
        lines.append(f"| {res.task} ({res.metric}) | majority class | | | "
                     f"{'-' if res.metric not in maj else f'{100 * maj[res.metric]:.1f}'} | | "
                     f"{', '.join(f'{k} {100 * v:.1f}' for k, v in maj.items() if k != res.metric) or '-'} | | | | | |")
        t = res.teacher
        lines.append(f"| {res.task} ({res.metric}) | teacher ({t['rows']:,} rows) | {t['lr']:g} "
                     f"| {100 * t.get('e_sel', float('nan')):.1f} | {100 * t['dev']:.1f} | | | 1 | | | | "
                     f"{t.get('wall_s') or 0:.0f} |")
    return "\n".join(lines)


def contrast_table(rows: list[tuple[TaskResult, Paired]]) -> str:
    lines = [("| contrast | seeds | dev gain (points), mean | 95% CI | Holm-adjusted CI (level) | t | p | p (Holm) "
              "| significant |"), "|---|---|---|---|---|---|---|---|---|"]
    for _, p in rows:
        low, high = p.holm_interval or (float("nan"), float("nan"))
        lines.append(f"| {p.name} | {p.n} | {p.mean:+.2f} | {p.ci_low:+.2f} .. {p.ci_high:+.2f} "
                     f"| {low:+.2f} .. {high:+.2f} ({100 * (p.holm_level or float('nan')):.2f}%) | {p.t:.2f} "
                     f"| {p.p:.4f} | {p.p_holm:.4f} | {'yes' if p.significant else 'no'} |")
    return "\n".join(lines)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def selection_table(results: list[TaskResult]) -> str:
    """Per task and arm (its fits at the chosen lr, mean over seeds): what the fits' expansions did."""
    def cell(value, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    lines = [("| task | arm | pool rows labelled | rows scored | rows kept | distinct anchors | teacher/gold "
              "agreement, kept rows | near-duplicate rate | random rows |"), "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for arm in res.arms:
            fits = list(res.at(arm).values())
            if not fits:
                continue
            cells = [f"{statistics.fmean(f.pool_labelled for f in fits):,.0f}"]
            cells += [cell(_mean(f.selection.get(k) for f in fits), fmt) for k, fmt in (
                ("scored", "{:,.0f}"), ("kept", "{:,.0f}"), ("anchors", "{:,.0f}"), ("agreement_kept", "{:.1%}"),
                ("near_duplicate_rate", "{:.1%}"), ("random", "{:,.0f}"))]
            lines.append(f"| {res.task} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def e_sel_table(results: list[TaskResult]) -> str:
    """E_sel per seed and its mean, per task and arm at its chosen lr: what the exploration chooses on."""
    seeds = sorted({f.seed for r in results for f in r.fits})
    lines = ["| task | arm | lr | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|---|---|" + "---|" * (len(seeds) + 1)]
    for res in results:
        for arm in res.arms:
            fits = res.at(arm)
            if fits:
                lines.append(f"| {res.task} | {arm} | {res.chosen[arm]:g} | "
                             + " | ".join(f"{100 * fits[s].e_sel:.1f}" if s in fits else "-" for s in seeds)
                             + f" | {100 * statistics.fmean(f.e_sel for f in fits.values()):.2f} |")
    return "\n".join(lines)


def lr_table(results: list[TaskResult], dev: bool = True) -> str:
    lrs = sorted({lr for r in results for lr in r.lrs})
    lines = ["| task | arm | " + " | ".join(f"lr {lr:g}: E_sel" + (" / dev" if dev else "") for lr in lrs) + " |",
             "|---|---|" + "---|" * len(lrs)]
    for res in results:
        for arm in res.arms:
            cells = []
            for lr in lrs:
                fits = res.lr_fits(arm, lr)
                if not fits:
                    cells.append("-")
                    continue
                e_sel, dev_mean = statistics.fmean(f.e_sel for f in fits), statistics.fmean(f.dev for f in fits)
                cells.append(f"{100 * e_sel:.1f}" + (f" / {100 * dev_mean:.1f}" if dev else ""))
            lines.append(f"| {res.task} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[TaskResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 3.8), squeeze=False)
    for ax, res in zip(axes[0], results):
        arms = [a for a in res.arms if res.at(a)]
        for i, arm in enumerate(arms):
            devs = [100 * f.dev for f in res.at(arm).values()]
            m, s = mean_std(devs)
            ax.bar(i, m, yerr=s, color=f"C{i}", alpha=0.6, capsize=4)
            ax.scatter([i] * len(devs), devs, color="k", s=6, zorder=3)
        maj = (res.majority or {}).get(res.metric)
        if maj is not None:
            ax.axhline(100 * maj, color="grey", ls="--", lw=1, label="majority class")
        ax.axhline(100 * res.teacher["dev"], color="C3", ls=":", lw=1, label="teacher")
        every = [100 * f.dev for a in arms for f in res.at(a).values()]
        ax.set_ylim(max(0, min(every + [100 * maj if maj is not None else 100]) - 5),
                    max(every + [100 * res.teacher["dev"]]) + 3)
        ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{res.task}: dev {res.metric} (lr chosen on E_sel)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def arm_settings(results, args) -> str:
    """The explicit settings of agora-best and of every variant, as they ran (over the shipped defaults)."""
    ran = {a for r in results for a in r.arms}
    lines = [(f"- `agora-best` ({args.best_source}; `--agora` does not reach it): "
              f"`{settings.shown(args.best_settings)}`")] if "agora-best" in ran else []
    lines += [f"- `{name}`: `{settings.shown(settings.merge(settings.parse(args.agora or [], '--agora'), v))}`"
              for name, v in settings.variants(args.variant).items() if name in ran]
    common = settings.shown(settings.parse(args.agora or [], "--agora"))
    return ("Agora settings beyond the shipped defaults (`--agora` for agora-eda, agora-nearest and the variants: "
            f"`{common}`):\n\n" + "\n".join(lines) + "\n\n") if lines or args.agora else ""


def write(results: list[TaskResult], plans, args, out: Path, wall: float, argv) -> None:
    """``<out>/<name>.md`` (and its plot): the run's settings, then its tables; prints the main ones."""
    rows = [] if args.explore else contrasts(results)
    from agora.fit.precision import resolve_precision

    cpu = report_cpu()
    n_fits = sum(len(r.fits) for r in results)
    reused = sum(f.reused for r in results for f in r.fits)
    precision = resolve_precision(args.precision, "cpu" if args.cpu else "auto").precision
    settings_line = "; ".join(
        f"{r.task}: student {p.student_layers} layer{'s' if p.student_layers != 1 else ''}, D {p.d_rows}, "
        f"E_gen {p.e_gen_rows}, E_sel {p.e_sel_rows} rows (a fresh draw per seed), "
        f"{p.epochs} epochs of batch {p.batch_size}, max_length {p.max_length}, teacher {r.teacher['rows']:,} rows "
        f"({p.teacher_epochs} epoch{'s' if p.teacher_epochs != 1 else ''}, lr {p.teacher_lr:g}); {r.pool_note}"
        + (f"; the student's full-data ceiling ({r.teacher['ceiling_epochs']} epochs, all of train but a "
           f"1,000-row E_sel, lr 1e-4): dev {100 * r.teacher['ceiling']:.1f}"
           if r.teacher.get("ceiling") is not None and not args.explore else "")
        for r, p in zip(results, plans))
    seed_text = ", ".join(f"{p.name} {args.first_seed}..{args.first_seed + (p.seeds or args.seeds) - 1}" for p in plans)
    head = (f"# Agora against its baselines ({args.name})\n\n"
            f"Command: `python benches/agora_vs_plain.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
            f"{wall / 60:.0f} min wall ({reused} of {n_fits} fits reused from earlier runs) on {cpu}, precision "
            f"{precision}, {args.workers} fits at a time of {args.threads} thread(s).\n\nStudent: {args.student} cut "
            f"to its first layers (per task below), word embeddings frozen; teacher: "
            f"{args.teacher_checkpoint or args.teacher + ' fine-tuned (Agora off)'}; seeds {seed_text}; lr grid "
            f"{args.lrs} for every arm, fitted on seeds {args.first_seed}..{args.first_seed + args.lr_seeds - 1} and chosen on their mean E_sel; the "
            f"other seeds fit the chosen lr. {settings_line}.\n\n{arm_settings(results, args)}"
            f"Code of the fits: {code_note(results)}.\n\n")
    selection = f"## What the expansions did (per fit, mean over seeds)\n\n{selection_table(results)}\n\n"
    if args.explore:
        md = (head + "An exploration run: E_sel only (dev is not shown; choices are made on E_sel).\n\n"
              f"## E_sel per seed (the arm's chosen lr)\n\n{e_sel_table(results)}\n\n{selection}"
              f"## E_sel per lr (mean over the seeds that choose the lr)\n\n{lr_table(results, dev=False)}\n")
        printed = e_sel_table(results)
    else:
        md = (head + "Dev is scored once per fit, on its best epoch by E_sel. Dev = the official dev set, never "
              "used for a choice. Paired t-tests over seeds on dev, Holm-corrected over every contrast below (fixed "
              "before the run); significant: Holm p < 0.05. The Holm-adjusted CI is the interval at level "
              "1 - 0.05 / (m - k), k the contrast's rank by p among the m contrasts.\n\n"
              f"## Contrasts\n\n{contrast_table(rows)}\n\n## Arms\n\n{task_table(results)}\n\n"
              f"{selection}## E_sel per seed (the arm's chosen lr)\n\n{e_sel_table(results)}\n\n"
              f"## E_sel and dev per lr (mean over the seeds that choose the lr)\n\n{lr_table(results)}\n\n"
              f"![dev scores]({args.name}.png)\n")
        plot(results, out / f"{args.name}.png")
        printed = contrast_table(rows) + "\n\n" + task_table(results)
    (out / f"{args.name}.md").write_text(md, encoding="utf-8")
    print("\n" + printed + "\n\n" + selection_table(results))
    print(f"\nwrote {out / (args.name + '.md')}" + ("" if args.explore else f" and {out / (args.name + '.png')}"))


def report_cpu() -> str:
    from agora.fit.precision import cpu_model_name, detect

    return f"{cpu_model_name()} ({os.cpu_count()} cores, {detect().cpu_words()})"
