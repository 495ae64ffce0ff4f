"""What a run leaves behind, written atomically by rank 0.

```
<run>/config.yaml           the fully resolved recipe
<run>/metrics.json          per-epoch and final scores, the best checkpoint, the paths
<run>/predictions/<split>.jsonl   {"idx", "label", ...} ordered by idx (dev splits carry "gold")
<run>/mistakes.json         per evaluated split: its row count and the idx of the rows the model gets wrong
<run>/best/                 save_pretrained export: model + tokenizer + label names
<run>/checkpoints/          Lightning checkpoints (the recipe is inside each)
<run>/logs/                 CSV logs of every logged value
<run>/.lock, .lock.json     held while a run writes here: one writer per dir (:mod:`agora.fit.runlock`)
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agora.data.cards import TaskCard
from agora.data.formats import find_mistakes, format_of
from agora.errors import RecipeError
from agora.files import atomic_write, write_json, write_jsonl
from agora.fit import runlock

OUTPUTS = ("config.yaml", "metrics.json", "mistakes.json", "best", "checkpoints", "logs", "predictions", "agora",
           "search", "trials", "report.md", "plots", "tensorboard", "mlruns", "wandb", "trackers")
"""What a fit or a search writes in its run dir: what ``output.overwrite: true`` deletes (nothing else)."""


RANKS_RUN_DIR = "AGORA_RUN_DIR"
"""The environment variable in which a fit hands its run dir to the DDP ranks it starts (:func:`shared_with_ranks`)."""


def resolve_run_dir(configured: str | None, task: str) -> Path:
    """``output.dir``; else, in a DDP rank that rank 0 started, the run dir rank 0 handed over
    (:func:`shared_with_ranks`); else ``runs/<task>-<date>-<time>``."""
    if configured:
        return Path(configured)
    if os.environ.get(RANKS_RUN_DIR):
        return Path(os.environ[RANKS_RUN_DIR])
    return Path("runs") / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextlib.contextmanager
def shared_with_ranks(path: Path) -> Iterator[None]:
    """For the span of a fit, ``path`` in ``AGORA_RUN_DIR``: Lightning's launcher starts the other DDP ranks
    by running the same command again, and they resolve this dir rather than a ``runs/<task>-<time>`` of
    their own (:func:`resolve_run_dir`). The environment is left as it was found."""
    before = os.environ.get(RANKS_RUN_DIR)
    os.environ[RANKS_RUN_DIR] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RANKS_RUN_DIR, None)
        else:
            os.environ[RANKS_RUN_DIR] = before


def is_worker() -> bool:
    """A DDP rank other than 0 (started by Lightning's launcher or torchrun): rank 0 owns the run dir."""
    return any(int(os.environ.get(name, "0") or 0) > 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


@dataclasses.dataclass
class RunDir:
    """A run dir checked before any work (:func:`claim`)."""

    path: Path
    created: bool
    """It did not exist: a run that fails before training leaves nothing behind (:meth:`release`)."""
    earlier: str | None
    """``finished`` or ``unfinished`` when it holds an earlier run, else None."""
    overwrite: bool

    def clear_earlier(self) -> None:
        """Delete the earlier run's outputs (``output.overwrite: true``), once every check has passed."""
        if self.overwrite and self.earlier is not None:
            for name in OUTPUTS:
                target = self.path / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
            self.earlier = None

    def release(self) -> None:
        """After a run failed before training: remove the dir if this run created it and no checkpoint is in it."""
        if self.created and not is_worker() and self.path.is_dir() and not any((self.path / "checkpoints").glob("*.ckpt")):
            shutil.rmtree(self.path, ignore_errors=True)


def _nearest_existing(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            return parent
    return Path(".")


def check_writable(path: Path, what: str = "output.dir") -> None:
    """RecipeError unless ``path`` is (or can be created as) a directory this process can write in; nothing is
    created (the probe is a temporary file in the nearest existing folder, deleted at once)."""
    if path.exists() and not path.is_dir():
        raise RecipeError(f"{what} {path} is an existing file, not a directory: give the path of a directory "
                          "(it is created if missing)")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise RecipeError(f"{what} {path} cannot be created: {base} is a file, not a directory; choose another {what}")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise RecipeError(f"{what} {path} is not writable ({base}: {err.strerror or err}); choose another {what}, "
                          "or fix its permissions") from None


@contextlib.contextmanager
def locked(path: Path):
    """Hold the run dir's lock (:mod:`agora.fit.runlock`) for the block, after checking it can be written: a
    second run into it fails at once (``RunDirLocked``) naming the process that holds it."""
    check_writable(Path(path))
    with runlock.locked(Path(path), is_worker()) as held:
        yield held


def earlier_run(path: Path) -> str | None:
    """``finished`` (its metrics.json is written), ``unfinished`` (config.yaml, checkpoints, logs or a search
    state, but no metrics.json), or None."""
    if not path.is_dir():
        return None
    if (path / "metrics.json").exists():
        return "finished"
    if any((path / name).exists() for name in ("config.yaml", "checkpoints", "logs", "search")):
        return "unfinished"
    return None


def claim(path: Path, overwrite: bool, resume_from: str | None, resumable: str) -> RunDir:
    """Check ``output.dir`` before any work: a directory this process can write in, which holds no earlier run
    unless the recipe says what to do with it (``output.overwrite: true``, or ``output.resume_from``).
    ``resumable``: what ``resume_from: last`` continues, named in the message (the last checkpoint, a search's state)."""
    path = Path(path)
    check_writable(path)
    if overwrite and resume_from is not None:
        raise RecipeError("output.overwrite: true deletes the earlier run and output.resume_from continues it: "
                          "set only one of them")
    earlier = None if is_worker() else earlier_run(path)
    if earlier is not None and not overwrite and resume_from is None:
        what = "a finished run (its metrics.json is written)" if earlier == "finished" else "an unfinished run"
        raise RecipeError(
            f"output.dir {path} holds {what}; a run never replaces one by accident. Set output.resume_from: last "
            f"to continue it ({resumable}), output.overwrite: true to delete it and start again, or choose another "
            "output.dir"
        )
    return RunDir(path=path, created=not path.exists() or runlock.created_by_lock(path), earlier=earlier,
                  overwrite=overwrite)


def write_config(run_dir: Path, cfg_dict: dict[str, Any], header: str = "") -> None:
    """``config.yaml``: the resolved recipe, less what it said to do with an earlier run in the dir
    (``output.overwrite``, ``output.resume_from``), so running it again never deletes or resumes by itself."""
    cfg_dict = {**cfg_dict, "output": {**cfg_dict.get("output", {}), "overwrite": False, "resume_from": None}}
    text = yaml.safe_dump(cfg_dict, sort_keys=False)
    atomic_write(run_dir / "config.yaml", (header + "\n" if header else "") + text)


def write_mistakes(run_dir: Path, card: TaskCard, evaluated: dict[str, dict[str, np.ndarray]]) -> None:
    """``{split: {"rows": n, "mistakes": [idx, ...]}}`` over the model's rows (one per MultiRC answer,
    ReCoRD candidate, RACE question), whatever shape the prediction files take; Agora's rounds read
    E_gen's mistakes from it (argmax != gold; ``|score - gold| > 0.5`` for regression)."""
    regression = card.format == "regression"
    report = {name: {"rows": int(len(out["idx"])),
                     "mistakes": np.asarray(out["idx"])[find_mistakes(out["logits"], out["labels"], regression)].tolist()}
              for name, out in evaluated.items() if len(out.get("idx", ()))}
    write_json(run_dir / "mistakes.json", report, indent=None)


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json(run_dir / "metrics.json", metrics)


def prediction_rows(card: TaskCard, out: dict[str, np.ndarray], with_gold: bool) -> list[dict]:
    """One JSON-able dict per example (per paragraph for MultiRC, per query for ReCoRD), ordered by
    idx: label name (or score) and probabilities; the shapes per format are in :mod:`agora.data.formats`.
    ``out`` is a gathered split (``idx``, ``logits``, ``labels``, and ``meta`` where the format needs it)."""
    return format_of(card).prediction_rows(card, out, out.get("meta"), with_gold)


def write_predictions(path: Path, rows: list[dict]) -> None:
    write_jsonl(path, rows)


def summary_table(task: str, scores: dict[str, float], run_dir: Path, best_dir: Path | None, extra: dict[str, str] | None = None) -> str:
    """A plain-text table of the final scores and where everything is."""
    def shown(key: str, value) -> str:  # scores x100; the log-likelihood (a tie-breaker) as it is
        if not isinstance(value, float):
            return str(value)
        return f"{value:.4f}" if key.endswith("/loglik") else f"{value * 100:.2f}"

    rows = [(k.removeprefix("val/"), shown(k, v)) for k, v in scores.items() if k != "val_score"]
    rows += [("run dir", str(run_dir))]
    if best_dir is not None:
        rows.append(("exported model", str(best_dir)))
    rows += list((extra or {}).items())
    width = max(len(k) for k, _ in rows)
    value_width = max(len(v) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (value_width + 2) + "+"
    title = f" {task}: final scores on the best checkpoint (x100) "
    out = [title.center(len(line), "="), line]
    out += [f"| {k.ljust(width)} | {v.ljust(value_width)} |" for k, v in rows]
    out.append(line)
    return "\n".join(out)
