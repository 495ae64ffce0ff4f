"""A round of Agora's search on Ray Tune, one fit at a time against two at once, on this machine.

One round of 4 fits (Θ = 2 learning rates x 2 seeds, ``max_rounds: 1``) of a BORT-shaped student on
real RTE pairs, run by ``search.runner: ray`` on a local Ray with this machine's CPUs. Each fit uses
as many torch threads as its trial has CPUs (``search.ray.cpus_per_trial``). Three arms, interleaved
``--repeats`` times (so load from other processes hits them alike), the medians compared:

- ``1 at once x 2 threads``: ``max_concurrent_trials: 1``, ``cpus_per_trial: 2``: one fit uses both cores;
- ``2 at once x 1 thread``:  ``max_concurrent_trials: 2``, ``cpus_per_trial: 1``: two fits share them;
- ``1 at once x 1 thread`` (``--concurrency-alone``): ``max_concurrent_trials: 1``, ``cpus_per_trial: 1``:
  one fit, one core idle (the longest arm: off by default).

The first two use the whole machine: their ratio is what running a round's fits at once gains here.
The last against the second is the concurrency alone, at equal threads per fit. On 2 cores, two fits
at once cannot beat one fit on 2 threads by 2x: that fit already uses both cores, as far as its
kernels scale on 2 threads. Two fits at once gain only that shortfall, plus the serial parts a fit
has (data loading, evaluation, Python overhead), which a second fit overlaps. Each trial's process
also pays its start (imports) once per round. The wall time is the whole round, from ``run_search``
to its report, Ray already started; fits on Agora off (plain fine-tuning: no teacher).

    AGORA_DATA_DIR=../shared/data python benches/search_parallel.py                 # a few minutes on 2 idle CPU cores
    AGORA_DATA_DIR=../shared/data python benches/search_parallel.py --train-rows 400 --epochs 2 --repeats 2  # longer fits
    AGORA_DATA_DIR=../shared/data python benches/search_parallel.py --shape tiny    # a minute: overheads only

The figures are wall times: run it on an otherwise idle machine, or the ratio measures the load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

ARMS = {"1 at once x 2 threads": (1, 2), "2 at once x 1 thread": (2, 1), "1 at once x 1 thread": (1, 1)}
"""arm -> (max_concurrent_trials, cpus_per_trial)."""


def save_student(args, work: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertModel

    from agora.fit.model import bort_config

    student = work / f"student-{args.shape}"
    torch.manual_seed(args.seed)
    shape = {"bort": {},
             "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
             "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37},
             }[args.shape]
    BertModel(bort_config(**shape)).save_pretrained(student)
    AutoTokenizer.from_pretrained(Path(args.data_dir) / "tokenizers" / "roberta").save_pretrained(student)
    return student


def recipe(args, work: Path, student: Path, at_once: int, cpus: int, name: str) -> dict:
    return {
        "task": "rte", "seed": args.seed,
        "model": {"name": str(student), "freeze_word_embeddings": args.shape != "tiny"},
        "optim": {"lr": 1e-4, "warmup_ratio": 0.1},
        "data": {"dir": args.data_dir, "max_length": args.max_length, "batch_size": args.batch_size,
                 "max_train_samples": args.train_rows, "max_eval_samples": args.eval_rows,
                 "cache_dir": str(work / "data-cache")},
        "trainer": {"max_epochs": args.epochs, "accelerator": "cpu", "precision": "32-true",
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0},
        "output": {"dir": str(work / "runs" / name), "predict": False, "export": False},
        "search": {"space": {"optim.lr": [1e-4, 5e-5], "seed": [0, 1]}, "max_rounds": 1, "max_replays": 0,
                   "runner": "ray", "ray": {"max_concurrent_trials": at_once, "cpus_per_trial": cpus}},
    }


def run_round(data: dict) -> tuple[float, list[float]]:
    """Wall time of the round (``run_search``) and each fit's own wall time, from its progress line."""
    from agora.config import validate_recipe
    from agora.search import run_search

    shutil.rmtree(data["output"]["dir"], ignore_errors=True)
    lines: list[str] = []
    start = time.perf_counter()
    run_search(validate_recipe(data, source="benches/search_parallel.py"), progress=lines.append)
    wall = time.perf_counter() - start
    fits = [float(m.group(1)) for line in lines if (m := re.search(r"; (\d+\.\d) s, \d+ left in the round", line))]
    assert len(fits) == 4, lines
    return wall, fits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("AGORA_DATA_DIR", "../shared/data"))
    parser.add_argument("--shape", choices=["bort", "small", "tiny"], default="small",
                        help="student: BORT's shape, 4 layers x 256, or 2 layers x 32")
    parser.add_argument("--train-rows", type=int, default=160)
    parser.add_argument("--eval-rows", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency-alone", action="store_true",
                        help="also run 1 fit at a time on 1 thread (two fits at once against one, at equal threads)")
    parser.add_argument("--work", default="/tmp/agora-search-parallel")
    args = parser.parse_args()
    from needs import check

    check("benches/search_parallel.py", args.data_dir, tasks=["rte"], files=["tokenizers/roberta"],
          packages={"ray": ("2.60", "search.runner: ray")})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a Ray of this machine: loopback only
    args.data_dir = str(Path(args.data_dir).resolve())
    work = Path(args.work)
    student = save_student(args, work)

    import ray

    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    arms = {name: recipe(args, work, student, at_once, cpus, name.replace(" ", "-"))
            for name, (at_once, cpus) in ARMS.items()
            if cpus <= cores and (args.concurrency_alone or name != "1 at once x 1 thread")}
    first = next(iter(arms.values()))  # untimed: one fit on this process fills the data caches
    from agora.config import validate_recipe
    from agora.search import run_search

    run_search(validate_recipe({**first, "output": {**first["output"], "dir": str(work / "runs" / "warm-up")},
                                "search": {**first["search"], "space": {"seed": [0]}, "runner": "local"}}),
               progress=lambda line: None)
    load_before = os.getloadavg()[0]  # other processes' load distorts wall times: printed with them
    walls: dict[str, list[float]] = {name: [] for name in arms}
    fits: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, data in arms.items():
            wall, each = run_round(data)
            walls[name].append(round(wall, 1))
            fits[name] += each
    ray.shutdown()

    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    print(f"\nOne round of 4 fits: RTE, {args.shape} student, {args.train_rows} train rows, {args.epochs} epoch(s), "
          f"fp32; {cpu}, {cores} cores; median of {args.repeats}; load average (1 min) {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    median = {name: statistics.median(w) for name, w in walls.items()}
    for name in arms:
        print(f"  {name:24s} round wall {median[name]:7.1f} s {walls[name]}   one fit {statistics.median(fits[name]):6.1f} s")
    if "1 at once x 2 threads" in median:
        print(f"ratio, the whole machine either way (1 at once x 2 threads / 2 at once x 1 thread): "
              f"{median['1 at once x 2 threads'] / median['2 at once x 1 thread']:.2f}x")
    if "1 at once x 1 thread" in median:
        print(f"ratio, concurrency alone (1 at once x 1 thread / 2 at once x 1 thread): "
              f"{median['1 at once x 1 thread'] / median['2 at once x 1 thread']:.2f}x")
    print("On 2 cores the first ratio cannot reach 2x: one fit on 2 threads already uses both cores; two fits at once"
          " gain what that fit leaves idle (serial parts, kernels that do not scale to 2 threads). The concurrency-alone"
          " ratio is bounded by 2x, less each trial's process start. Other processes' load changes both: wall times.")


if __name__ == "__main__":
    main()
