"""Running the bench's fits: recipes, two worker processes of one thread each, reuse of finished fits.

A tiny student trains fastest on one thread, and two processes keep both cores busy (two threads
per fit on two shared cores spin and slow every step). Each finished fit leaves ``bench.json`` in
its run dir; a rerun reuses a fit whose stored recipe resolves to the same config. Every worker has
its own teacher cache directory (one writer per cache), so a fit's teacher forward passes depend on
which worker ran it; the table reports teacher rows *labelled*, which do not. Each starts from the task's
cache, where the parent put the teacher's outputs for the pool before the workers started: the pool's
rows cost the workers no teacher pass (:func:`worker_cache`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from evidence.arms import (
    pool_labelled,
    teacher_labelled_generated,
    teacher_rows_labelled,
)
from evidence.plan import STUDENT_LAYERS


@dataclasses.dataclass
class Fit:
    task: str
    arm: str
    lr: float
    seed: int
    dev: float
    dev_all: dict
    e_sel: float
    steps: int
    teacher_rows: int
    generated_labelled: int
    generated: int
    wall_s: float
    pool_labelled: int = 0
    """Pool rows the teacher labelled for this fit (:func:`evidence.arms.pool_labelled`): pool-kd's budget."""
    selection: dict = dataclasses.field(default_factory=dict)
    """What the fit's expansions did (:func:`selection_of`)."""
    code: str = "unrecorded"
    """The commit the fit ran on (``+dirty`` with uncommitted changes); fits made before it was recorded:
    ``unrecorded``."""
    reused: bool = False
    """Read from an earlier run's ``bench.json`` rather than fitted by this one."""


CODE_PATHS = ("agora", "benches/agora_vs_plain.py", "benches/evidence", "pyproject.toml")
"""What a fit runs: a change elsewhere (the results under ``benches/results``, the docs) leaves it clean."""


def code_version(paths: tuple[str, ...] = CODE_PATHS) -> str:
    """The checkout's commit, ``+dirty`` when the code a fit runs (``paths``) differs from it (``unknown``
    outside git)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def run_dir(work: Path, task: str, arm: str, lr: float, seed: int, layers: int = STUDENT_LAYERS) -> Path:
    """A fit's directory; a student of another size than the default's gets its own (``-L4``)."""
    return work / "runs" / task / arm / (f"lr{lr:g}-s{seed}" + (f"-L{layers}" if layers != STUDENT_LAYERS else ""))


def comparable(config: dict) -> dict:
    """A resolved recipe without what may differ between two runs of the same fit: the worker's cache,
    and when dev is scored (``data.eval_dev`` gives the same fit and final scores either way: tested)."""
    return {**config, "teacher": {**config["teacher"], "cache_dir": None},
            "data": {**config["data"], "eval_dev": None}}


def resolved(recipe: dict | None) -> dict | None:
    """A stored recipe as today's code resolves it (new settings at their defaults); None if it no longer
    validates. Two fits ran the same recipe when their resolved recipes are equal."""
    from agora.config import validate_recipe
    from agora.errors import RecipeError

    if recipe is None:
        return None
    try:
        return comparable(validate_recipe(recipe, source="bench.json").to_dict())
    except RecipeError:
        return None


def _worker_init(threads: int) -> None:
    import logging
    import os
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "agora", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def fit(job: dict) -> dict:
    """Run (or reuse) one fit; returns the :class:`Fit` fields. ``job``: task, arm, lr, seed, recipe, dir."""
    from agora.config import validate_recipe
    from agora.data.cards import load_task
    from agora.trainer import AgoraTrainer

    recipe = job["recipe"]
    worker_cache(recipe)
    directory = Path(job["dir"])
    cfg = validate_recipe(recipe, source=f"benches/agora_vs_plain.py ({job['arm']})")
    wanted = comparable(cfg.to_dict())
    done = directory / "bench.json"
    stored = json.loads(done.read_text()) if done.exists() else None
    reused = stored is not None and resolved(stored.get("recipe")) == wanted
    if not reused:
        if directory.exists():
            shutil.rmtree(directory)
        card = load_task(cfg.task)
        start = time.perf_counter()
        result = AgoraTrainer(cfg).fit()
        wall = time.perf_counter() - start
        metrics = json.loads((directory / "metrics.json").read_text())
        report = metrics.get("agora") or {}
        stored = {
            "dev": result.scores[f"{card.select_split}/{card.main_metric}"], "dev_all": result.scores,
            "e_sel": result.main_score, "steps": int(metrics["epochs"][-1]["step"]),
            "teacher_rows": teacher_rows_labelled(report), "generated_labelled": teacher_labelled_generated(report),
            "generated": report.get("generated", 0), "wall_s": round(wall, 1), "recipe": cfg.to_dict(),
            "code": code_version()}
        shutil.rmtree(directory / "checkpoints", ignore_errors=True)
        shutil.rmtree(directory / "logs", ignore_errors=True)
        done.write_text(json.dumps(stored))
    fields = {k: stored[k] for k in ("dev", "dev_all", "e_sel", "steps", "teacher_rows", "generated_labelled",
                                     "generated", "wall_s")}
    fields["code"], fields["reused"] = stored.get("code", "unrecorded"), reused
    report = json.loads((directory / "metrics.json").read_text()).get("agora") or {}
    fields["pool_labelled"], fields["selection"] = pool_labelled(report), selection_of(report, directory)
    return {"task": job["task"], "arm": job["arm"], "lr": job["lr"], "seed": job["seed"], **fields}


def worker_cache(recipe: dict) -> None:
    """Give the fit of ``recipe`` this worker process's own teacher cache, ``<teacher.cache_dir>-w<pid>`` (one
    writer per cache: a worker never waits on the other's lock while it scores), holding the parts of the task's
    cache ``teacher.cache_dir``, which the bench's parent wrote before the workers started (the pool's teacher
    outputs, ``embed_pool``) and never writes while they run: hard links (a copy where links fail), so the pool
    rows are cache hits, each part checked on read as any part is (a damaged one is set aside and its rows
    scored again)."""
    import os

    from agora.files import atomic_write

    shared = recipe.get("teacher", {}).get("cache_dir")
    if not shared:
        return
    own = Path(f"{shared}-w{os.getpid()}")
    recipe["teacher"]["cache_dir"] = str(own)
    for part in Path(shared).glob("*/part-*.arrow"):
        target = own / part.parent.name / part.name
        if target.exists() or target.with_name(target.name + ".corrupt").exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(part, target)
        except OSError:  # a filesystem without hard links
            atomic_write(target, part.read_bytes())


def selection_of(report: dict, directory: Path) -> dict:
    """A fit's expansions, summed from ``metrics.json``'s ``agora.epochs``: rows the teacher scored, rows
    kept, distinct anchors over the fit (sources of its kept rows, from ``agora/generated.jsonl``), the
    teacher/gold agreement of the kept rows (weighted by rows kept; expansions that report it), the
    near-duplicate rate (skipped / considered; selection only) and the rows drawn at random. None where
    no expansion reports it."""
    epochs = [e for e in report.get("epochs", []) if "kept" in e]
    agree = [(e["agreement_kept"], e["kept"]) for e in epochs if e.get("agreement_kept") is not None]
    near = [((e.get("rejected") or {}).get("near_duplicate", 0), e["kept"]) for e in epochs
            if e.get("near_duplicate_rate") is not None]
    anchors = None
    generated = directory / "agora" / "generated.jsonl"
    if generated.is_file():
        rows = [json.loads(line) for line in generated.read_text(encoding="utf-8").splitlines() if line.strip()]
        anchors = len({r["source_idx"] for r in rows if r.get("source_idx", -1) >= 0})
    agreeing, considered = sum(k for _, k in agree), sum(n + k for n, k in near)
    return {"scored": sum(e.get("scored") or 0 for e in epochs), "kept": sum(e["kept"] for e in epochs),
            "anchors": anchors, "agreement_kept": sum(a * k for a, k in agree) / agreeing if agreeing else None,
            "near_duplicate_rate": sum(n for n, _ in near) / considered if considered else None,
            "random": sum(e.get("random") or 0 for e in epochs)}


class Pool:
    """Fits in ``workers`` processes of ``threads`` threads (or in this process with ``workers`` 1)."""

    def __init__(self, workers: int, threads: int = 1):
        self.workers, self.threads = workers, threads
        self._executor = None
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_worker_init, initargs=(threads,))
        else:
            _worker_init(threads)

    def submit(self, job: dict):
        from concurrent.futures import Future

        if self._executor is not None:
            return self._executor.submit(fit, job)
        future: Future = Future()
        try:
            future.set_result(fit(job))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(err)
        return future

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
