"""One fit: a typed recipe in, a finished run directory out; and the local runner of many fits.

Plain fine-tuning unless a method extends the fit (:class:`Extension`: Agora adds its callback,
its loss and its report, see :func:`agora.method.extension.agora_extension`): fit with
evaluation each epoch, keep the best checkpoint by the task's official metric on the selection
split (:class:`agora.data.evalset.EvalSet`), re-score it, predict the test splits, export it
with ``save_pretrained``, write the run dir (:mod:`agora.fit.rundir`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from agora.config import RunConfig
from agora.data.cards import TaskCard, load_task
from agora.errors import AgoraError, RecipeError, TaskError
from agora.fit.finite import diverged
from agora.files import atomic_dir, disk_full
from agora.fit.module import Loss
from agora.fit.precision import Resolved, resolve_trainer
from agora.fit.progress import progress_callbacks
from agora.fit.resume import Resumable, ResumePoint, RunLogger, atomic_checkpoint_io, resume_path

# Lightning warnings that do not apply here: our samplers return every index, and predict_step
# collects outputs itself (gathered across ranks) instead of returning them.
warnings.filterwarnings("ignore", message=".*custom batch sampler.*for prediction.*")
warnings.filterwarnings("ignore", message=".*predict returned None.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


@dataclasses.dataclass
class RunResult:
    """What a finished run gives back to a script."""

    run_dir: Path
    best_model_dir: Path | None
    scores: dict[str, float]
    """Final scores of the best checkpoint, e.g. ``{"validation/accuracy": 0.61}`` (fractions)."""
    main_score: float
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    predictions: dict[str, Path] = dataclasses.field(default_factory=dict)
    best_checkpoint: Path | None = None


@dataclasses.dataclass
class Extension:
    """What a training method adds to a fit."""

    name: str
    """Its key in ``metrics.json``."""
    callbacks: list = dataclasses.field(default_factory=list)
    loss: Loss | None = None
    """The training loss (default: hard labels, :class:`agora.fit.module.HardLabelLoss`)."""
    trainer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    report: Callable[[], dict] = dict
    """What ``metrics.json`` keeps under ``name``, read when the fit ends (rank 0)."""


Extend = Callable[[RunConfig, TaskCard, Path], Extension]
"""``extend(cfg, card, run_dir)``: the method's additions to one fit, built before any training."""


def with_resolved_precision(cfg: RunConfig, announce=print) -> tuple[RunConfig, Resolved]:
    """``cfg`` with ``trainer.precision`` resolved for this machine (``auto`` -> bf16-mixed / 16-mixed /
    32-true, :mod:`agora.fit.precision`), and the resolution; prints one line saying what and why.
    A precision the recipe states is kept (an explicit bf16 on a CPU without native bf16 warns)."""
    trainer, resolved = resolve_trainer(cfg.trainer)
    if announce is not None and resolved.requested != resolved.precision:
        announce(resolved.line())
    return cfg.model_copy(update={"trainer": trainer}), resolved


def _trainer_kwargs(cfg: RunConfig, run_dir: Path, callbacks: list, logger, extra: dict) -> dict[str, Any]:
    kwargs = {**dict(cfg.trainer), **extra}
    kwargs.setdefault("use_distributed_sampler", False)  # our samplers shard by rank themselves
    kwargs.setdefault("default_root_dir", str(run_dir))
    kwargs.setdefault("log_every_n_steps", 10)
    kwargs["callbacks"] = callbacks + list(kwargs.get("callbacks") or [])
    kwargs["callbacks"] += progress_callbacks(kwargs, cfg.output.progress_every_s, run_dir.name)  # bar or log lines
    kwargs.setdefault("logger", logger)
    kwargs.setdefault("plugins", [atomic_checkpoint_io()])  # a full disk never leaves half a checkpoint
    return kwargs


def _refused(err: Exception, trainer_section: dict[str, Any], when: str) -> RecipeError:
    message = str(err).strip().splitlines()[0].strip() if str(err).strip() else ""
    return RecipeError(f"trainer: lightning.Trainer {when}: {type(err).__name__}: {message} "
                       f"(the recipe's trainer: section is {trainer_section}); fix it there")


def build_trainer(kwargs: dict[str, Any], trainer_section: dict[str, Any]):
    """``lightning.Trainer(**kwargs)``; settings it refuses (``trainer.accelerator: gpu`` on a machine
    without one, a strategy that does not exist, ...) are a RecipeError naming them, raised before any work."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as err:
        raise _refused(err, trainer_section, "refuses these settings") from None


def _raised_in_lightning(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "lightning" in Path(tb.tb_frame.f_code.co_filename).parts


def run_fit(cfg: RunConfig, source: str | None = None, extend: Extend | None = None) -> RunResult:
    """One fit of ``cfg`` (extended by ``extend``, e.g. Agora). Everything that can fail on bad input
    (task, run dir, trainer settings, the method's settings, tokenizer, data, model, the checkpoint to
    resume from) fails before any training, and a fit that fails before training leaves no run dir
    behind."""
    from agora.fit import rundir

    card: TaskCard = load_task(cfg.task)
    if card.train_split is None:
        raise_test_only(card)
    cfg, precision = with_resolved_precision(cfg)
    run_dir = rundir.resolve_run_dir(cfg.output.dir, card.name)
    with rundir.shared_with_ranks(run_dir), rundir.locked(run_dir):  # one writer per run dir, for the whole fit
        claimed = rundir.claim(run_dir, cfg.output.overwrite, cfg.output.resume_from, "from checkpoints/last.ckpt")
        resume = ResumePoint.read(resume_path(cfg.output.resume_from, run_dir)) if cfg.output.resume_from else None
        return _fit(cfg, card, precision, claimed, resume, source, extend)


def _fit(cfg: RunConfig, card: TaskCard, precision: Resolved, claimed, resume, source, extend) -> RunResult:
    from agora.fit import publish, rundir, trackers

    run_dir = claimed.path
    trainer = None
    try:
        extension = extend(cfg, card, run_dir) if extend is not None else Extension("method")
        checkpoint, resumable, callbacks = _callbacks(cfg, run_dir, extension)
        logger = [RunLogger(run_dir, keep_rows=resume.log_rows if resume is not None else None),
                  *trackers.build(cfg, run_dir, card.name)]  # output.loggers beyond the CSV log
        trainer = build_trainer(_trainer_kwargs(cfg, run_dir, callbacks, logger, extension.trainer_kwargs), cfg.trainer)
        tokenizer, pair_format, data, module = _load(cfg, card, extension)
        if resume is not None:
            resume.check_fits(module, cfg.model.name)
            if trainer.is_global_zero:
                print(resume.line())
        if trainer.is_global_zero:
            claimed.clear_earlier()
            rundir.write_config(run_dir, cfg.to_dict(), _config_header(run_dir, source, precision))
            trackers.start(logger, cfg, precision)
        _train(trainer, module, data, resume, resumable, cfg.trainer)
    except BaseException:
        if trainer is None or trainer.global_step == 0:
            claimed.release()  # nothing was trained: no stray run dir
        raise

    best_ckpt, scores, main_score = _score_best(trainer, module, data, checkpoint, cfg.output.predict)
    predictions: dict[str, Path] = {}
    best_dir = run_dir / "best" if cfg.output.export else None
    if trainer.is_global_zero:
        predictions = _write_predictions(run_dir, card, module, data)
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
            **({extension.name: extension.report()} if extend is not None else {}),
        })
        print("\n" + rundir.summary_table(card.name, scores, run_dir, best_dir))
        publish.after_run(run_dir, cfg, card, logger, trainer.global_step)  # model card, trackers, push_to_hub
    return RunResult(run_dir=run_dir, best_model_dir=best_dir, scores=scores, main_score=main_score,
                     history=module.history, predictions=predictions, best_checkpoint=best_ckpt)


def _callbacks(cfg: RunConfig, run_dir: Path, extension: Extension) -> tuple[Any, Resumable, list]:
    """The best checkpoint by the selection score, the resume state, ``checkpoints/last.ckpt`` where the
    recipe keeps checkpoints, then the method's callbacks."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-epoch{epoch}",
                                 monitor="val_score", mode="max", save_top_k=1, auto_insert_metric_name=False)
    resumable = Resumable(cfg.seed)
    callbacks: list = [checkpoint, resumable]
    if cfg.output.save_checkpoints:  # checkpoints/last.ckpt after every epoch: what output.resume_from: last reads
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False))
    return checkpoint, resumable, callbacks + extension.callbacks


def _load(cfg: RunConfig, card: TaskCard, extension: Extension):
    """Seeded, then the tokenizer, the data and the model in its LightningModule:
    ``(tokenizer, pair_format, datamodule, module)``."""
    import lightning as L

    from agora.data.datamodule import TaskDataModule
    from agora.fit.model import build_model, check_max_length, load_model_config, load_tokenizer
    from agora.fit.module import TaskModule

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tokenizer, pair_format = load_tokenizer(cfg.model)
    check_max_length(cfg.data.max_length, load_model_config(cfg.model), "data.max_length", cfg.model.name)
    data = TaskDataModule(cfg, card, tokenizer).load(predict=cfg.output.predict)
    model = build_model(cfg.model, card, cfg.seed)
    module = TaskModule(model, card, cfg, data.eval_names, data.predict_names, loss=extension.loss,
                         select_name=data.evalset.select, epoch_eval_names=data.epoch_eval_names,
                         tiebreak_name=data.evalset.tiebreak)
    return tokenizer, pair_format, data, module


def _config_header(run_dir: Path, source: str | None, precision: Resolved) -> str:
    return (f"# resolved recipe{' from ' + source if source else ''}; rerun into a new dir with: agora-finetune "
            f"{run_dir}/config.yaml output.dir=<dir> (output.resume_from=last continues this one)"
            f"\n# {precision.line()}")


def _train(trainer, module, data, resume: ResumePoint | None, resumable: Resumable, trainer_section: dict) -> None:
    """``trainer.fit``; Lightning failing on its settings before a batch trained (``val_check_interval`` beyond
    the epoch's batches, ...) is a RecipeError naming the recipe's trainer section."""
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume.path if resume is not None else None)
    except Exception as err:
        if resumable.batches_run == 0 and not isinstance(err, AgoraError) and _raised_in_lightning(err):
            raise _refused(err, trainer_section, "stopped before training") from err
        raise


def _score_best(trainer, module, data, checkpoint, predict: bool) -> tuple[Path | None, dict[str, float], float]:
    """Reload the best checkpoint, re-score it on every evaluated split and predict the test splits:
    ``(best checkpoint, scores, main score)``."""
    import torch

    best_ckpt = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    if best_ckpt is not None:
        state = torch.load(best_ckpt, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
    trainer.validate(module, datamodule=data, verbose=False)
    scores = {k.removeprefix("val/"): v for k, v in module.last_scores.items() if k != "val_score"}
    main_score = module.last_scores.get("val_score", float("nan"))
    if predict and data.predict_names:
        trainer.predict(module, datamodule=data, return_predictions=False)
    return best_ckpt, scores, main_score


def _write_predictions(run_dir: Path, card: TaskCard, module, data) -> dict[str, Path]:
    """``predictions/<split>.jsonl`` for every evaluated split (with gold) and test split, and ``mistakes.json``."""
    from agora.fit import rundir

    predictions: dict[str, Path] = {}
    for name, out in module.last_eval.items():
        path = run_dir / "predictions" / f"{name}.jsonl"
        rundir.write_predictions(path, rundir.prediction_rows(card, out, with_gold=True))
        predictions[name] = path
    rundir.write_mistakes(run_dir, card, module.last_eval)
    for name, out in module.predictions.items():
        path = run_dir / "predictions" / f"{name.replace('/', '-')}.jsonl"
        rundir.write_predictions(path, rundir.prediction_rows(data.card_of(name), out, with_gold=False))
        predictions[name] = path
    return predictions


def export(model, tokenizer, card: TaskCard, pair_format: str, cfg: RunConfig, out_dir: Path) -> None:
    """``save_pretrained`` the student and its tokenizer; label names live in the config."""
    model.config.agora = {"task": card.name, "pair_format": pair_format, "max_length": cfg.data.max_length}

    def fill(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    atomic_dir(out_dir, fill)  # whole or not at all: a full disk leaves no half export under best/


def raise_test_only(card: TaskCard):
    raise TaskError(
        f"task {card.name} is test-only (no training split); it is predicted by the "
        f"{card.predicted_by} model: run recipes/{card.predicted_by}.yaml"
    )


def uses_ddp(trainer: dict) -> bool:
    strategy, devices = str(trainer.get("strategy", "auto")), trainer.get("devices", "auto")
    return strategy.startswith("ddp") and devices not in (1, "1", [0]) or int(trainer.get("num_nodes", 1)) > 1


class Job(Protocol):
    """A fit for :class:`LocalRunner` (the search's :class:`agora.search.trial.Trial`)."""

    name: str
    cfg: RunConfig
    run_dir: Path
    seconds: float | None
    """Its wall time, set by the runner when the fit finishes."""


def fit_failure(err: BaseException, run_dir: Path, log_dir: Path | None = None) -> str:
    """Why a fit failed, in one line that names its ``fit.log``; the traceback (of the exception being
    handled) is appended to ``<log_dir or run_dir>/fit.log``."""
    import traceback

    text = str(err).strip()
    line = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:400]
    log_dir = Path(log_dir or run_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "fit.log", "a", encoding="utf-8") as log:
        log.write("\n" + traceback.format_exc())
    return f"{line} (traceback in {Path(run_dir) / 'fit.log'})"


class LocalRunner:
    """Fits one after the other on this machine (the search's default runner).

    A job (:class:`Job`) has a ``name``, a typed recipe ``cfg`` and a ``run_dir``; its recipe is saved
    as ``<run_dir>/recipe.yaml`` (it reruns the fit alone) and its printed output goes to
    ``<run_dir>/fit.log``. A fit runs in this process, or, when its ``trainer:`` asks for several
    devices with a DDP strategy, as ``python -m agora.cli recipe.yaml`` in a child process so that
    Lightning's launcher starts the ranks of that one fit. A job's dir left by a killed fit is
    started again from scratch; checkpoints are deleted after the fit (the export in ``best/`` stays).
    """

    def __init__(self, extend: Extend | None = None):
        self.extend = extend

    def run(self, jobs: Iterable[Job], done: Callable[[Job, str | None], None]) -> None:
        """Run every job in order; ``done(job, failure)`` after each, its wall time in ``job.seconds``. A fit whose
        loss went NaN is ``done(job, "diverged: ...")``; a fit that raises otherwise is recorded as failed
        (``failure``: why, its traceback appended to its ``fit.log``) and the loop goes on; a full disk or an
        interrupt (Ctrl-C, a kill) stops it."""
        import time

        for job in jobs:
            start = time.perf_counter()
            failure = None
            try:
                failure = diverged(self.run_one, job)
            except Exception as err:  # the fit's own failure: recorded, the search goes on
                if disk_full(err):  # not the θ's fault: every next fit would fail too; the state is saved
                    raise
                failure = fit_failure(err, job.run_dir)
            job.seconds = time.perf_counter() - start
            done(job, failure)

    def close(self) -> None:
        """Nothing to release: every fit ran in this process or in a child process that has exited."""

    def run_one(self, job: Job) -> None:
        import yaml

        if job.run_dir.exists():  # a fit killed midway: start it again
            shutil.rmtree(job.run_dir)
        job.run_dir.mkdir(parents=True)
        recipe_path = job.run_dir / "recipe.yaml"
        recipe = {k: v for k, v in job.cfg.to_dict().items() if k != "search"}  # a fit, not a search
        recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        with open(job.run_dir / "fit.log", "w", encoding="utf-8") as log:
            if uses_ddp(job.cfg.trainer):
                proc = subprocess.run([sys.executable, "-m", "agora.cli", str(recipe_path)], stdout=log,
                                      stderr=subprocess.STDOUT)
                if proc.returncode != 0:
                    raise RuntimeError(f"fit {job.name} failed (exit {proc.returncode}); see {job.run_dir}/fit.log")
            else:
                with contextlib.redirect_stdout(log):
                    run_fit(job.cfg, source=job.name, extend=self.extend)
        shutil.rmtree(job.run_dir / "checkpoints", ignore_errors=True)
