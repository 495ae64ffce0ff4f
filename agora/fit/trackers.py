"""Experiment trackers (``output.loggers``): Lightning's own TensorBoard, MLflow and W&B loggers beside the
CSV log every fit keeps (``logs/metrics.csv``, :class:`agora.fit.resume.RunLogger`).

Every tracker gets what ``metrics.csv`` gets (the module's metrics and Agora's per-epoch statistics reach every
Lightning logger), and (:func:`start`, :func:`finish`) the recipe as flattened params, the resolved precision,
and at the end the final scores of ``metrics.json`` as ``final/<split>/<metric>`` and ``main_score``.

Where they write: a fit's ``<run>/tensorboard/``, ``<run>/mlruns`` (an MLflow file store; ``output.mlflow_uri``
names another store or a server) and ``<run>/wandb/`` (offline unless ``output.wandb_mode: online``). A fit of a
search (its recipe's ``trial.tracking``) writes into the search's run dir instead: ``tensorboard/<fit>/``, a
child run of the search's MLflow run, a W&B run in the search's group, tagged with its round and θ.

Resume: the ids of a fit's tracker runs are kept in ``trackers/<fit>.json`` of that dir, so a resumed fit (or
a search's fit started again) continues the same runs; what a tracker already holds at a step is not logged
again (:class:`NoRepeats`), so a resumed fit writes no step twice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from agora.config import RunConfig
from agora.config.schema import TrackerLink
from agora.files import atomic_write


@dataclasses.dataclass
class Home:
    """Where a fit's trackers write (its run dir, or its search's) and under which name."""

    dir: Path
    name: str
    """``""`` for a fit of its own; the fit's name (``r0.0-t1``) in a search."""
    link: TrackerLink | None = None

    @property
    def ledger_path(self) -> Path:
        return self.dir / "trackers" / f"{self.name or 'run'}.json"

    def ledger(self) -> dict[str, Any]:
        """The tracker ids (and W&B's steps) this fit recorded, or {}."""
        path = self.ledger_path
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def record(self, **values) -> None:
        self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.ledger_path, json.dumps({**self.ledger(), **values}, indent=1))


def home_of(cfg: RunConfig, run_dir: Path) -> Home:
    link = cfg.trial.tracking if cfg.trial is not None else None
    if link is not None:
        return Home(Path(link.dir), run_dir.name, link)
    return Home(run_dir.resolve(), "")


def params(cfg: RunConfig, precision) -> dict[str, Any]:
    """The recipe as flat ``section.key`` params (lists and None as JSON), with the resolved precision; what
    changes between a fit and its resumption (``output.resume_from``, ``overwrite``) is left as saved."""
    recipe = cfg.to_dict()
    recipe["output"].update(resume_from=None, overwrite=False)
    if recipe.get("trial"):
        recipe["trial"].pop("tracking", None)
    flat = _flatten(recipe)
    flat.update({"precision": precision.precision, "precision.requested": precision.requested})
    return flat


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


class NoRepeats:
    """Drops a value the tracker already holds at this step or a later one: a resumed fit logs again what it
    had logged after its checkpoint; the tracker keeps the values it has (equal ones: a resumed fit runs as the
    uninterrupted one) and gets only the steps it lacks."""

    held: dict[str, int] | None = None

    def log_metrics(self, metrics, step=None) -> None:
        if self.held and step is not None:
            metrics = {k: v for k, v in metrics.items() if step > self.held.get(k, -1)}
            if not metrics:
                return
        super().log_metrics(metrics, step)


class TensorBoard(NoRepeats, TensorBoardLogger):
    def read_held(self) -> dict[str, int]:
        """The last step of every scalar in this fit's event files (what a killed fit had flushed)."""
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

        if not Path(self.log_dir).is_dir():
            return {}
        events = EventAccumulator(self.log_dir, size_guidance={SCALARS: 0})
        events.Reload()
        return {tag: max(e.step for e in events.Scalars(tag)) for tag in events.Tags()["scalars"]}


class MLflow(NoRepeats, MLFlowLogger):
    def read_held(self) -> dict[str, int]:
        """The last step of every metric the run holds; the run is marked running again."""
        client = self.experiment
        client.update_run(self.run_id, status="RUNNING")
        keys = client.get_run(self.run_id).data.metrics
        return {k: max(m.step for m in client.get_metric_history(self.run_id, k)) for k in keys}


class Wandb(NoRepeats, WandbLogger):
    """W&B's offline files cannot be read back here: the steps sent are kept in the fit's ledger instead."""

    home: Home | None = None

    @property
    def experiment(self):
        import wandb

        if self._experiment is None and wandb.run is not None:
            wandb.finish()  # a run an earlier fit of this process left open (a failed fit of a search)
        return WandbLogger.experiment.fget(self)

    def read_held(self) -> dict[str, int]:
        return dict(self.home.ledger().get("wandb_steps", {}))

    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics(metrics, step)
        if step is not None and rank_zero_only.rank == 0:
            held = dict(self.held or {})
            held.update({k: max(step, held.get(k, -1)) for k in metrics})
            self.held = held
            self.home.record(wandb_steps=held)


def mlflow_uri(cfg: RunConfig, home: Home) -> str:
    """``output.mlflow_uri``, or the file store ``<home>/mlruns`` (MLflow 3 keeps its file store behind
    ``MLFLOW_ALLOW_FILE_STORE``, set here for this process and the fits it starts)."""
    if cfg.output.mlflow_uri:
        return cfg.output.mlflow_uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (home.dir / "mlruns").as_uri()


def _mlflow(cfg: RunConfig, home: Home, experiment: str, name: str, tags: dict[str, str]) -> MLflow:
    if home.link is not None and home.link.mlflow_parent:
        tags = {**tags, "mlflow.parentRunId": home.link.mlflow_parent}
    return MLflow(experiment_name=experiment, run_name=name, tracking_uri=mlflow_uri(cfg, home), tags=tags,
                  run_id=home.ledger().get("mlflow"))


def _wandb(cfg: RunConfig, home: Home, experiment: str, name: str, tags: dict[str, str]) -> Wandb:
    run_id = home.ledger().get("wandb") or secrets.token_hex(4)
    group = home.link.group if home.link is not None else None
    return Wandb(name=name, save_dir=str(home.dir), id=run_id, project=experiment, group=group,
                 mode=cfg.output.wandb_mode, tags=[f"{k}: {v}"[:64] for k, v in tags.items()])


def build(cfg: RunConfig, run_dir: Path, task: str) -> list[Logger]:
    """The trackers of ``output.loggers`` besides the CSV log (none by default); nothing is written until
    :func:`start`."""
    home = home_of(cfg, run_dir)
    experiment = cfg.output.experiment or f"agora-{task}"
    name = home.name or run_dir.resolve().name
    tags = {"agora.task": task, "agora.run_dir": str(run_dir.resolve()),
            **(home.link.tags if home.link is not None else {})}
    made = {"tensorboard": lambda: TensorBoard(str(home.dir), name="tensorboard", version=home.name,
                                               default_hp_metric=False),
            "mlflow": lambda: _mlflow(cfg, home, experiment, name, tags),
            "wandb": lambda: _wandb(cfg, home, experiment, name, tags)}
    loggers = [made[kind]() for kind in cfg.output.loggers if kind in made]
    for logger in loggers:
        logger.home = home
    return loggers


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@rank_zero_only
def start(loggers: list, cfg: RunConfig, precision) -> None:
    """Before training (rank 0): the recipe as params, each tracker's run recorded in the ledger, and what a
    resumed run already holds read back (:class:`NoRepeats`). TensorBoard takes the params with the final
    scores (:func:`finish`), so its HParams tab shows them side by side."""
    values = params(cfg, precision)
    for logger in loggers:
        if not isinstance(logger, NoRepeats):
            continue
        logger.params = values
        if not isinstance(logger, TensorBoard):
            logger.log_hyperparams(values)
        logger.held = logger.read_held()
        if isinstance(logger, MLflow):
            logger.home.record(mlflow=logger.run_id)
        elif isinstance(logger, Wandb):
            logger.home.record(wandb=logger.version)


def final_values(metrics: dict) -> dict[str, float]:
    """What a tracker gets when the run ends: ``metrics.json``'s final scores and main score."""
    out = {f"final/{k}": float(v) for k, v in (metrics.get("final") or {}).items() if _number(v)}
    if _number(metrics.get("main_score")):
        out["main_score"] = float(metrics["main_score"])
    return out


@rank_zero_only
def finish(loggers: list, metrics: dict, step: int) -> None:
    """After ``metrics.json`` is written (rank 0): its final scores to every tracker at ``step``, then each
    tracker closed (a W&B run finished, an MLflow run marked finished)."""
    values = final_values(metrics)
    for logger in loggers:
        if not isinstance(logger, NoRepeats):
            continue
        if isinstance(logger, TensorBoard):
            logger.log_hyperparams(getattr(logger, "params", {}), metrics=values, step=step)
        else:
            logger.log_metrics(values, step)
        logger.finalize("success")
        if isinstance(logger, Wandb):
            logger.experiment.finish()


def open_search(cfg: RunConfig, run_dir: Path, task: str, precision) -> TrackerLink | None:
    """Before a search's first fit: what each fit's recipe carries to log into the search's trackers (None
    without trackers), and with MLflow the search's own run (its recipe as params), parent of the fits' runs."""
    if not set(cfg.output.loggers) - {"csv"}:
        return None
    home = Home(run_dir.resolve(), "search")
    parent = None
    if "mlflow" in cfg.output.loggers:
        tags = {"agora.task": task, "agora.run_dir": str(home.dir), "agora.search": "true"}
        logger = _mlflow(cfg, home, cfg.output.experiment or f"agora-{task}", home.dir.name, tags)
        logger.log_hyperparams(params(cfg, precision))
        logger.experiment.update_run(logger.run_id, status="RUNNING")
        parent = logger.run_id
        home.record(mlflow=parent)
    return TrackerLink(dir=str(home.dir), group=home.dir.name, mlflow_parent=parent)


def trial_link(link: TrackerLink | None, name: str, round_: int, replay: int, theta: str) -> TrackerLink | None:
    """A search fit's link: the search's, tagged with the fit's name, round, replay and θ."""
    if link is None:
        return None
    tags = {"agora.fit": name, "agora.round": str(round_), "agora.replay": str(replay), "agora.theta": theta}
    return link.model_copy(update={"tags": tags})


def close_search(cfg: RunConfig, run_dir: Path, metrics: dict) -> None:
    """After the search's ``metrics.json``: its final scores (the returned student's) on the search's MLflow run."""
    home = Home(run_dir.resolve(), "search")
    run_id = home.ledger().get("mlflow")
    if "mlflow" not in cfg.output.loggers or run_id is None:
        return
    logger = MLflow(tracking_uri=mlflow_uri(cfg, home), run_id=run_id)
    values = final_values(metrics)
    search = metrics.get("search") or {}
    values.update({f"search/{k}": float(search[k]) for k in ("fits", "rounds", "generated_rows")
                   if _number(search.get(k))})
    logger.log_metrics(values, step=0)
    logger.finalize("success")
