"""``AgoraTrainer``: one recipe in, a finished run directory out.

With ``agora.enabled: false`` a fit is plain fine-tuning, the baseline of every comparison:
fit with dev evaluation each epoch, keep the best checkpoint by the task's official metric,
re-score it, predict the test splits, export it with ``save_pretrained``.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agora.config import RunConfig, load_recipe, validate_recipe
from agora.tasks import TaskCard, load_task

log = logging.getLogger(__name__)

# Lightning warnings that do not apply here: our samplers return every index, and predict_step
# collects outputs itself (gathered across ranks) instead of returning them.
warnings.filterwarnings("ignore", message=".*custom batch sampler.*for prediction.*")
warnings.filterwarnings("ignore", message=".*predict returned None.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


@dataclass
class RunResult:
    """What a finished run gives back to a script."""

    run_dir: Path
    best_model_dir: Path | None
    scores: dict[str, float]
    """Final scores of the best checkpoint, e.g. ``{"validation/accuracy": 0.61}`` (fractions)."""
    main_score: float
    history: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[str, Path] = field(default_factory=dict)
    best_checkpoint: Path | None = None


class AgoraTrainer:
    """Runs a recipe. ``AgoraTrainer.from_recipe("rte", trainer__max_epochs=1).fit()``."""

    def __init__(self, cfg: RunConfig, source: str | None = None):
        self.cfg = cfg
        self.source = source

    @classmethod
    def from_recipe(cls, path_or_name, **overrides) -> "AgoraTrainer":
        """Load a recipe file or shipped name; overrides use dotted or ``__`` keys, or sections."""
        return cls(load_recipe(path_or_name, overrides), source=str(path_or_name))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AgoraTrainer":
        return cls(validate_recipe(data, source="<dict>"))

    def fit(self) -> RunResult:
        """One fit, or with a ``search:`` section Agora's rounds over Θ (:func:`agora.search.run_search`,
        which returns a :class:`agora.search.SearchResult` for the best student of all rounds)."""
        if self.cfg.search is not None:
            from agora.search import run_search

            return run_search(self.cfg, source=self.source)
        return run_fit(self.cfg, source=self.source)


def with_resolved_precision(cfg: RunConfig, announce=print):
    """``cfg`` with ``trainer.precision`` resolved for this machine (``auto`` -> bf16-mixed / 16-mixed /
    32-true, :mod:`agora.precision`), and the resolution; prints one line saying what and why.
    A precision the recipe states is kept (an explicit bf16 on a CPU without native bf16 warns)."""
    from agora.precision import resolve_trainer

    trainer, resolved = resolve_trainer(cfg.trainer)
    if announce is not None and resolved.requested != resolved.precision:
        announce(resolved.line())
    return cfg.model_copy(update={"trainer": trainer}), resolved


def _trainer_kwargs(cfg: RunConfig, run_dir: Path, callbacks: list, logger) -> dict[str, Any]:
    kwargs = dict(cfg.trainer)
    kwargs.setdefault("use_distributed_sampler", False)  # our samplers shard by rank themselves
    kwargs.setdefault("default_root_dir", str(run_dir))
    kwargs.setdefault("log_every_n_steps", 10)
    kwargs["callbacks"] = callbacks + list(kwargs.get("callbacks") or [])
    kwargs.setdefault("logger", logger)
    return kwargs


def run_fit(cfg: RunConfig, source: str | None = None) -> RunResult:
    """One fit. With ``cfg.trial`` (a fit of Agora's rounds): E is carved with its seed (Agora on or
    off), D's additions are appended, and the best epoch is the one with the best E_sel score (dev
    with ``agora.eval_on: dev``)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from agora import rundir
    from agora.datamodule import TaskDataModule
    from agora.modeling import build_model, load_tokenizer
    from agora.module import AgoraModule

    card: TaskCard = load_task(cfg.task)
    if card.train_split is None:
        raise_test_only(card)
    cfg, precision = with_resolved_precision(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # Everything that can fail on bad input fails here, before any training.
    tokenizer, pair_format = load_tokenizer(cfg.model)
    data = TaskDataModule(cfg, card, tokenizer).load(predict=cfg.output.predict)
    model = build_model(cfg.model, card, cfg.seed)
    module = AgoraModule(model, card, cfg, data.eval_names, data.predict_names)
    if cfg.trial is not None and cfg.agora.eval_on != "dev":
        module.select_name = "e_sel"

    run_dir = rundir.resolve_run_dir(cfg.output.dir, card.name)
    header = (f"# resolved recipe{' from ' + source if source else ''}; rerun with: agora-finetune {run_dir}/config.yaml"
              f"\n# {precision.line()}")
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-epoch{epoch}",
                                 monitor="val_score", mode="max", save_top_k=1, auto_insert_metric_name=False)
    callbacks: list = [checkpoint]
    if cfg.output.save_checkpoints:  # checkpoints/last.ckpt after every epoch: what output.resume_from: last reads
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False))
    agora_callback = None
    if cfg.agora.enabled:
        from agora.callback import AgoraCallback

        agora_callback = AgoraCallback(cfg, card, output_dir=run_dir)  # checks teacher path and labels now
        callbacks.append(agora_callback)
    logger = CSVLogger(str(run_dir), name="logs", version="")
    trainer = L.Trainer(**_trainer_kwargs(cfg, run_dir, callbacks, logger))
    if trainer.is_global_zero:
        rundir.write_config(run_dir, cfg.to_dict(), header)

    trainer.fit(module, datamodule=data, ckpt_path=resume_path(cfg.output.resume_from, run_dir))

    best_ckpt = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    if best_ckpt is not None:
        state = torch.load(best_ckpt, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
    trainer.validate(module, datamodule=data, verbose=False)
    scores = {k.removeprefix("val/"): v for k, v in module.last_scores.items() if k != "val_score"}
    main_score = module.last_scores.get("val_score", float("nan"))
    if cfg.output.predict and data.predict_names:
        trainer.predict(module, datamodule=data, return_predictions=False)

    predictions: dict[str, Path] = {}
    best_dir = run_dir / "best" if cfg.output.export else None
    if trainer.is_global_zero:
        for name, out in module.last_eval.items():
            path = run_dir / "predictions" / f"{name}.jsonl"
            rundir.write_predictions(path, rundir.prediction_rows(card, out, with_gold=True))
            predictions[name] = path
        rundir.write_mistakes(run_dir, card, module.last_eval)
        for name, out in module.predictions.items():
            path = run_dir / "predictions" / f"{name.replace('/', '-')}.jsonl"
            rundir.write_predictions(path, rundir.prediction_rows(data.card_of(name), out, with_gold=False))
            predictions[name] = path
        if best_dir is not None:
            export(module.model, tokenizer, card, pair_format, cfg, best_dir)
        rundir.write_metrics(run_dir, {
            "task": card.name,
            "main_metric": f"{module.select_name}/{card.main_metric}",
            "main_score": main_score,
            "final": scores,
            "epochs": module.history,
            "best_checkpoint": str(best_ckpt) if best_ckpt else None,
            "best_model_dir": str(best_dir) if best_dir else None,
            "predictions": {k: str(v) for k, v in predictions.items()},
            "precision": {"value": precision.precision, "requested": precision.requested, "why": precision.reason},
            "agora": agora_callback.report() if agora_callback is not None else {"enabled": False},
        })
        print("\n" + rundir.summary_table(card.name, scores, run_dir, best_dir))
    os.environ.pop("AGORA_RUN_DIR", None)
    return RunResult(run_dir=run_dir, best_model_dir=best_dir, scores=scores, main_score=main_score,
                     history=module.history, predictions=predictions, best_checkpoint=best_ckpt)


def resume_path(resume_from: str | None, run_dir: Path) -> str | None:
    """``output.resume_from``: a checkpoint path, or ``last`` for ``<run>/checkpoints/last.ckpt``."""
    if resume_from is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if resume_from == "last" else Path(resume_from).expanduser()
    if not path.is_file():
        from agora.errors import RecipeError

        raise RecipeError(f"output.resume_from: no checkpoint at {path}")
    return str(path)


def export(model, tokenizer, card: TaskCard, pair_format: str, cfg: RunConfig, out_dir: Path) -> None:
    """``save_pretrained`` the student and its tokenizer; label names live in the config."""
    model.config.agora = {"task": card.name, "pair_format": pair_format, "max_length": cfg.data.max_length}
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def raise_test_only(card: TaskCard):
    from agora.errors import TaskError

    raise TaskError(
        f"task {card.name} is test-only (no training split); it is predicted by the "
        f"{card.predicted_by} model: run recipes/{card.predicted_by}.yaml"
    )
