"""Finding the run that predicts each benchmark file, and predicting test splits a run lacks.

A *run* is a finished run dir (``metrics.json`` and/or ``best/config.json``; see
:mod:`agora.fit.rundir`) or a bare exported model (a ``config.json`` with an ``agora`` entry). Its task
is ``metrics.json``'s ``task``, else the export's ``agora.task``, else ``config.yaml``'s ``task``.
Saved test predictions are read from ``predictions/``; a missing one is predicted from the
export with the core pipeline (:class:`~agora.data.datamodule.TaskDataModule`,
:class:`~agora.fit.module.TaskModule`, ``lightning.Trainer.predict``,
:func:`~agora.fit.rundir.prediction_rows`) and saved where the run would have saved it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from agora.submission.spec import FileSpec, SubmissionError, norm

SKIP_DIRS = {"checkpoints", "logs", "predictions", "best", "__pycache__"}


@dataclass
class Run:
    path: Path
    task: str
    model_dir: Path | None
    predictions_dir: Path | None

    @property
    def key(self) -> str:
        return norm(self.task)

    @cached_property
    def recipe(self) -> dict:
        """The run's resolved recipe (``config.yaml``), or ``{}`` for a bare export."""
        path = self.path / "config.yaml"
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def data_setting(self, key: str):
        return (self.recipe.get("data") or {}).get(key)

    def predictions_file(self, spec: FileSpec) -> Path | None:
        """The saved predictions for ``spec``'s test split (own split, or ``<task>-<split>`` of a test-only task)."""
        if self.predictions_dir is None or not self.predictions_dir.is_dir():
            return None
        if not spec.extra:
            path = self.predictions_dir / f"{spec.split}.jsonl"
            return path if path.is_file() else None
        wanted = {name + norm(spec.split) for name in spec.extra}
        for path in sorted(self.predictions_dir.glob("*.jsonl")):
            if norm(path.stem) in wanted:
                return path
        return None

    def __str__(self) -> str:
        return str(self.path)


def _json_field(path: Path, key: str):
    """``key`` of the JSON object in ``path``; None when the file is absent, unreadable or not an object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def _task_of(path: Path) -> tuple[str | None, Path | None, Path | None]:
    """(task, exported model dir, predictions dir) of a directory, or (None, ...) if it is no run."""
    export = None
    for candidate in (path / "best", path):
        agora = _json_field(candidate / "config.json", "agora")
        if isinstance(agora, dict):
            export = (candidate, agora.get("task"))
            break
    metrics = path / "metrics.json"
    task = _json_field(metrics, "task")
    if task is None and export is not None:
        task = export[1]
    if task is None and metrics.is_file() and (path / "config.yaml").is_file():
        raw = (yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}).get("task")
        task = Path(str(raw)).stem if raw else None
    if task is None:
        return None, None, None
    predictions = path / "predictions"
    return str(task), export[0] if export else None, predictions if predictions.is_dir() else None


def open_run(path: Path) -> Run | None:
    task, model_dir, predictions = _task_of(path)
    return Run(path, task, model_dir, predictions) if task else None


def discover(paths: list[str | os.PathLike]) -> tuple[list[Run], list[str]]:
    """Every run under the given paths (each a run dir, an export, or a folder of them)."""
    runs: list[Run] = []
    problems: list[str] = []
    for given in paths:
        root = Path(given).expanduser()
        if not root.is_dir():
            problems.append(f"{given}: no such directory")
            continue
        found = open_run(root)
        if found is not None:
            runs.append(found)
            continue
        before = len(runs)
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            if Path(dirpath) == root:
                continue
            run = open_run(Path(dirpath))
            if run is not None:
                runs.append(run)
                dirnames[:] = []
        if len(runs) == before:
            problems.append(f"{given}: no finished run in it (a run dir has metrics.json or best/config.json)")
    unique = {run.path.resolve(): run for run in runs}
    return list(unique.values()), problems


# -- predicting a test split from the exported model ---------------------------------------------
def predict(run: Run, keys: list[str], data_dir: Path | None) -> dict[str, list[dict]]:
    """Predict test splits with the run's export. ``keys``: ``split`` or ``task/split`` (AX: ``ax/test``).

    The run's recipe gives the data settings (``max_length`` from the export wins); the whole
    split is predicted whatever ``data.max_predict_samples`` was, from the card's own test file
    under the data dir (the one the leaderboard scores; ``data.files`` overrides are for training).
    """
    import lightning as L
    from transformers import AutoTokenizer

    from agora.config import validate_recipe
    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import model_class
    from agora.fit.module import TaskModule
    from agora.paths import cache_dir
    from agora.paths import data_dir as default_data_dir
    from agora.fit.rundir import prediction_rows
    from agora.data.splits import load_split
    from agora.data.cards import load_task

    if run.model_dir is None:
        raise SubmissionError(f"run {run} has no exported model (best/) to predict with")
    card = load_task(run.task)
    exported = json.loads((run.model_dir / "config.json").read_text(encoding="utf-8")).get("agora", {})
    data = dict(run.recipe.get("data") or {})
    data["max_predict_samples"] = None
    if exported.get("max_length"):
        data["max_length"] = exported["max_length"]
    cfg = validate_recipe({"task": card.name, "seed": run.recipe.get("seed", 0), "data": data}, source=f"{run}/config.yaml")
    tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
    model = model_class(card).from_pretrained(run.model_dir)
    dm = TaskDataModule(cfg, card, tokenizer)
    root = Path(data_dir) if data_dir is not None else default_data_dir(cfg.data.dir)
    cache = cache_dir(cfg.data.cache_dir)
    for key in keys:
        key_card = dm.card_of(key)
        ds = load_split(key_card, key.split("/")[-1], root, cfg.data.source, cache)
        dm.add_split(key, ds, key_card, predict=True)
    module = TaskModule(model, card, cfg, [], dm.predict_names)
    from agora.fit.precision import resolve_trainer

    trainer_cfg, _ = resolve_trainer(run.recipe.get("trainer") or {})
    trainer = L.Trainer(
        accelerator=trainer_cfg.get("accelerator", "auto"), devices=1, precision=trainer_cfg["precision"],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, default_root_dir=str(run.path),
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
    return {key: prediction_rows(dm.card_of(key), module.predictions[key], with_gold=False) for key in keys}


def predict_key(run: Run, spec: FileSpec) -> str:
    """The data-module key of ``spec``'s test split in ``run`` (``test_matched``, ``ax/test``)."""
    if not spec.extra:
        return spec.split
    from agora.data.cards import load_task

    for extra in load_task(run.task).extra_test_tasks:
        if norm(extra) in spec.extra:
            return f"{extra}/{spec.split}"
    raise SubmissionError(
        f"run {run} (task {run.task}) does not predict {spec.file}: its task card lists no test-only task "
        f"named like {sorted(spec.extra)} in extra_test_tasks"
    )


def saved_name(key: str) -> str:
    """Where the trainer saves a key's predictions (``ax/test`` -> ``ax-test.jsonl``)."""
    return f"{key.replace('/', '-')}.jsonl"
