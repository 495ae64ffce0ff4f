"""Overhead of the Agora callback: a run with expand + distil + reweight against a plain run.

Both arms fine-tune the same BORT-shaped student (random init, BORT's real shape by default) on
real RTE training pairs for exactly the same number of optimiser steps: Agora keeps E (E_gen +
E_sel) out of D and draws |D| rows per epoch, so the plain arm trains on |D| rows. The Agora arm
expands E_gen's mistakes after every epoch (EDA, 4 variants each), distils (alpha 0.5, T 2) on
every row and reweights (gamma 1, rho 0.5); it also evaluates E_gen and E_sel each epoch. The
teacher cache is warm (an untimed first run of each arm fills it and the tokenization cache), so
the timed Agora run makes no teacher forward pass. Wall time of the whole ``run_fit`` (fit,
validation each epoch, final validation; no test predictions or export), median of ``--repeats``.

    AGORA_DATA_DIR=../shared/data python benches/agora_overhead.py             # ~6 min on 2 idle CPU cores
    python benches/agora_overhead.py --shape tiny --repeats 3                   # seconds; fixed costs dominate

Prints both wall times and the ratio (Agora / plain), and the ratio of process CPU times (steadier
on a shared machine); the target is <= 1.25x.

``--search``: Agora's whole cost. The same 2-round search over 4 θs (lr x seed), with Agora on
and off (the plain arm carves the same E and ranks on the same E_sel), the teacher cache cold
(a fresh directory per arm), the teacher the student's shape (its labelling of D, of every
generated row and of the rounds' additions is timed). Prints the wall ratio (target <= 1.3x) and
where Agora's extra time goes.

    AGORA_DATA_DIR=../shared/data python benches/agora_overhead.py --search    # ~15 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")


def save_models(args, work: Path) -> tuple[Path, Path]:
    """A random BORT-shaped student (or a tiny one) and a random RTE teacher, with the RoBERTa tokenizer: tiny
    for one fit (its cache is warm anyway), the student's shape for ``--search`` (its labelling is timed)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    from agora.fit.model import bort_config

    tokenizer = AutoTokenizer.from_pretrained(Path(args.data_dir) / "tokenizers" / "roberta")
    student = work / f"student-{args.shape}"
    teacher = work / (f"teacher-{args.shape}" if args.search else "teacher")
    torch.manual_seed(args.seed)
    shape = {} if args.shape == "bort" else dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                  intermediate_size=37)
    BertModel(bort_config(**shape)).save_pretrained(student)
    tokenizer.save_pretrained(student)
    id2label = {0: "entailment", 1: "not_entailment"}
    labels = dict(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    config = bort_config(**shape, **labels) if args.search else BertConfig(
        vocab_size=50265, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, **labels)
    BertForSequenceClassification(config).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    return student, teacher


def recipe(args, work: Path, student: Path, teacher: Path, agora: bool, train_rows: int, name: str) -> dict:
    out = {
        "task": "rte",
        "seed": args.seed,
        "model": {"name": str(student), "freeze_word_embeddings": args.shape == "bort"},
        "optim": {"lr": 1e-4, "warmup_ratio": 0.1},
        "data": {"dir": args.data_dir, "max_length": args.max_length, "batch_size": args.batch_size,
                 "max_train_samples": train_rows, "max_eval_samples": args.eval_rows,
                 "cache_dir": str(work / "data-cache")},
        "trainer": {"max_epochs": args.epochs, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False, "num_sanity_val_steps": 0},
        "output": {"dir": str(work / "runs" / name), "predict": False, "export": False},
    }
    if agora:
        out["agora"] = {"enabled": True, "expand_every_n_epochs": 1, "expand_from": "mistakes",
                        "variants_per_source": 4, "alpha": 0.5, "temperature": 2.0, "gamma": 1.0, "rho": 0.5}
        out["teacher"] = {"path": str(teacher), "cache_dir": str(work / "teacher-cache")}
    return out


def timed_fit(data: dict) -> tuple[float, dict]:
    from agora.config import validate_recipe
    from agora.trainer import AgoraTrainer

    start, cpu = time.perf_counter(), time.process_time()
    result = AgoraTrainer(validate_recipe(data, source="benches/agora_overhead.py")).fit()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    return seconds, {"steps": result.history[-1]["step"], "agora": metrics["agora"], "cpu": cpu}


def search_recipe(args, work: Path, student: Path, teacher: Path, agora: bool) -> dict:
    name = "agora" if agora else "plain"
    out = recipe(args, work, student, teacher, agora, args.train_rows, f"search-{name}")
    out["search"] = {"space": {"optim.lr": [1e-4, 5e-5], "seed": [0, 1]}, "max_rounds": 2, "max_replays": 0,
                     "min_prune_fraction": 0.25}
    out["data"]["cache_dir"] = str(work / "data-cache")
    if agora:
        out["teacher"]["cache_dir"] = str(work / f"teacher-cache-{time.time_ns()}")  # cold
    return out


def run_search_arm(data: dict) -> tuple[float, dict]:
    import shutil

    from agora.config import validate_recipe
    from agora.search import run_search

    shutil.rmtree(data["output"]["dir"], ignore_errors=True)
    start = time.perf_counter()
    result = run_search(validate_recipe(data, source="benches/agora_overhead.py --search"), progress=lambda _: None)
    return time.perf_counter() - start, result.state


def where_agora_time_goes(run_dir: Path, state: dict) -> dict[str, float]:
    """Seconds of the Agora arm spent on Agora's own work, read from its fits' and rounds' reports."""
    scoring_d = callback = 0.0
    for trial in sorted((run_dir / "trials").glob("*/metrics.json")):
        report = json.loads(trial.read_text())["agora"]
        scoring_d += (report.get("teacher") or {}).get("seconds", 0.0)
        callback += sum(e.get("seconds", 0.0) for e in report.get("epochs", []))
    growing = sum((r.get("added") or {}).get("seconds", 0.0) for r in state["rounds"])
    return {"teacher scores D at each fit's start": scoring_d, "callback (expand, label, reweight) per epoch": callback,
            "search grows D between rounds": growing}


def search_main(args, work: Path, student: Path, teacher: Path) -> None:
    arms = {"plain": search_recipe(args, work, student, teacher, False),
            "agora": search_recipe(args, work, student, teacher, True)}
    # untimed: the tokenization cache (both arms read the same slices)
    first = {**arms["plain"], "search": {**arms["plain"]["search"], "max_rounds": 1, "space": {"seed": [0]}}}
    run_search_arm(first)
    times, states = {}, {}
    for name, data in arms.items():
        times[name], states[name] = run_search_arm(data)
    fits = {name: state["fits"] for name, state in states.items()}
    assert fits["plain"] == fits["agora"], fits
    print(f"\nRTE, {args.shape} student and teacher, 2-round search over 4 θs ({fits['plain']} fits each), "
          f"{args.epochs} epochs per fit, cold teacher cache, {torch.get_num_threads()} threads")
    print(f"plain search: wall {times['plain']:7.1f} s")
    print(f"Agora search: wall {times['agora']:7.1f} s ({states['agora']['teacher_forward_calls']} teacher forward passes "
          f"growing D between rounds; {states['agora']['d_rows']} rows added)")
    extra = times["agora"] - times["plain"]
    print(f"Agora's extra time: {extra:.1f} s, of which:")
    for what, seconds in where_agora_time_goes(Path(arms["agora"]["output"]["dir"]), states["agora"]).items():
        print(f"  {what}: {seconds:.1f} s")
    print("  (the rest: evaluating E_gen every epoch, the distillation loss, loading the teacher and the "
          "search's data module)")
    print(f"ratio: {times['agora'] / times['plain']:.2f}x wall (target <= 1.3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR", "../shared/data"))
    parser.add_argument("--shape", choices=["bort", "tiny"], default="bort")
    parser.add_argument("--train-rows", type=int, default=200, help="rows of train read; Agora carves E from them")
    parser.add_argument("--eval-rows", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/agora-overhead")
    parser.add_argument("--search", action="store_true", help="Agora's whole cost: a 2-round search, cold teacher cache")
    args = parser.parse_args()
    from needs import check

    check("benches/agora_overhead.py", args.data_dir, tasks=["rte"], files=["tokenizers/roberta"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args.data_dir = str(Path(args.data_dir).resolve())

    from agora.data.evalset import default_e_size

    work = Path(args.work)
    student, teacher = save_models(args, work)
    if args.search:
        return search_main(args, work, student, teacher)
    d_rows = args.train_rows - default_e_size(args.train_rows, args.eval_rows)  # |D| once E is carved out
    arms = {"plain": recipe(args, work, student, teacher, False, d_rows, "plain"),
            "agora": recipe(args, work, student, teacher, True, args.train_rows, "agora")}
    # untimed: fills the tokenization caches and the teacher cache (the plain arm needs one epoch for that)
    timed_fit(arms["agora"])
    timed_fit({**arms["plain"], "trainer": {**arms["plain"]["trainer"], "max_epochs": 1}})
    times: dict[str, list[float]] = {"plain": [], "agora": []}
    cpu: dict[str, list[float]] = {"plain": [], "agora": []}
    info: dict[str, dict] = {}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits both arms alike
        for name, data in arms.items():
            seconds, info[name] = timed_fit(data)
            times[name].append(round(seconds, 2))
            cpu[name].append(round(info[name]["cpu"], 2))
    assert info["plain"]["steps"] == info["agora"]["steps"], info
    report = info["agora"]["agora"]
    plain, agora = statistics.median(times["plain"]), statistics.median(times["agora"])
    print(f"\nRTE, {args.shape} student, |D| = {d_rows} rows, batch {args.batch_size}, {args.epochs} epochs, "
          f"{info['plain']['steps']} optimiser steps per arm, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"plain fine-tuning:                  wall {plain:7.1f} s {times['plain']}  cpu {cpu['plain']}")
    print(f"Agora (expand + distil + reweight): wall {agora:7.1f} s {times['agora']}  cpu {cpu['agora']}")
    print(f"  {report['generated']} rows generated, {report['teacher_forward_calls']} teacher forward passes, "
          f"{report['teacher_cache_hits']} cache hits")
    cpu_ratio = statistics.median(cpu["agora"]) / statistics.median(cpu["plain"])
    print(f"ratio: {agora / plain:.2f}x wall, {cpu_ratio:.2f}x process CPU time (target <= 1.25x)")


if __name__ == "__main__":
    main()
